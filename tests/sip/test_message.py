"""Message model: parse, typed views, edits, byte-exact passthrough (RFC 3261 §7, §20)."""

from __future__ import annotations

import pytest

from limen.sip import (
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    SipUsageError,
    Transport,
    parse_message,
)
from limen.sip.transaction import new_via
from limen.sip.validate import check_request

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bK74bf9;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@client.atlanta.example.com;transport=tls>\r\n"
    b"X-Unknown-Header:   keep   me  exactly \r\n"
    b"Supported: 100rel, timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_parse_request_typed_views() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "bob" and msg.uri.host == "biloxi.example.com"
    via = msg.top_via
    assert (via.transport, via.host, via.port) == ("TLS", "client.atlanta.example.com", 5061)
    assert via.branch == "z9hG4bK74bf9" and via.rfc3261_branch
    assert via.has_rport and via.rport is None
    assert msg.from_.display == "Alice" and msg.from_tag == "9fxced76sl"
    assert msg.to_tag is None and msg.to.display_name == "Bob"
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert (msg.cseq.seq, msg.cseq.method) == (1, "INVITE")
    assert msg.max_forwards == 70
    assert msg.supported == ["100rel", "timer"]
    ct = msg.content_type
    assert ct is not None and ct.mime == "application/sdp"
    assert msg.body == b"v=0\n"
    assert msg.contacts[0].uri == SipUri(
        "client.atlanta.example.com", user="alice", params=msg.contacts[0].uri.params
    )


def test_unmodified_message_is_byte_exact() -> None:
    assert bytes(parse_message(INVITE)) == INVITE


def test_edit_keeps_untouched_headers_byte_for_byte() -> None:
    msg = parse_message(INVITE)
    msg.set("Max-Forwards", 69)
    msg.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew", first=True)
    out = bytes(msg)
    assert b"X-Unknown-Header:   keep   me  exactly \r\n" in out
    assert b"Max-Forwards: 69\r\n" in out
    # Order: the new Via sits above the old one; Max-Forwards kept its place.
    assert out.index(b"branch=z9hG4bKnew") < out.index(b"branch=z9hG4bK74bf9")
    assert out.index(b"Max-Forwards") < out.index(b"From:")
    again = parse_message(out)
    assert [v.branch for v in again.via] == ["z9hG4bKnew", "z9hG4bK74bf9"]
    assert again.max_forwards == 69


def test_body_setter_updates_content_length() -> None:
    msg = parse_message(INVITE)
    msg.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    again = parse_message(bytes(msg))
    assert again.body == msg.body
    assert again.get("content-length") == str(len(msg.body))


def test_compact_names_are_understood_and_kept() -> None:
    raw = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: <sip:x@example.com>\r\n"
        b"i: abc\r\nCSeq: 1 OPTIONS\r\nm: <sip:a@h.example.com>\r\n"
        b"k: path\r\no: dialog;id=7\r\nu: dialog, presence\r\nx: 1800;refresher=uac\r\n"
        b"r: <sip:c@example.com>\r\nb: <sip:d@example.com>\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.call_id == "abc" and msg.get("Call-ID") == "abc"
    assert msg.supported == ["path"]
    assert msg.event is not None and msg.event.package == "dialog" and msg.event.id == "7"
    assert msg.typed("allow-events") == ["dialog", "presence"]
    se = msg.session_expires
    assert se is not None and se.delta == 1800 and se.refresher == "uac"
    assert msg.refer_to is not None and str(msg.refer_to.uri) == "sip:c@example.com"
    assert msg.referred_by is not None
    assert bytes(msg) == raw


def test_folding_and_multi_value_headers() -> None:
    raw = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n"
        b"  SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2;received=192.0.2.9\r\n"
        b"Via: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK3;rport=6000\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\n"
        b"Call-ID: c\r\nCSeq: 2 OPTIONS\r\n"
        b'Contact: "A, with comma" <sip:a@h1.example.com>;q=0.7, '
        b"<sip:a@h2.example.com>;expires=60\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert [v.host for v in msg.via] == ["a.example.com", "b.example.com", "[2001:db8::1]"]
    assert msg.via[1].received == "192.0.2.9" and msg.via[1].port == 5070
    assert msg.via[2].rport == 6000
    c1, c2 = msg.contacts
    assert c1.display == "A, with comma" and c1.q == 0.7
    assert c2.expires == 60
    assert msg.pop_first("Via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert [v.host for v in msg.via] == ["b.example.com", "[2001:db8::1]"]


def test_contact_star_and_expires() -> None:
    raw = (
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 3 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.contact_star and msg.contacts == [] and msg.expires == 0


def test_extension_headers() -> None:
    raw = (
        b"NOTIFY sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\nCall-ID: c\r\n"
        b"CSeq: 3 NOTIFY\r\nEvent: refer;id=93809824\r\n"
        b"Subscription-State: terminated;reason=noresource;retry-after=30\r\n"
        b"RSeq: 988789\r\nRAck: 776656 1 INVITE\r\n"
        b"Replaces: 425928@bobster.example.org;to-tag=7743;from-tag=6472;early-only\r\n"
        b'Reason: SIP;cause=200;text="Call completed elsewhere", Q.850;cause=16\r\n'
        b"Require: 100rel\r\nProxy-Require: foo\r\nUnsupported: bar\r\nAllow: INVITE, ACK\r\n"
        b"Min-SE: 90\r\nRetry-After: 120 (in a meeting);duration=3600\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    ss = msg.subscription_state
    assert ss is not None and ss.state == "terminated" and ss.reason == "noresource"
    assert ss.retry_after == 30
    assert msg.rseq == 988789
    rack = msg.rack
    assert rack is not None and (rack.rseq, rack.cseq, rack.method) == (776656, 1, "INVITE")
    rep = msg.replaces
    assert rep is not None and rep.call_id == "425928@bobster.example.org"
    assert (rep.to_tag, rep.from_tag, rep.early_only) == ("7743", "6472", True)
    r1, r2 = msg.reasons
    assert (r1.protocol, r1.cause, r1.text) == ("SIP", 200, "Call completed elsewhere")
    assert (r2.protocol, r2.cause) == ("Q.850", 16)
    assert msg.require == ["100rel"] and msg.proxy_require == ["foo"]
    assert msg.unsupported == ["bar"] and msg.allow == ["INVITE", "ACK"]
    min_se = msg.min_se
    assert min_se is not None and min_se.delta == 90
    ra = msg.retry_after
    assert ra is not None and (ra.delta, ra.comment, ra.params.get("duration")) == (
        120,
        "in a meeting",
        "3600",
    )


def test_response_parse_and_create() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = req.create_response(180, to_tag="abc")
    assert resp.status == 180 and resp.reason == "Ringing"
    parsed = parse_message(bytes(resp))
    assert isinstance(parsed, Response)
    assert parsed.to_tag == "abc" and parsed.from_tag == "9fxced76sl"
    assert parsed.call_id == req.call_id and parsed.cseq == req.cseq
    assert [str(v) for v in parsed.via] == [str(v) for v in req.via]
    assert parsed.get("content-length") == "0"
    # The request is untouched.
    assert req.to_tag is None and bytes(req) == INVITE


def test_build_request_from_scratch() -> None:
    req = Request(
        "OPTIONS",
        "sip:pbx.example.com",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx"),
            ("From", NameAddr(SipUri("example.com", user="limen")).with_tag("t1")),
            ("To", "<sip:pbx.example.com>"),
            ("Call-ID", "id1"),
            ("CSeq", "1 OPTIONS"),
            ("i", "ignored-compact-duplicate-check"),
        ][:5],
    )
    wire = bytes(req)
    assert wire.startswith(b"OPTIONS sip:pbx.example.com SIP/2.0\r\n")
    assert b"Content-Length: 0\r\n\r\n" in wire
    again = parse_message(wire)
    assert again.from_tag == "t1"


def test_malformed_contact_found_on_access_and_refused_by_checks() -> None:
    msg = parse_message(
        INVITE.replace(b"Contact: <sip:alice", b"Contact: <sip:alice@;x>, <sip:alice")
    )
    assert isinstance(msg, Request)
    with pytest.raises(SipParseError):
        msg.contacts  # noqa: B018
    rejection = check_request(msg)
    assert rejection is not None and rejection.status == 400


def test_header_injection_is_refused() -> None:
    req = parse_message(INVITE)
    with pytest.raises(SipUsageError):
        req.set("Subject", "hi\r\nVia: evil")
    with pytest.raises(SipUsageError):
        Response(200, "OK\r\nX: y")


def test_trailing_data_after_body_is_ignored() -> None:
    msg = parse_message(INVITE + b"INVITE sip:junk SIP/2.0\r\n\r\n")
    assert msg.body == b"v=0\n"
    assert bytes(msg) == INVITE


def test_udp_message_without_content_length_takes_rest() -> None:
    raw = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse_message(raw).body == b"v=0\n"


def test_leading_crlf_ignored() -> None:
    assert bytes(parse_message(b"\r\n\r\n" + INVITE)) == INVITE


@pytest.mark.parametrize(
    ("mutation", "status"),
    [
        ((b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), 505),
        ((b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
        ((b"CSeq: 1 INVITE", b"CSeq: x INVITE"), 400),
        ((b"Content-Length: 4", b"Content-Length: -4"), 400),
        ((b"Content-Length: 4", b"Content-Length: 400"), 400),
        ((b"Call-ID: 3848276298220188511@atlanta.example.com\r\n", b""), 400),
        ((b"Max-Forwards: 70", b"Max-Forwards: seventy"), 400),
        ((b"To: Bob <sip:bob@biloxi.example.com>", b"To: Bob <sip:bob@biloxi.example.com"), 400),
        ((b"X-Unknown-Header:", b"X Unknown Header:"), 400),
        ((b"X-Unknown-Header:", b": no name"), 400),
        ((b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\rX: y\r\n"), 400),
        ((b"INVITE sip:bob@", b"INVITE  sip:bob@"), 400),
        ((b"Via: SIP/2.0/TLS client", b"Via: SIP/2.0 client"), 400),
    ],
)
def test_malformed_requests(mutation: tuple[bytes, bytes], status: int) -> None:
    old, new = mutation
    assert old in INVITE
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE.replace(old, new, 1))
    assert info.value.status == status


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"INVITE",
        b"SIP/2.0 99 Too Small\r\n\r\n",
        b"SIP/2.0 700 Too Big\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0200 OK\r\n\r\n",
    ],
)
def test_garbage_raises_parse_error(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw)


def test_lf_only_message_is_accepted_and_written_with_crlf() -> None:
    raw = INVITE.replace(b"\r\n", b"\n")
    msg = parse_message(raw)
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert b"\r\nCall-ID: 3848276298220188511@atlanta.example.com\r\n" in bytes(msg)


def test_copy_is_independent() -> None:
    msg = parse_message(INVITE)
    clone = msg.copy()
    clone.set("Call-ID", "other")
    assert msg.call_id != "other" and clone.call_id == "other"
    assert bytes(msg) == INVITE


def test_known_header_name_without_colon_is_refused() -> None:
    # The name cache must not let "Subject" (seen before, with a colon) pass bare.
    parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSubject: x\r\n"))
    with pytest.raises(SipParseError):
        parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSubject\r\n"))


# ---------------------------------------------------------------------------------------------
# Request.retry: a new transaction for the same request (RFC 3261 §8.1.3.5, §22.2)
# ---------------------------------------------------------------------------------------------

OUTGOING = (
    b"INVITE sip:7001@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfirst;rport\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.7:5060;branch=z9hG4bKbelow\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:7000@pbx.example.com>;tag=f1\r\n"
    b"To: <sip:7001@pbx.example.com>\r\n"
    b"Call-ID: retry-1@limen\r\n"
    b"CSeq: 41 INVITE\r\n"
    b'Proxy-Authorization: Digest username="7000", realm="pbx", nonce="n", '
    b'uri="sip:7001@pbx.example.com", response="00"\r\n'
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_retry_bumps_cseq_and_replaces_only_the_top_via() -> None:
    out = parse_message(OUTGOING)
    assert isinstance(out, Request)
    via = new_via(Transport.UDP, "2001:db8::1", 5060)
    retry = out.retry(via)
    again = parse_message(bytes(retry))
    assert isinstance(again, Request)
    assert again.cseq.seq == 42 and again.cseq.method == "INVITE"
    assert [v.branch for v in again.via] == [via.branch, "z9hG4bKbelow"]
    assert again.top_via.host == "[2001:db8::1]"
    # Same request otherwise: Request-URI, dialog identifiers, credentials, body.
    assert str(again.uri) == str(out.uri)
    assert (again.call_id, again.from_tag, again.to_tag) == ("retry-1@limen", "f1", None)
    assert again.get("Proxy-Authorization") == out.get("Proxy-Authorization")
    assert again.body == b"v=0\n" and again.get("Content-Length") == "4"
    # The request it came from is untouched (it may still be retransmitted or CANCELled).
    assert bytes(out) == OUTGOING and out.cseq.seq == 41


def test_retry_takes_the_dialog_sequence_and_a_via_as_text() -> None:
    out = parse_message(OUTGOING)
    assert isinstance(out, Request)
    retry = out.retry("SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKnew", seq=100)
    assert retry.cseq.seq == 100 and retry.cseq.method == "INVITE"
    assert retry.top_via.branch == "z9hG4bKnew" and len(retry.via) == 2


def test_retry_of_a_request_with_one_via_and_the_cseq_limit() -> None:
    req = Request(
        "REGISTER",
        "sip:pbx.example.com",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa"),
            ("From", "<sip:7000@pbx.example.com>;tag=t"),
            ("To", "<sip:7000@pbx.example.com>"),
            ("Call-ID", "reg-1"),
            ("CSeq", "4294967294 REGISTER"),
        ],
    )
    retry = req.retry("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb")
    assert retry.cseq.seq == 0xFFFFFFFF
    assert [v.branch for v in retry.via] == ["z9hG4bKb"]
    assert bytes(retry).startswith(b"REGISTER sip:pbx.example.com SIP/2.0\r\nVia: ")
    # §8.1.1.5: CSeq is 32-bit; our own code asking for more is a usage error.
    with pytest.raises(SipUsageError):
        retry.retry("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc")
    with pytest.raises(SipUsageError):
        req.retry("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc", seq=-1)
