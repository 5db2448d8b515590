"""Sans-IO pieces of the provisioning port: target checks, MAC extraction, limits."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prov_support import HASH

from limen.provisioning.limits import GuessGuard, RateLimiter
from limen.provisioning.paths import (
    Refusal,
    mac_from_filename,
    mac_from_user_agent,
    parse_target,
)


def test_a_good_target() -> None:
    target = parse_target(f"/{HASH.upper()}/ftp_67xxi/00085D4330B8.cfg".encode())
    assert target.hash == HASH
    assert target.segments == ("ftp_67xxi", "00085D4330B8.cfg")
    assert target.filename == "00085D4330B8.cfg"
    assert target.redacted_path == "/{hash}/ftp_67xxi/00085D4330B8.cfg"
    assert target.raw.endswith(b"/00085D4330B8.cfg")


@pytest.mark.parametrize("query", ["?x=1", "?", "?../../etc/passwd", "?hash=abcdefgh"])
def test_a_query_string_is_refused(query: str) -> None:
    # Issue 10: only the path the PBX needs goes through.
    with pytest.raises(Refusal) as refused:
        parse_target(f"/{HASH}/aastra.cfg{query}".encode())
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "segment",
    [
        "\u2024\u2024",  # ONE DOT LEADER x2
        "\u2025",  # TWO DOT LEADER
        "\uff0e\uff0e",  # FULLWIDTH FULL STOP x2
        "\ufe52\ufe52",  # SMALL FULL STOP x2
        "a\uff0fb",  # FULLWIDTH SOLIDUS
        "a\uff3cb",  # FULLWIDTH REVERSE SOLIDUS
        "\u0430astra.cfg",  # Cyrillic a: not NFKC-changed, but not ASCII either
    ],
)
def test_unicode_look_alikes_are_normalised_before_the_checks(segment: str) -> None:
    raw = f"/{HASH}/{segment}/aastra.cfg"
    encoded = "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode()) for c in raw)
    for target in (raw.encode(), encoded.encode()):
        if segment.startswith("\u0430"):
            # Not a look-alike of '.' or '/': accepted as a file name, which the PBX lacks.
            assert parse_target(target).segments[0] == segment
            continue
        with pytest.raises(Refusal) as refused:
            parse_target(target)
        assert refused.value.status == 400


def test_harmless_encodings_and_dots_are_accepted() -> None:
    target = parse_target(f"/{HASH}/my%20file.v1..cfg/".encode())
    assert target.segments == ("my file.v1..cfg", "")
    assert parse_target(f"/{HASH}".encode()).segments == ()


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"/short/x", 404),
        (b"/%39a48085c1b816fd1b512e8b186686a6/x", 404),
        (b"/", 404),
        (b"/" + b"a" * 65 + b"/x", 404),
        (b"/{h}/a/../b", 400),
        (b"/{h}/%2E%2e/b", 400),
        (b"/{h}/..%00/b", 400),
        (b"/{h}/. ./b", 400),
        (b"/{h}/..%20/b", 400),
        (b"/{h}/..;jsessionid=1/b", 400),
        (b"/{h}/a%2Fb", 400),
        (b"/{h}/a%5Cb", 400),
        (b"/{h}/a\\b", 400),
        (b"/{h}/%25", 400),
        (b"/{h}/%2", 400),
        (b"/{h}/%e2%80%a8", 400),
        (b"/{h}/%c2%85", 400),
        (b"/{h}/%ff", 400),
        (b"/{h}/a#frag", 400),
        (b"//{h}/a", 400),
        (b"http://x/{h}/a", 400),
    ],
)
def test_refused_targets(target: bytes, status: int) -> None:
    with pytest.raises(Refusal) as info:
        parse_target(target.replace(b"{h}", HASH.encode()))
    assert info.value.status == status


@given(st.binary(max_size=80))
def test_parse_never_raises_anything_else(tail: bytes) -> None:
    try:
        parse_target(b"/" + HASH.encode() + b"/" + tail)
    except Refusal as refusal:
        assert refusal.status in (400, 404)


@given(
    st.lists(
        st.sampled_from(["..", ".", "%2e", "%2E", "%25", "%2f", "a", "b.cfg", "/"]), max_size=8
    )
)
def test_accepted_paths_never_climb(parts: list[str]) -> None:
    raw = f"/{HASH}/" + "".join(parts)
    try:
        target = parse_target(raw.encode())
    except Refusal:
        return
    decoded = unquote_to_bytes(raw)
    # What was accepted decodes to the same segments, none of which climbs, and a second
    # decoding changes nothing.
    assert all(s.strip(". ") for s in target.segments[:-1])
    assert all(s not in (".", "..") for s in target.segments)
    assert unquote_to_bytes(decoded) == decoded


def test_mac_extraction() -> None:
    assert mac_from_filename("00085d4330b8.cfg") == "00085D4330B8"
    assert mac_from_filename("00085D4330B8_local.cfg") == "00085D4330B8"
    assert mac_from_filename("aastra.cfg") is None
    assert mac_from_filename("00085D4330B8AA.cfg") is None
    agent = "Aastra6867i MAC:00-08-5D-43-30-B8 V:5.1.0.2124-SIP"
    assert mac_from_user_agent(agent) == "00085D4330B8"
    assert mac_from_user_agent("curl/8.0") is None


def test_rate_limiter_token_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)
    assert limiter.retry_after("a", 0.0) == pytest.approx(1.0)
    assert limiter.allow("a", 1.0) and not limiter.allow("a", 1.0)
    assert [limiter.allow("a", 100.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_sources=10)
    for n in range(100):
        limiter.allow(f"10.0.0.{n}", float(n))
    assert len(limiter) <= 10


def test_guess_guard_window_and_block() -> None:
    guard = GuessGuard(limit=3, window=10.0, block=60.0)
    assert not guard.strike("a", 0.0) and not guard.strike("a", 1.0)
    assert guard.blocked("a", 1.0) is None
    # The first strike left the window: still two within it.
    assert not guard.strike("a", 10.5)
    assert guard.strike("a", 10.8)
    assert guard.blocked("a", 10.8) == pytest.approx(60.0)
    assert guard.blocked("b", 10.8) is None
    assert guard.blocked("a", 70.9) is None


def test_guess_guard_is_bounded() -> None:
    guard = GuessGuard(limit=2, window=1.0, block=5.0, max_sources=10)
    for n in range(100):
        guard.strike(f"10.0.0.{n}", float(n))
    assert len(guard) <= 10
