"""limen.sip.rescue: error responses built from requests that failed to parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.sip import Response, SipParseError, parse_message
from limen.sip.rescue import error_response, looks_like_request

RFC4475 = Path("/work/shared/testdata/rfc4475")


def lines(data: bytes | None) -> list[str]:
    assert data is not None
    return data.decode().split("\r\n")


def test_badinv01_copies_the_raw_lines() -> None:
    data = (RFC4475 / "badinv01.dat").read_bytes()
    out = error_response(data, 400, "Bad Request", to_tag="abc")
    assert lines(out) == [
        "SIP/2.0 400 Bad Request",
        "Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
        "From: sip:caller@example.net;tag=134161461246",
        "To: sip:j.user@example.com;tag=abc",
        "Call-ID: badinv01.0ha0isndaksdjasdf3234nas",
        "CSeq: 8 INVITE",
        "Content-Length: 0",
        "",
        "",
    ]


def test_badvers_gets_505() -> None:
    data = (RFC4475 / "badvers.dat").read_bytes()
    out = error_response(data, 505, "Version Not Supported")
    assert lines(out)[0] == "SIP/2.0 505 Version Not Supported"


def test_compact_forms_folding_several_vias_and_extra_headers() -> None:
    data = (
        b"\r\nINVITE  sip:a@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/TCP 192.0.2.2\r\n ;branch=z9hG4bK2\r\n"
        b"f: <sip:b@example.com>;tag=9\r\n"
        b"t: <sip:a@example.com>;TAG=already\r\n"
        b"i: abc\r\n"
        b"cseq: 1 INVITE\r\n"
        b"X-Other: ignored\r\n"
        b"\r\n"
    )
    out = error_response(data, 400, "Bad Request", to_tag="new", headers=[("Server", "Limen")])
    assert lines(out) == [
        "SIP/2.0 400 Bad Request",
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
        "Via: SIP/2.0/TCP 192.0.2.2",
        " ;branch=z9hG4bK2",
        "f: <sip:b@example.com>;tag=9",
        "t: <sip:a@example.com>;TAG=already",
        "i: abc",
        "cseq: 1 INVITE",
        "Server: Limen",
        "Content-Length: 0",
        "",
        "",
    ]
    response = parse_message(out or b"")
    assert isinstance(response, Response) and response.status == 400
    assert [v.branch for v in response.via] == ["z9hG4bK1", "z9hG4bK2"]


def test_bare_lf_and_first_single_header_wins() -> None:
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK3\n"
        b"CSeq: 1 OPTIONS\nCSeq: 2 OPTIONS\nCall-ID: x\n\n"
    )
    out = lines(error_response(data, 400, "Bad Request"))
    assert out[1:4] == ["Via: SIP/2.0/UDP h;branch=z9hG4bK3", "Call-ID: x", "CSeq: 1 OPTIONS"]


def test_insuf_without_from_to_call_id_still_answered() -> None:
    # RFC 4475 §3.3.1 wants 400; the sender matches it by Via branch and CSeq.
    data = (RFC4475 / "insuf.dat").read_bytes()
    out = lines(error_response(data, 400, "Bad Request"))
    assert out[:3] == [
        "SIP/2.0 400 Bad Request",
        "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf",
        "CSeq: 193942 INVITE",
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n\r\n",
        b"sip/2.0 4294967301 better not break the receiver\r\nVia: x\r\nCSeq: 1 A\r\n\r\n",
        b"ACK sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"CSeq: 1 ACK\r\n\r\n",
        b"OPTIONS sip:a@example.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",  # no Via
        b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",  # no CSeq
        b"\x00\x01\x00\x00\x21\x12\xa4\x42",  # STUN binding request
        b"",
        b"\r\n\r\n",
        b"hello world\r\n\r\n",
        b"OPTIONS sip:a@example.com\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\n\r\n",
    ],
    ids=[
        "response",
        "bigcode",
        "ack",
        "no-via",
        "no-cseq",
        "stun",
        "empty",
        "crlf",
        "text",
        "nover",
    ],
)
def test_no_answer(data: bytes) -> None:
    assert error_response(data, 400, "Bad Request") is None


def test_looks_like_request() -> None:
    assert looks_like_request(b"\r\nINVITE sip:a SIP/2.0\r\n")
    assert looks_like_request(b"INVITE <sip:a> SIP/2.0  \r\n")
    assert not looks_like_request(b"SIP/2.0 200 OK\r\n")
    assert not looks_like_request(b"\x16\x03\x01\x02\x00")  # a TLS ClientHello


def test_only_final_error_statuses() -> None:
    with pytest.raises(ValueError):
        error_response(b"", 200, "OK")
    with pytest.raises(ValueError):
        error_response(b"", 400, "Bad\r\nX: y")


def test_every_invalid_rfc4475_request_gets_an_answer_or_none() -> None:
    # The copied lines may be the broken ones (badaspec.dat's To), so only the status
    # line is checked here; the UDP conformance test checks what a client receives.
    for path in sorted(RFC4475.glob("*.dat")):
        data = path.read_bytes()
        try:
            parse_message(data)
        except SipParseError as exc:
            out = error_response(data, exc.status, "Whatever")
            if data.startswith(b"SIP/"):
                assert out is None, path.name
            else:
                assert out is not None, path.name
                assert out.startswith(f"SIP/2.0 {exc.status} Whatever\r\n".encode()), path.name
