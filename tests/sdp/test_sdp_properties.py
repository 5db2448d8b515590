"""Hypothesis properties of the SDP layer.

1. ``parse_sdp`` raises nothing but SdpParseError, on arbitrary text and bytes and on
   mutations of the real-world fixtures; what parses can be read through every typed
   accessor without an exception.
2. serialise ∘ parse is the identity on generated sessions (built with the public API).
3. ``parse_crypto`` raises nothing but SdpParseError; ``str`` ∘ ``parse`` round-trips.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.sdp import (
    Bandwidth,
    Connection,
    CryptoAttribute,
    CryptoSuite,
    Direction,
    MediaDescription,
    Origin,
    RtcpAttribute,
    SdpParseError,
    SessionDescription,
    SsrcAttribute,
    is_hold,
    parse_crypto,
    parse_sdp,
)

DATA = Path(__file__).parent / "data"
FIXTURES = [path.read_bytes().replace(b"\n", b"\r\n") for path in sorted(DATA.glob("*.sdp"))]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(sd: SessionDescription) -> None:
    """Read everything typed; none of it may raise on a parsed description."""
    assert parse_sdp(bytes(sd)) == sd
    _ = (sd.origin, sd.name, sd.connection, sd.direction, sd.bandwidths, repr(sd))
    for media in sd.media:
        _ = (
            media.media_line,
            media.port,
            media.proto,
            media.formats,
            media.connection,
            media.codecs,
            media.clock_rates,
            media.fmtps,
            media.ptime,
            media.maxptime,
            media.rtcp,
            media.rtcp_mux,
            media.crypto,
            media.ssrcs,
            media.mid,
            media.secure,
            media.bandwidths,
            sd.effective_direction(media),
            is_hold(sd, media),
        )
        for attr in media.crypto:
            _ = (attr.is_usable(), str(attr))


def parse_or_error(data: bytes | str) -> None:
    try:
        sd = parse_sdp(data)
    except SdpParseError:
        return
    exercise(sd)


@FAST
@given(st.text() | st.text(st.characters(codec=None, min_codepoint=0xD800, max_codepoint=0xDFFF)))
def test_arbitrary_text(text: str) -> None:
    parse_or_error(text)


@FAST
@given(st.binary())
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_error(data)


@FAST
@given(st.lists(st.sampled_from(["v=0", "o=- 1 1 IN IP4 a", "m=audio 1 RTP/AVP 0"]) | st.text()))
def test_arbitrary_lines(lines: list[str]) -> None:
    parse_or_error("\r\n".join(lines))


_SNIPPETS = st.sampled_from(
    [
        "",
        " ",
        "=",
        ":",
        "/",
        "|",
        "0",
        "65536",
        "9" * 50,
        "2^",
        "\r",
        "\n",
        "\r\n",
        "a=",
        "m=",
        "c=",
        "o=",
        "IN IP6 ",
        "inline:",
        "\x00",
        "é",
        "\udcff",
    ]
)


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FIXTURES)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "byte"]))
        if action == "delete":
            end = pos + draw(st.integers(1, 20))
            del data[pos:end]
        elif action == "insert":
            data[pos:pos] = draw(_SNIPPETS).encode("utf-8", "surrogatepass")
        elif action == "replace":
            data[pos : pos + 1] = draw(_SNIPPETS).encode("utf-8", "surrogatepass")
        elif action == "truncate":
            del data[pos:]
        else:
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(mutated_fixture())
def test_mutated_fixtures(data: bytes) -> None:
    parse_or_error(data)
    parse_or_error(data.decode("latin-1"))


# -- generated sessions ------------------------------------------------------------------

_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12
)
_free_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"),
    max_size=30,
)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.ip_addresses(v=6).map(str)
_address = _ipv4 | _ipv6
_connection = _address.map(Connection.of)
_port = st.integers(0, 65535)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    pts = draw(st.lists(st.integers(0, 127), min_size=1, max_size=6, unique=True))
    media = MediaDescription.create(
        draw(st.sampled_from(["audio", "video", "image"])),
        draw(_port),
        draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "udptl"])),
        pts,
    )
    if draw(st.booleans()):
        media.connection = draw(_connection)
    if draw(st.booleans()):
        media.set_bandwidth("AS", draw(st.integers(0, 10**6)))
    for pt in pts:
        if pt >= 96 or draw(st.booleans()):
            name = draw(st.sampled_from(["PCMU", "opus", "telephone-event", "CN", "G722"]))
            media.add_attribute("rtpmap", f"{pt} {name}/{draw(st.sampled_from([8000, 48000]))}")
        if draw(st.booleans()):
            media.add_attribute("fmtp", f"{pt} {draw(_token)}")
    if draw(st.booleans()):
        media.direction = draw(st.sampled_from(list(Direction)))
    if draw(st.booleans()):
        media.ptime = draw(st.integers(10, 120))
    if draw(st.booleans()):
        media.rtcp = RtcpAttribute(draw(_port), draw(st.none() | _connection))
    media.rtcp_mux = draw(st.booleans())
    suites = draw(st.lists(st.sampled_from(list(CryptoSuite)), max_size=3))
    media.crypto = [
        CryptoAttribute.create(
            tag,
            suite,
            draw(st.binary(min_size=suite.master_length, max_size=suite.master_length)),
            lifetime=draw(st.none() | st.integers(1, 2**48)),
        )
        for tag, suite in enumerate(suites, start=1)
    ]
    for _ in range(draw(st.integers(0, 2))):
        media.add_attribute(
            "ssrc", str(SsrcAttribute(draw(st.integers(0, 2**32 - 1)), "cname", draw(_token)))
        )
    for _ in range(draw(st.integers(0, 3))):
        media.add_attribute(
            draw(_token.filter(lambda t: ":" not in t)), draw(st.none() | _free_text)
        )
    return media


@st.composite
def sessions(draw: st.DrawFn) -> SessionDescription:
    address = draw(_address)
    origin = Origin(
        draw(_token),
        str(draw(st.integers(0, 2**63))),
        draw(st.integers(0, 2**64)),
        "IN",
        Connection.of(address).addrtype,
        address,
    )
    sd = SessionDescription.create(
        origin, name=draw(_free_text), connection=draw(st.none() | _connection)
    )
    if draw(st.booleans()):
        sd.direction = draw(st.sampled_from(list(Direction)))
    if draw(st.booleans()):
        sd.set_bandwidth("CT", draw(st.integers(0, 10**6)))
    for _ in range(draw(st.integers(0, 2))):
        sd.add_attribute(draw(_token.filter(lambda t: ":" not in t)), draw(st.none() | _free_text))
    sd.media.extend(draw(st.lists(media_descriptions(), max_size=3)))
    return sd


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_serialise_parse_identity(sd: SessionDescription) -> None:
    data = bytes(sd)
    parsed = parse_sdp(data)
    assert parsed == sd
    assert bytes(parsed) == data
    # Typed views agree with what was built.
    assert parsed.origin == sd.origin
    for built, read in zip(sd.media, parsed.media, strict=True):
        assert read.media_line == built.media_line
        assert read.crypto == built.crypto
        assert read.direction == built.direction
        assert read.rtcp == built.rtcp
    exercise(parsed)


@FAST
@given(st.text())
def test_crypto_parse_never_raises_anything_else(text: str) -> None:
    try:
        attr = parse_crypto(text)
    except SdpParseError:
        return
    assert parse_crypto(str(attr)) == attr


@FAST
@given(
    st.integers(0, 999_999_999),
    st.sampled_from(list(CryptoSuite)),
    st.data(),
    st.none() | st.integers(1, 2**64),
)
def test_crypto_round_trip(
    tag: int, suite: CryptoSuite, data: st.DataObject, lifetime: int | None
) -> None:
    key = data.draw(st.binary(min_size=suite.master_length, max_size=suite.master_length))
    attr = CryptoAttribute.create(tag, suite, key, lifetime=lifetime)
    assert parse_crypto(str(attr)) == attr
    assert attr.is_usable()


@FAST
@given(st.text(max_size=40))
def test_bandwidth_parse(text: str) -> None:
    with contextlib.suppress(SdpParseError):
        Bandwidth.parse(text)
