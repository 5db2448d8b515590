"""The sans-IO call core: a leg's SIP → call events, its deadlines, the call's
offer/answer owner (glare → 491), and routing refusals. No sockets, explicit time.

End to end on the whole gateway with a manual clock: test_gw_timers.py; with real peers:
test_gw_call_kamailio.py and test_gw_feat_*.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from gw_manual import DEVICE, PBX, PHONE, SDP, ManualGateway, statuses

from limen.gateway.context import Side
from limen.gateway.legs import (
    Call,
    Connect,
    Disconnect,
    Fail,
    Forward,
    Info,
    Leg,
    NoAck,
    NoAnswer,
    Refer,
    Resend,
    Ring,
    Update,
)
from limen.gateway.media import MediaRefused
from limen.gateway.offeranswer import OfferAnswer
from limen.sip import Destination, Request, Response, Transport

UDP = Destination(Transport.UDP, "198.51.100.7", 40000)


class RecordingMedia:
    """A media controller that marks what it made of each SDP (offer or answer)."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[str, Side]] = []
        self.refuse = refuse

    def offer(self, call_id: str, from_side: Side, sdp: bytes, **kw: Any) -> bytes:
        if self.refuse:
            raise MediaRefused(488, "Not Acceptable Here")
        self.calls.append(("plain-offer" if kw.get("plain") else "offer", from_side))
        return b"offer:" + sdp

    def answer(self, call_id: str, from_side: Side, sdp: bytes, **kw: Any) -> bytes:
        self.calls.append(("answer", from_side))
        return b"answer:" + sdp

    def delete(self, call_id: str) -> None:
        self.calls.append(("delete", Side.SET))

    def query(self, call_id: str) -> dict[str, Any]:
        return {}


# --- offer/answer ---------------------------------------------------------------------------


def test_offer_answer_roles_and_glare() -> None:
    media = RecordingMedia()
    oa = OfferAnswer(media, "k", "d")  # type: ignore[arg-type]
    assert not oa.glare("INVITE", reinvite_pending=False)
    body, offered = oa.request(Side.SET, b"v=0")
    assert (body, offered, oa.pending) == (b"offer:v=0", True, Side.SET)
    # RFC 3261 §14.2: an offer from either side while one is pending is glare (491);
    # a re-INVITE in progress also refuses a crossing INVITE, not an UPDATE.
    assert oa.glare("UPDATE", reinvite_pending=False)
    # The answer in a provisional without RSeq does not settle it; the 200's does.
    assert oa.response(Side.ICP, b"v=1", offered=True, settles=False) == b"answer:v=1"
    assert oa.pending is Side.SET
    oa.response(Side.ICP, b"v=1", offered=True, settles=True)
    assert oa.pending is None
    assert oa.glare("INVITE", reinvite_pending=True) and not oa.glare("UPDATE", False)
    # The other side's request answers a pending offer instead of offering.
    oa.request(Side.ICP, b"v=2")
    body, offered = oa.request(Side.SET, b"v=3")
    assert (body, offered, oa.pending) == (b"answer:v=3", False, None)


def test_late_offer_answered_in_the_ack_and_a_withdrawn_offer() -> None:
    media = RecordingMedia()
    oa = OfferAnswer(media, "k", "d")  # type: ignore[arg-type]
    # INVITE without SDP: the 200 carries the offer (ICP side), the ACK the answer.
    assert oa.response(Side.ICP, b"v=0", offered=False, settles=True) == b"offer:v=0"
    assert oa.ack(Side.SET, Side.ICP, b"v=a") == b""  # not the SET side's offer
    assert oa.ack(Side.ICP, Side.SET, b"v=a") == b"answer:v=a" and oa.pending is None
    oa.request(Side.SET, b"v=1")
    oa.withdrawn()  # its transaction failed: no answer will come
    assert oa.pending is None
    refusing = OfferAnswer(RecordingMedia(refuse=True), "k", "d")  # type: ignore[arg-type]
    with pytest.raises(MediaRefused):
        refusing.request(Side.SET, b"v=0")
    assert refusing.pending is None
    assert refusing.response(Side.ICP, b"v=0", offered=False, settles=True) == b""


# --- a leg: SIP in, call events out ---------------------------------------------------------


def pair() -> tuple[Call, Leg, Leg]:
    call = Call("k", "INVITE", DEVICE, OfferAnswer(RecordingMedia(), "k", DEVICE.guid))  # type: ignore[arg-type]
    a = Leg(Side.SET, call, "a-call", "tagA", UDP, is_uas=True)
    b = Leg(Side.ICP, call, "b-call", "tagB", UDP, is_uas=False)
    a.peer, b.peer = b, a
    call.a, call.b = a, b
    return call, a, b


def invite(call_id: str = "b-call", tag: str = "tagB") -> Request:
    return Request(
        "INVITE",
        "sip:3001@10.0.0.2",
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:icp7000@10.0.0.2>;tag={tag}"),
            ("To", "<sip:3001@10.0.0.2>"),
            ("Call-ID", call_id),
            ("CSeq", "5 INVITE"),
            ("Contact", "<sip:tok@10.0.0.1>"),
        ],
    )


def forward(call: Call, a: Leg, b: Leg) -> Forward:
    request = invite("a-call", "phone")
    fwd = Forward(call, a, b, object(), request, invite())  # type: ignore[arg-type]
    call.initial = fwd
    call.forwards.append(fwd)
    return fwd


def reply(request: Request, status: int, *, sdp: bool = False) -> Response:
    return request.create_response(
        status,
        to_tag="pbx",
        headers=[("Contact", "<sip:3001@10.0.0.2>")]
        + ([("Content-Type", "application/sdp")] if sdp else []),
        body=SDP if sdp else b"",
    )


def test_responses_become_ring_early_media_connect_fail() -> None:
    call, a, b = pair()
    fwd = forward(call, a, b)
    fwd.timer_c_at = 180.0
    ring = b.receive_response(fwd, reply(fwd.out, 180), now=10.0, timer_c=180.0)
    assert isinstance(ring, Ring) and not ring.early_media
    assert fwd.timer_c_at == 190.0 and b.dialog is not None and b.dialog.early
    early = b.receive_response(fwd, reply(fwd.out, 183, sdp=True), now=11.0, timer_c=180.0)
    assert isinstance(early, Ring) and early.early_media
    connect = b.receive_response(fwd, reply(fwd.out, 200), now=12.0, timer_c=180.0)
    assert isinstance(connect, Connect) and b.dialog.confirmed
    call2, a2, b2 = pair()
    fwd2 = forward(call2, a2, b2)
    fail = b2.receive_response(fwd2, reply(fwd2.out, 486), now=1.0, timer_c=180.0)
    assert isinstance(fail, Fail) and fail.response.status == 486
    # A CANCEL waiting for a provisional: no event, the controller cancels now.
    fwd2.cancel_pending = True
    assert b2.receive_response(fwd2, reply(fwd2.out, 180), now=2.0, timer_c=180.0) is None


def test_in_dialog_requests_become_update_refer_info_disconnect() -> None:
    call, a, b = pair()
    fwd = forward(call, a, b)
    b.receive_response(fwd, reply(fwd.out, 200), now=1.0, timer_c=180.0)
    assert b.dialog is not None
    seq = 10
    kinds: dict[str, type] = {}
    for method in ("INVITE", "UPDATE", "REFER", "INFO", "NOTIFY", "BYE"):
        seq += 1
        request = Request(
            method,
            "sip:tok@10.0.0.1",
            [
                ("Via", f"SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-{seq}"),
                ("From", "<sip:3001@10.0.0.2>;tag=pbx"),
                ("To", "<sip:icp7000@10.0.0.2>;tag=tagB"),
                ("Call-ID", "b-call"),
                ("CSeq", f"{seq} {method}"),
            ],
        )
        kinds[method] = type(b.receive_request(request))
    assert kinds == {
        "INVITE": Update,
        "UPDATE": Update,
        "REFER": Refer,
        "INFO": Info,
        "NOTIFY": Info,
        "BYE": Disconnect,
    }
    # A CSeq lower than the last one is refused by the dialog (§12.2.2: 500).
    request.set("CSeq", "3 INFO")
    assert b.receive_request(request) == 500


def test_leg_deadlines_timer_c_and_2xx_retransmission() -> None:
    call, a, b = pair()
    fwd = forward(call, a, b)
    fwd.timer_c_at = 180.0
    assert b.next_deadline() == 180.0 and a.next_deadline() is None
    assert b.handle_timers(179.9) == []
    events = b.handle_timers(180.0)
    assert [type(e) for e in events] == [NoAnswer] and b.next_deadline() is None
    # Our 2xx to the caller (leg a, UDP): T1, 2*T1, 4*T1 = T2, T2 ...; past 64*T1: NoAck.
    a.start_retransmit(fwd, now=0.0, t1=0.5, t2=2.0)
    times = []
    while (due := a.next_deadline()) is not None:
        (event,) = a.handle_timers(due)
        times.append((due, type(event)))
    assert times == [
        (0.5, Resend),
        (1.5, Resend),
        (3.5, Resend),
        *[(3.5 + 2.0 * i, Resend) for i in range(1, 15)],
        (33.5, NoAck),
    ]
    assert call.next_deadline() is None


# --- routing refusals through the whole gateway ---------------------------------------------


def pbx_invite(user: str, *, call_id: str = "pbx-call-1") -> Request:
    return Request(
        "INVITE",
        f"sip:{user}@10.0.0.1",
        [
            ("Via", f"SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-{call_id}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:3001@10.0.0.2>;tag=pbx"),
            ("To", f"<sip:{user}@10.0.0.1>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:3001@10.0.0.2>"),
        ],
    )


def test_pbx_to_unknown_user_404_and_a_call_to_the_phone_rings_it() -> None:
    gw = ManualGateway()
    gw.receive(pbx_invite("nobody"), PBX)
    assert statuses(gw.to_pbx())[-1][1] == 404
    gw.receive(pbx_invite("7000", call_id="pbx-call-2"), PBX)
    to_phone = [m for _, m in gw.to_phone() if isinstance(m, Request)]
    assert [m.method for m in to_phone] == ["INVITE"]
    assert "10.0.0.2" not in bytes(to_phone[0]).decode()  # topology hiding


def test_reinvite_glare_491_on_the_manual_gateway() -> None:
    gw = ManualGateway()
    phone_invite = gw.phone_invite()
    relayed = gw.relayed_invite()
    gw.pbx_answers(relayed, 200, tag="pbx-1", body=SDP)
    ok = next(m for _, m in gw.to_phone() if isinstance(m, Response) and m.status == 200)
    to_tag = ok.to_tag
    ack = in_dialog(phone_invite, "ACK", 1, to_tag, branch="ack1")
    gw.receive(ack, PHONE)
    # The phone re-INVITEs (an offer); while it is pending, the PBX's UPDATE offer → 491.
    gw.receive(in_dialog(phone_invite, "INVITE", 2, to_tag, body=SDP, branch="re1"), PHONE)
    update = Request(
        "UPDATE",
        "sip:tok@10.0.0.1",
        [
            ("Via", "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK-pbx-upd"),
            ("Max-Forwards", "70"),
            ("From", relayed.get("To") + ";tag=pbx-1"),
            ("To", relayed.get("From")),
            ("Call-ID", relayed.call_id),
            ("CSeq", "7 UPDATE"),
            ("Contact", "<sip:3001@10.0.0.2>"),
            ("Content-Type", "application/sdp"),
        ],
        SDP,
    )
    gw.receive(update, PBX)
    refusal = [m for _, m in gw.to_pbx() if isinstance(m, Response)][-1]
    assert refusal.status == 491 and refusal.get("Retry-After") == "1"


def in_dialog(
    invite_: Request, method: str, seq: int, to_tag: str | None, *, body: bytes = b"", branch: str
) -> Request:
    fields: list[tuple[str, object]] = [
        ("Via", f"SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-{branch};rport"),
        ("Max-Forwards", "70"),
        ("From", invite_.get("From")),
        ("To", f"{invite_.get('To')};tag={to_tag}"),
        ("Call-ID", invite_.call_id),
        ("CSeq", f"{seq} {method}"),
        ("Contact", "<sip:7000@192.168.1.5:5060>"),
    ]
    if body:
        fields.append(("Content-Type", "application/sdp"))
    return Request(method, "sip:10.0.0.1:5060", fields, body)
