"""Parsing costs time linear in the input, whatever the input (issue 9, finding 1).

A From header of 40 letters without ``<`` once made a nested regular expression backtrack
exponentially and froze the event loop for hours. These tests throw long runs of one
character class, nested quotes and separators at every header with a typed view, at the
Request-Line and at SDP, up to the message size limit, and assert the CPU time of each
parse under a generous bound. A watchdog (SIGALRM, which the regex engine honours)
turns a runaway parse into a failure instead of a hung test run.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.sdp import parse_sdp
from limen.sdp.errors import SdpParseError
from limen.sdp.offer_answer import is_hold
from limen.sip import Request, SipParseError, parse_message
from limen.sip.message import _TYPED
from limen.sip.validate import check_request

# The product's limit (limen.config SipSettings.max_message_size).
MAX_MESSAGE = 65536
# Per message, CPU time of this thread (preemption on a busy machine does not count).
# Measured worst cases are under 10 ms for SIP and about 20 ms for SDP at the bounds.
BOUND = 0.050
WATCHDOG = 2.0


class Runaway(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: float = WATCHDOG) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Runaway(f"parse still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cpu_time_of(work: Callable[[], object]) -> float:
    with watchdog():
        start = time.thread_time()
        work()
        return time.thread_time() - start


BASE = [
    "OPTIONS sip:limen.example.com SIP/2.0",
    "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-776asdhds;rport",
    "From: <sip:7001@limen.example.com>;tag=1928301774",
    "To: <sip:limen.example.com>",
    "Call-ID: a84b4c76e66710@203.0.113.1",
    "CSeq: 63104 OPTIONS",
    "Max-Forwards: 70",
]
_SLOT = {"via": 1, "from": 2, "to": 3, "call-id": 4, "cseq": 5, "max-forwards": 6}


def message_with(key: str, value: str, request_line: str | None = None) -> bytes:
    lines = list(BASE)
    if request_line is not None:
        lines[0] = request_line
    slot = _SLOT.get(key)
    if slot is not None:
        lines[slot] = f"{key}: {value}"
    else:
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def exercise(data: bytes, key: str | None) -> None:
    """What the receive path does: parse, validate, read the header's typed view."""
    try:
        msg = parse_message(data)
        if isinstance(msg, Request):
            check_request(msg)
        if key is not None and key in _TYPED:
            msg.typed(key)
    except SipParseError:
        pass


def assert_fast(data: bytes, key: str | None) -> None:
    spent = cpu_time_of(lambda: exercise(data, key))
    assert spent < BOUND, f"{key}: {len(data)} bytes took {spent * 1000:.1f} ms CPU"


# --- the packet from the issue ----------------------------------------------------------

FINDING_1 = (
    b"OPTIONS sip:limen.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 203.0.113.1:40000;branch=z9hG4bK-finding1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    b"To: <sip:limen.example.com>\r\n"
    b"Call-ID: finding1@203.0.113.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_finding_1_packet_is_refused_at_once() -> None:
    def parse() -> None:
        with pytest.raises(SipParseError):
            parse_message(FINDING_1)

    spent = cpu_time_of(parse)
    assert spent < 0.005, f"{spent * 1000:.1f} ms"


@pytest.mark.parametrize("header", ["From", "To", "Contact", "Route", "Record-Route"])
@pytest.mark.parametrize("letters", [30, 40, 1000, MAX_MESSAGE - 400])
def test_letter_run_without_angle(header: str, letters: int) -> None:
    assert_fast(message_with(header.lower(), "a" * letters), header.lower())
    assert_fast(message_with(header.lower(), "a " * (letters // 2) + "x"), header.lower())


# --- a deterministic sweep: every typed header x runs of every character class ----------

UNITS = ["a", " ", "\t", ";", '"', "\\", "<", ">", "@", ":", ",", "=", "%", "[", "a ",
         "a;", ";a", ";a=", "a=", "a,", '\\"', '"a', "<a", "a@", "a:", "a.", '"\\']  # fmt: skip
PREFIXES = ["", '"', "<", "<sip:", "sip:a@b", "<sip:a@b>;x=", "a ", "SIP/2.0/UDP a;b=",
            "1 ", 'Digest a="', "Digest a=b, "]  # fmt: skip
SUFFIXES = ["", "\x01"]


@pytest.mark.parametrize("key", sorted(_TYPED))
def test_sweep_every_typed_header(key: str) -> None:
    size = MAX_MESSAGE - 400
    worst = 0.0
    for prefix in PREFIXES:
        for unit in UNITS:
            for suffix in SUFFIXES:
                value = prefix + unit * (size // len(unit)) + suffix
                data = message_with(key, value)
                spent = cpu_time_of(lambda: exercise(data, key))  # noqa: B023
                worst = max(worst, spent)
                assert spent < BOUND, f"{prefix!r}+{unit!r}*n+{suffix!r}: {spent * 1000:.1f} ms"
    assert worst < BOUND


@pytest.mark.parametrize("unit", UNITS)
def test_sweep_request_line(unit: str) -> None:
    run = unit * ((MAX_MESSAGE - 400) // len(unit))
    for line in (run, f"OPTIONS {run} SIP/2.0", f"OPTIONS sip:{run} SIP/2.0", f"{run} SIP/2.0",
                 f"OPTIONS sip:a{run}", f"OPTIONS x{run}"):  # fmt: skip
        assert_fast(message_with("x-probe", "1", request_line=line), None)


def test_many_folded_lines_and_list_elements() -> None:
    folded = "Subject: a\r\n" + " b\r\n" * 5000
    data = message_with("x", "y").replace(b"\r\n\r\n", ("\r\n" + folded + "\r\n").encode())
    assert_fast(data, "subject")
    via = "SIP/2.0/UDP a" + ";a" * 63
    vias = "\r\n".join(["Via: " + ", ".join([via] * 8)] * 16)
    contacts = ", ".join(["<sip:a@b" + ";u" * 63 + ">" + ";a" * 63] * 100)
    data = message_with("contact", contacts).replace(b"\r\n\r\n", f"\r\n{vias}\r\n\r\n".encode())
    assert_fast(data, "contact")


# --- Hypothesis: runs, nesting and separators mixed ------------------------------------

CLASSES = st.sampled_from(
    [
        "a",
        "Z9",
        " ",
        "\t",
        ";",
        '"',
        "\\",
        "<",
        ">",
        "@",
        ":",
        ",",
        "=",
        "%",
        "[]",
        "/",
        "\x01",
        "é",
        "\x7f",
    ]
)
PIECE = st.tuples(st.lists(CLASSES, min_size=1, max_size=3).map("".join), st.integers(1, 20000))
HEADER_KEYS = st.sampled_from(sorted(_TYPED))


@st.composite
def pathological_value(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(PIECE, min_size=1, max_size=4))
    out: list[str] = []
    budget = MAX_MESSAGE - 400
    for unit, count in pieces:
        count = min(count, budget // len(unit))
        out.append(unit * count)
        budget -= len(unit) * count
    return "".join(out)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=HEADER_KEYS, value=pathological_value())
def test_hypothesis_runs_in_typed_headers(key: str, value: str) -> None:
    assert_fast(message_with(key, value), key)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=pathological_value())
def test_hypothesis_runs_in_request_line(value: str) -> None:
    assert_fast(message_with("x-probe", "1", request_line=f"OPTIONS {value} SIP/2.0"), None)
    assert_fast(message_with("x-probe", "1", request_line=value), None)


# --- SDP ---------------------------------------------------------------------------------

SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def exercise_sdp(text: str) -> None:
    """Parse and read what the media layer reads, then filter codecs as an offer does."""
    try:
        sd = parse_sdp(text)
        bytes(sd)
        _ = (sd.origin, sd.connection, sd.direction, sd.bandwidths)
        for media in sd.media:
            _ = (media.media_line, media.formats, media.connection, media.codecs)
            _ = (media.clock_rates, media.fmtps, media.ptime, media.rtcp, media.rtcp_mux)
            _ = (media.crypto, media.ssrcs, media.secure, media.bandwidths)
            _ = (sd.effective_direction(media), is_hold(sd, media))
            media.filter_codecs(["PCMU", "PCMA", "G722"])
    except (SdpParseError, ValueError):
        pass


def assert_sdp_fast(text: str) -> None:
    spent = cpu_time_of(lambda: exercise_sdp(text))
    assert spent < BOUND, f"SDP of {len(text)} bytes took {spent * 1000:.1f} ms CPU"


SDP_CASES = {
    "formats": SDP_HEAD + "m=audio 4000 RTP/AVP " + " ".join(["0"] * 30000) + "\r\n",
    "max formats": SDP_HEAD + "m=audio 4000 RTP/AVP " + " ".join(map(str, range(128))) + "\r\n",
    "media": SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\n" * 2700,
    "rtpmaps": SDP_HEAD + "m=audio 4000 RTP/AVP 96\r\n" + "a=rtpmap:96 X/8000\r\n" * 3000,
    "widest": SDP_HEAD
    + (
        "m=audio 4000 RTP/SAVP "
        + " ".join(map(str, range(128)))
        + "\r\n"
        + "".join(f"a=rtpmap:{96 + i} PCMU/8000\r\n" for i in range(29))
    )
    * 32,
    "crypto": SDP_HEAD
    + "m=audio 4000 RTP/SAVP 0\r\n"
    + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    * 700,
    "long attribute": SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\na=" + "a" * 60000 + "\r\n",
    "long key": SDP_HEAD
    + "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
    + "A" * 60000,
    "spaces": SDP_HEAD + "m=audio 4000 RTP/AVP 0" + " " * 60000 + "\r\n",
    "lines": SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\n" + "a=x\r\n" * 12000,
}


@pytest.mark.parametrize("case", sorted(SDP_CASES))
def test_sdp_pathological(case: str) -> None:
    assert_sdp_fast(SDP_CASES[case])


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(
        ["m=audio 4000 RTP/AVP ", "a=rtpmap:", "a=crypto:1 ", "a=fmtp:0 ", "c=IN IP4 "]
    ),
    value=pathological_value(),
)
def test_hypothesis_sdp_runs(kind: str, value: str) -> None:
    line = kind + value.replace("\r", "").replace("\n", "")
    assert_sdp_fast(SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\n" + line + "\r\n")
