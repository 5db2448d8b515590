"""Hypothesis properties of every parser (STYLE.md: parse or raise our error, never
anything else; what we emit parses back to the same value)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.sip import (
    NameAddr,
    Params,
    Request,
    SipParseError,
    SipUri,
    StreamFramer,
    Via,
    parse_message,
    parse_uri,
)
from limen.sip.headers import parse_name_addr, parse_via
from limen.sip.message import _TYPED
from limen.sip.validate import check_request

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
if not DATA.exists():  # pragma: no cover
    DATA = Path("/work/shared/testdata")
CORPUS = [p.read_bytes() for p in sorted((DATA / "rfc4475").glob("*.dat"))]

# LIMEN_FUZZ_FACTOR=50 for a long hunt; the default keeps the suite quick.
FACTOR = int(os.environ.get("LIMEN_FUZZ_FACTOR", "1"))
FAST = settings(
    max_examples=300 * FACTOR, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def exercise(data: bytes) -> None:
    """Parse; on success touch every typed view and write it back. Only SipParseError."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    for key in _TYPED:
        with contextlib.suppress(SipParseError):
            msg.typed(key)
    if isinstance(msg, Request):
        check_request(msg)
    again = parse_message(bytes(msg))
    assert again.call_id == msg.call_id


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    exercise(data)


@st.composite
def mutated_corpus(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [b";", b",", b'"', b"<", b">", b"\r\n", b" ", b":", b"%", b"\x00", b"[", b"@"]
                )
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=800 * FACTOR, deadline=None)
@given(mutated_corpus())
def test_mutated_corpus(data: bytes) -> None:
    exercise(data)


@FAST
@given(st.text(max_size=200))
def test_uri_and_header_parsers_on_text(text: str) -> None:
    for parser in (parse_uri, parse_name_addr, parse_via):
        with contextlib.suppress(SipParseError):
            parser(text)


token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z][a-z0-9\-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
user = st.from_regex(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,16}|(%[0-9A-F]{2}){1,3}", fullmatch=True)
uri_param_text = st.from_regex(r"[A-Za-z0-9\-_.!~*'()%]{1,10}", fullmatch=True)
uri_params = st.lists(st.tuples(uri_param_text, st.none() | uri_param_text), max_size=4).map(
    lambda items: Params(tuple(items))
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    return SipUri(
        host=draw(host),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=draw(st.none() | user),
        port=draw(st.none() | st.integers(1, 65535)),
        params=draw(uri_params),
    )


gen_params = st.lists(
    st.tuples(token, st.none() | token | token.map(lambda t: f'"{t} x"')), max_size=4
).map(lambda items: Params(tuple(items)))


@FAST
@given(sip_uris())
def test_uri_round_trip(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


@FAST
@given(sip_uris(), st.none() | token.map(lambda t: f'"{t} \\" q"'), gen_params)
def test_name_addr_round_trip(uri: SipUri, display: str | None, params: Params) -> None:
    value = NameAddr(uri, display, params)
    assert parse_name_addr(str(value)) == value


@FAST
@given(
    st.sampled_from(["UDP", "TCP", "TLS", "WSS", "SCTP"]),
    host,
    st.none() | st.integers(1, 65535),
    gen_params,
)
def test_via_round_trip(transport: str, h: str, port: int | None, params: Params) -> None:
    via = Via(transport, h, port, params)
    assert parse_via(str(via)) == via


@FAST
@given(
    sip_uris(),
    sip_uris(),
    token,
    st.integers(0, 2**32 - 1),
    st.binary(max_size=64),
    st.lists(
        st.tuples(st.sampled_from(["X-A", "Subject", "User-Agent", "X-b"]), token), max_size=4
    ),
)
def test_request_round_trip(
    ruri: SipUri, other: SipUri, tag: str, seq: int, body: bytes, extra: list[tuple[str, str]]
) -> None:
    req = Request(
        "INVITE",
        ruri,
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{tag}"),
            ("From", NameAddr(other).with_tag(tag)),
            ("To", NameAddr(ruri)),
            ("Call-ID", f"{tag}@example.com"),
            ("CSeq", f"{seq} INVITE"),
            ("Max-Forwards", "70"),
            *extra,
        ],
        body,
    )
    again = parse_message(bytes(req))
    assert isinstance(again, Request)
    assert again.uri == ruri and again.body == body
    assert again.from_.uri == other and again.from_tag == tag
    assert again.to.uri == ruri and again.cseq.seq == seq
    assert again.headers == req.headers
    assert bytes(again) == bytes(req)


@settings(max_examples=200 * FACTOR, deadline=None)
@given(st.lists(st.sampled_from(CORPUS[:12]), min_size=1, max_size=4), st.data())
def test_framer_any_split(messages: list[bytes], data: st.DataObject) -> None:
    """Framing a stream cut anywhere gives back the messages (Content-Length ones)."""
    framed = [m for m in messages if b"Content-Length" in m or b"\nl:" in m or b"\nL:" in m]
    stream = b"".join(framed)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = StreamFramer()
    out: list[object] = []
    prev = 0
    try:
        for cut in [*cuts, len(stream)]:
            framer.feed(stream[prev:cut])
            prev = cut
            while (event := framer.next_event()) is not None:
                out.append(event)
    except SipParseError:
        return  # a corpus file with broken framing (ncl, mcl01 ...) ends the stream
    whole = StreamFramer()
    whole.feed(stream)
    expected: list[object] = []
    while (event := whole.next_event()) is not None:
        expected.append(event)
    assert out == expected


@FAST
@given(st.binary(max_size=400), st.integers(1, 50))
def test_framer_arbitrary_bytes(data: bytes, step: int) -> None:
    framer = StreamFramer(max_message_size=300)
    try:
        for i in range(0, len(data), step):
            framer.feed(data[i : i + step])
            while framer.next_event() is not None:
                pass
    except SipParseError:
        pass
