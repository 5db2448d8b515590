"""Pure parts of the call controller: header policy, failure mapping, allowed names,
Replaces translation (no sockets)."""

from __future__ import annotations

from limen.gateway.calls import (
    Call,
    Leg,
    end_to_end_headers,
    map_failure_status,
    relayed_max_forwards,
    translate_replaces,
    uri_host_allowed,
)
from limen.gateway.context import Side
from limen.gateway.media import PassthroughMedia
from limen.gateway.offeranswer import OfferAnswer
from limen.sip import Destination, Dialog, Request, Transport, parse_message, parse_uri
from limen.sip.headers import parse_replaces
from limen.store.schemas import DeviceCredentials

INVITE = (
    b"INVITE sip:3001@limen.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;rport\r\n"
    b"Record-Route: <sip:10.0.0.9;lr>\r\n"
    b"Max-Forwards: 12\r\n"
    b'From: "Alice" <sip:2001@limen.test>;tag=a1\r\n'
    b"To: <sip:3001@limen.test>\r\n"
    b"Call-ID: lan-call-id@10.0.0.5\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:2001@10.0.0.5:5060>\r\n"
    b"User-Agent: PhoneOS 1.0\r\n"
    b"Supported: 100rel, timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Allow: INVITE, ACK, BYE\r\n"
    b'Proxy-Authorization: Digest username="2001"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


def invite() -> Request:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    return message


def test_end_to_end_headers_hide_the_other_side() -> None:
    names = [name.lower() for name, _ in end_to_end_headers(invite())]
    assert names == ["supported", "session-expires", "allow"]
    without_prack = dict(end_to_end_headers(invite(), prack=False))
    assert without_prack["Supported"] == "timer"


def test_max_forwards_is_decremented() -> None:
    assert relayed_max_forwards(invite()) == 11


def test_failure_mapping() -> None:
    assert map_failure_status(302) == 480
    assert map_failure_status(407) == 403
    assert map_failure_status(486) == 486
    assert map_failure_status(503) == 503


def test_allowed_uri_names() -> None:
    uri = parse_uri("sip:3001@evil.example")
    assert uri_host_allowed(uri, [], ["limen.test"])
    assert not uri_host_allowed(uri, ["limen.test"], ["203.0.113.10"])
    assert uri_host_allowed(parse_uri("sip:3001@LIMEN.test"), ["limen.test"], [])
    assert uri_host_allowed(parse_uri("sip:3001@203.0.113.10"), ["limen.test"], ["203.0.113.10"])


def test_replaces_of_our_leg_is_rewritten_to_the_paired_leg() -> None:
    device = DeviceCredentials(
        guid="g",
        setside_username="2001",
        setside_password="p",
        icpside_username="icp2001",
        icpside_password="q",
        icp="pbx",
        clientid=None,
    )
    call = Call(
        key="k", kind="INVITE", device=device, media=OfferAnswer(PassthroughMedia(), "k", "d")
    )
    dest = Destination(Transport.UDP, "127.0.0.1", 5060)
    a = Leg(Side.SET, call, "set-call", "limenA", dest, is_uas=True)
    b = Leg(Side.ICP, call, "icp-call", "limenB", dest, is_uas=False)
    a.peer, b.peer = b, a
    target = parse_uri("sip:x@h")
    a.dialog = Dialog(
        call_id="set-call",
        local_tag="limenA",
        remote_tag="phone",
        local_party=parse_message(INVITE).to,  # type: ignore[union-attr]
        remote_party=parse_message(INVITE).from_,  # type: ignore[union-attr]
        remote_target=target,
    )
    b.dialog = Dialog(
        call_id="icp-call",
        local_tag="limenB",
        remote_tag="pbx",
        local_party=parse_message(INVITE).from_,  # type: ignore[union-attr]
        remote_party=parse_message(INVITE).to,  # type: ignore[union-attr]
        remote_target=target,
    )
    legs = {"set-call": [a], "icp-call": [b]}
    # The phone names its dialog with us: to-tag = our tag, from-tag = its own.
    phone_view = parse_replaces("set-call;to-tag=limenA;from-tag=phone")
    mapped = translate_replaces(phone_view, lambda cid: legs.get(cid, []))
    assert mapped is not None
    assert (mapped.call_id, mapped.to_tag, mapped.from_tag) == ("icp-call", "pbx", "limenB")
    assert "to-tag=pbx" in str(mapped) and "from-tag=limenB" in str(mapped)
    unknown = parse_replaces("other;to-tag=x;from-tag=y")
    assert translate_replaces(unknown, lambda cid: legs.get(cid, [])) is None
