"""Tests for limen.sip.dialog (RFC 3261 §12, §13.2.2.4)."""

from __future__ import annotations

import pytest

from limen.sip.addressing import Transport
from limen.sip.dialog import Dialog, DialogId, DialogState, DialogTable, new_call_id, new_tag
from limen.sip.errors import SipParseError, SipUsageError
from limen.sip.message import Request, Response, parse_message
from limen.sip.transaction import new_via
from limen.sip.uri import SipUri

# Alice → p1 → p2 → Bob: each proxy puts its Record-Route on top, so Bob sees "p2, p1".
RECORD_ROUTE = "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>"
VIA = new_via(Transport.UDP, "192.0.2.10", 5060, branch="z9hG4bKours")


def sip(text: str) -> bytes:
    return text.lstrip("\n").replace("\n", "\r\n").encode()


def invite(
    *,
    uri: str = "sip:bob@biloxi.example.com",
    record_route: str | None = RECORD_ROUTE,
    from_tag: str | None = "alice-tag",
    cseq: int = 101,
    method: str = "INVITE",
    contact: str = "<sip:alice@192.0.2.10:5060>",
) -> Request:
    rr = f"Record-Route: {record_route}\n" if record_route else ""
    tag = f";tag={from_tag}" if from_tag else ""
    msg = parse_message(
        sip(
            f"""
{method} {uri} SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds8
{rr}Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: "Alice" <sip:alice@atlanta.example.com>{tag}
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: {cseq} {method}
Contact: {contact}
Content-Length: 0

"""
        )
    )
    assert isinstance(msg, Request)
    return msg


def answer(
    req: Request,
    status: int = 200,
    *,
    to_tag: str | None = "bob-tag",
    contact: str | None = "<sip:bob@192.0.2.4:5070>",
    record_route: str | None = RECORD_ROUTE,
) -> Response:
    """What the UAS sends (§12.1.1: Record-Route copied into the response), re-parsed."""
    headers: list[tuple[str, object]] = []
    if record_route:
        headers.append(("Record-Route", record_route))
    if contact:
        headers.append(("Contact", contact))
    resp = req.create_response(status, to_tag=to_tag, headers=headers)
    msg = parse_message(bytes(resp))
    assert isinstance(msg, Response)
    return msg


def reparse(req: Request) -> Request:
    msg = parse_message(bytes(req))
    assert isinstance(msg, Request)
    return msg


# --- creation (§12.1) -------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    assert dialog.id == DialogId("3848276298220188511@atlanta.example.com", "alice-tag", "bob-tag")
    assert dialog.state is DialogState.CONFIRMED and dialog.confirmed and dialog.is_uac
    # §12.1.2: the response's Record-Route, reversed.
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4:5070"
    assert str(dialog.local_target) == "sip:alice@192.0.2.10:5060"
    assert dialog.local_seq == 101
    assert dialog.remote_seq is None
    assert str(dialog.local_uri) == "sip:alice@atlanta.example.com"
    assert str(dialog.remote_uri) == "sip:bob@biloxi.example.com"
    assert dialog.local_party.display == "Alice" and dialog.local_party.tag is None
    assert not dialog.secure
    assert str(dialog.next_hop) == "sip:p1.example.com;lr"


def test_uac_dialog_from_provisional_is_early() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 180))
    assert dialog.state is DialogState.EARLY and dialog.early


def test_uac_dialog_refusals() -> None:
    req = invite()
    with pytest.raises(SipUsageError):
        Dialog.from_uac(req, answer(req, 100, to_tag=None))
    with pytest.raises(SipUsageError):
        Dialog.from_uac(req, answer(req, 486))
    with pytest.raises(SipParseError):
        Dialog.from_uac(req, answer(req, 200, to_tag=None))


def test_uac_dialog_without_contact_keeps_request_uri() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 183, contact=None))
    assert str(dialog.remote_target) == "sip:bob@biloxi.example.com"


def test_secure_flag_needs_tls_and_sips() -> None:
    req = invite(uri="sips:bob@biloxi.example.com")
    assert Dialog.from_uac(req, answer(req), tls=True).secure
    assert not Dialog.from_uac(req, answer(req), tls=False).secure
    plain = invite()
    assert not Dialog.from_uac(plain, answer(plain), tls=True).secure
    assert Dialog.from_uas(req, answer(req), tls=True).secure


def test_uas_dialog() -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req, 180))
    assert dialog.id == DialogId("3848276298220188511@atlanta.example.com", "bob-tag", "alice-tag")
    assert dialog.early and not dialog.is_uac
    # §12.1.1: the request's Record-Route, in order.
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    assert str(dialog.local_target) == "sip:bob@192.0.2.4:5070"
    assert dialog.remote_seq == 101
    assert dialog.local_seq is None
    assert str(dialog.local_uri) == "sip:bob@biloxi.example.com"
    assert str(dialog.remote_uri) == "sip:alice@atlanta.example.com"


def test_uas_dialog_with_rfc2543_peer_has_null_remote_tag() -> None:
    req = invite(from_tag=None)
    dialog = Dialog.from_uas(req, answer(req))
    assert dialog.remote_tag == ""
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert bye.to_tag is None  # no tag to put back (§12.1.1: null)
    table = DialogTable()
    table.add(dialog)
    # The peer's BYE: To carries our tag, From carries none.
    peer_bye = parse_message(bytes(in_dialog("BYE", 102)).replace(b";tag=alice-tag", b""))
    assert isinstance(peer_bye, Request) and peer_bye.from_tag is None
    assert table.match_request(peer_bye) is dialog


def test_uas_dialog_needs_tag_and_contact() -> None:
    req = invite()
    with pytest.raises(SipUsageError):
        Dialog.from_uas(req, req.create_response(200))
    no_contact = parse_message(bytes(req).replace(b"Contact: <sip:alice@192.0.2.10:5060>\r\n", b""))
    assert isinstance(no_contact, Request)
    with pytest.raises(SipParseError):
        Dialog.from_uas(no_contact, answer(no_contact))


# --- requests within the dialog (§12.2.1.1) ------------------------------------------------


def test_loose_routing_request() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@192.0.2.4:5070"  # remote target
    assert [str(r) for r in bye.routes] == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert (bye.cseq.seq, bye.cseq.method) == (102, "BYE")
    assert bye.from_tag == "alice-tag" and bye.to_tag == "bob-tag"
    assert bye.from_.display == "Alice"
    assert bye.call_id == dialog.call_id
    assert bye.max_forwards == 70
    assert bye.top_via.branch == "z9hG4bKours"
    assert not bye.has("contact")  # BYE is no target refresh
    info = dialog.create_request("INFO", headers=[("Content-Type", "text/plain")], body=b"hi")
    assert info.cseq.seq == 103
    assert info.body == b"hi" and info.get("content-length") == "2"
    assert not info.has("via")  # the caller adds it
    info.add("Via", VIA, first=True)
    assert reparse(info).body == b"hi"
    reinvite = reparse(
        dialog.create_request("INVITE", via=new_via(Transport.UDP, "192.0.2.10", 5060))
    )
    assert [str(c.uri) for c in reinvite.contacts] == ["sip:alice@192.0.2.10:5060"]
    assert dialog.local_seq == 104


def test_via_without_branch_gets_one() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    bare = VIA.with_params(VIA.params.without("branch"))
    first = reparse(dialog.create_request("OPTIONS", via=bare)).top_via.branch
    second = reparse(dialog.create_request("OPTIONS", via=bare)).top_via.branch
    assert first and second and first != second and first.startswith("z9hG4bK")


def test_strict_routing_request() -> None:
    req = invite(
        record_route="<sip:p2.example.com;lr>, <sip:p1.example.com;method=INVITE;transport=tcp>"
    )
    dialog = Dialog.from_uac(req, answer(req, record_route=req.get("record-route")))
    # Route set: p1 (strict, no lr) then p2.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;method=INVITE;transport=tcp",
        "sip:p2.example.com;lr",
    ]
    bye = reparse(dialog.create_request("BYE", via=VIA))
    # §12.2.1.1: the first route is the Request-URI (minus what a Request-URI may not
    # carry), the rest of the route set follows in Route, then the remote target.
    assert str(bye.uri) == "sip:p1.example.com;transport=tcp"
    assert [str(r.uri) for r in bye.routes] == ["sip:p2.example.com;lr", "sip:bob@192.0.2.4:5070"]
    assert str(dialog.next_hop) == "sip:p1.example.com;method=INVITE;transport=tcp"


def test_no_route_set() -> None:
    req = invite(record_route=None)
    dialog = Dialog.from_uac(req, answer(req, record_route=None))
    bye = reparse(dialog.create_request("BYE", via=VIA))
    assert str(bye.uri) == "sip:bob@192.0.2.4:5070"
    assert not bye.has("route")
    assert str(dialog.next_hop) == "sip:bob@192.0.2.4:5070"


def test_ack_for_2xx() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    ack1 = reparse(dialog.create_ack(101, via=new_via(Transport.UDP, "192.0.2.10", 5060)))
    ack2 = reparse(dialog.create_ack(101, via=new_via(Transport.UDP, "192.0.2.10", 5060)))
    assert (ack1.method, ack1.cseq.seq, ack1.cseq.method) == ("ACK", 101, "ACK")
    assert str(ack1.uri) == "sip:bob@192.0.2.4:5070"
    assert [str(r) for r in ack1.routes] == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack1.top_via.branch != req.top_via.branch  # a transaction of its own
    assert ack1.top_via.branch != ack2.top_via.branch
    assert ack1.to_tag == "bob-tag"
    assert dialog.local_seq == 101  # unchanged
    with pytest.raises(SipUsageError):
        dialog.create_request("ACK")
    with pytest.raises(SipUsageError):
        dialog.create_request("CANCEL")


def test_uas_first_request_picks_initial_cseq() -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req))
    bye = dialog.create_request("BYE", via=VIA)
    assert 1 <= bye.cseq.seq < 2**31
    assert dialog.local_seq == bye.cseq.seq
    # Requests of the UAS go to the caller's Contact through the route set in order.
    assert str(bye.uri) == "sip:alice@192.0.2.10:5060"
    assert [str(r) for r in bye.routes] == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert bye.from_tag == "bob-tag" and bye.to_tag == "alice-tag"
    given = Dialog.from_uas(req, answer(req), local_seq=7)
    assert given.create_request("BYE").cseq.seq == 8


def test_cseq_exhaustion_and_terminated_dialog() -> None:
    req = invite(cseq=2**32 - 1)
    dialog = Dialog.from_uac(req, answer(req))
    with pytest.raises(SipUsageError):
        dialog.create_request("BYE")
    dialog.terminate()
    with pytest.raises(SipUsageError, match="terminated"):
        dialog.create_request("BYE")


# --- received requests (§12.2.2) ---------------------------------------------------------


def in_dialog(method: str, cseq: int, contact: str = "<sip:alice@192.0.2.10:5060>") -> Request:
    text = f"""
{method} sip:bob@192.0.2.4:5070 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq}
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>;tag=bob-tag
From: "Alice" <sip:alice@atlanta.example.com>;tag=alice-tag
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: {cseq} {method}
Contact: {contact}
Content-Length: 0

"""
    msg = parse_message(sip(text))
    assert isinstance(msg, Request)
    return msg


def test_remote_cseq_ordering() -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req))
    assert dialog.receive_request(in_dialog("INFO", 102)) is None
    assert dialog.remote_seq == 102
    # Lower: out of order, 500 (§12.2.2). The remote sequence number does not move.
    assert dialog.receive_request(in_dialog("INFO", 101)) == 500
    assert dialog.remote_seq == 102
    # Gaps are fine (§12.2.2: "not necessarily one higher").
    assert dialog.receive_request(in_dialog("INFO", 200)) is None
    assert dialog.remote_seq == 200
    # ACK and CANCEL are not checked and do not move it.
    assert dialog.receive_request(in_dialog("ACK", 101)) is None
    assert dialog.remote_seq == 200
    dialog.terminate()
    assert dialog.receive_request(in_dialog("BYE", 201)) == 481


def test_uac_dialog_first_remote_request_sets_remote_seq() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    assert dialog.remote_seq is None
    assert dialog.receive_request(in_dialog("BYE", 5)) is None
    assert dialog.remote_seq == 5


def test_target_refresh_by_received_request() -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req))
    dialog.receive_request(in_dialog("INFO", 102, contact="<sip:alice@198.51.100.7>"))
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"  # INFO refreshes nothing
    dialog.receive_request(in_dialog("INVITE", 103, contact="<sip:alice@198.51.100.7>"))
    assert str(dialog.remote_target) == "sip:alice@198.51.100.7"
    dialog.receive_request(in_dialog("UPDATE", 104, contact="<sip:alice@198.51.100.8>"))
    assert str(dialog.remote_target) == "sip:alice@198.51.100.8"
    # Out-of-order refreshes are refused and change nothing.
    assert dialog.receive_request(in_dialog("INVITE", 50, contact="<sip:x@192.0.2.99>")) == 500
    assert str(dialog.remote_target) == "sip:alice@198.51.100.8"


# --- responses (§12.2.1.2, §13.2.2.4) -----------------------------------------------------


def test_uac_target_refresh_by_2xx() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    reinvite = reparse(dialog.create_request("INVITE", via=VIA))
    dialog.receive_response(reinvite, answer(reinvite, 200, contact="<sip:bob@203.0.113.4>"))
    assert str(dialog.remote_target) == "sip:bob@203.0.113.4"
    info = reparse(dialog.create_request("INFO", via=VIA))
    dialog.receive_response(info, answer(info, 200, contact="<sip:bob@203.0.113.99>"))
    assert str(dialog.remote_target) == "sip:bob@203.0.113.4"
    assert dialog.confirmed


def test_uac_early_to_confirmed_recomputes_route_set() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 180, record_route="<sip:p9.example.com;lr>"))
    assert [str(r) for r in dialog.route_set] == ["<sip:p9.example.com;lr>"]
    dialog.receive_response(req, answer(req, 183, contact="<sip:bob@192.0.2.5>"))
    assert dialog.early
    assert str(dialog.remote_target) == "sip:bob@192.0.2.5"
    dialog.receive_response(req, answer(req, 200))
    assert dialog.confirmed
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4:5070"


def test_uac_early_dialog_ends_on_non_2xx() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req, 180))
    dialog.receive_response(req, answer(req, 486))
    assert dialog.state is DialogState.TERMINATED


@pytest.mark.parametrize("status", [408, 481])
def test_408_and_481_end_the_dialog(status: int) -> None:
    req = invite()
    dialog = Dialog.from_uac(req, answer(req))
    bye = reparse(dialog.create_request("INFO", via=VIA))
    dialog.receive_response(bye, answer(bye, status))
    assert dialog.terminated


def test_uas_confirms_on_2xx_sent() -> None:
    req = invite()
    dialog = Dialog.from_uas(req, answer(req, 180))
    dialog.response_sent(req, answer(req, 200))
    assert dialog.confirmed
    other = Dialog.from_uas(req, answer(req, 180))
    other.response_sent(req, answer(req, 603))
    assert other.terminated


# --- the table -----------------------------------------------------------------------------


def test_dialog_table_lookups() -> None:
    table = DialogTable()
    req = invite()
    uas = Dialog.from_uas(req, answer(req))
    table.add(uas)
    assert uas in table and uas.id in table and len(table) == 1
    with pytest.raises(SipUsageError):
        table.add(uas)
    # An in-dialog request from the peer: To tag ours, From tag theirs.
    assert table.match_request(in_dialog("BYE", 102)) is uas
    assert table.match_request(req) is None  # no To tag: not in a dialog
    # A UAC dialog on the other leg of a B2BUA, same table.
    out = invite(from_tag="leg-b-tag")
    uac = Dialog.from_uac(out, answer(out, to_tag="far-tag"))
    table.add(uac)
    assert table.match_response(answer(out, to_tag="far-tag")) is uac
    assert table.match_response(answer(out, to_tag="other")) is None
    assert table.get(uac.id) is uac
    assert set(table) == {uas, uac}
    assert table.remove(uas) is uas and table.remove(uas.id) is None
    assert list(table) == [uac]


def test_forked_early_dialogs() -> None:
    table = DialogTable()
    req = invite()
    one = Dialog.from_uac(req, answer(req, 180, to_tag="fork1"))
    two = Dialog.from_uac(req, answer(req, 180, to_tag="fork2"))
    table.add(one)
    table.add(two)
    assert table.for_call_id(req.call_id) == [one, two]
    assert table.match_response(answer(req, 200, to_tag="fork2")) is two


def test_request_from_one_side_matches_dialog_on_the_other() -> None:
    """The UAC builds a request in its dialog; the UAS finds its own dialog for it."""
    req = invite()
    resp = answer(req)
    uac = Dialog.from_uac(req, resp)
    uas = Dialog.from_uas(req, resp)
    table = DialogTable()
    table.add(uas)
    bye = reparse(uac.create_request("BYE", via=VIA))
    assert table.match_request(bye) is uas
    assert uas.receive_request(bye) is None
    assert uas.remote_seq == 102
    # And back: the UAS's request is accepted by the UAC's dialog.
    back = reparse(uas.create_request("INFO", via=VIA))
    other = DialogTable()
    other.add(uac)
    assert other.match_request(back) is uac


def test_new_tag_and_call_id() -> None:
    assert len({new_tag() for _ in range(50)}) == 50
    assert new_call_id("example.com").endswith("@example.com")
    assert "@" not in new_call_id()
    assert isinstance(Dialog.from_uac(invite(), answer(invite())).remote_target, SipUri)
