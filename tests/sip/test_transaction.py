"""Tests for limen.sip.transaction (RFC 3261 §17, §18.2, RFC 6026, RFC 3581).

Time is a float we pass in; deadlines are asserted exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.sip.addressing import Destination, Source, Transport
from limen.sip.errors import SipUsageError
from limen.sip.headers import parse_via
from limen.sip.message import Request, Response, parse_message
from limen.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteState,
    ClientNonInviteTransaction,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteState,
    ServerNonInviteTransaction,
    StrayResponse,
    Timer,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    client_transaction_key,
    create_cancel,
    create_non_2xx_ack,
    has_rfc3261_branch,
    new_branch,
    new_via,
    response_destination,
    server_match_key,
    stamp_received,
)

T = TypeVar("T")

RFC4475 = Path("/work/shared/testdata/rfc4475")

PHONE = ("192.0.2.10", 5060)
LOCAL_UDP = ("198.51.100.1", 5060)
UDP_SRC = Source(Transport.UDP, LOCAL_UDP, PHONE)
TCP_SRC = Source(Transport.TCP, LOCAL_UDP, ("192.0.2.10", 49152), conn_id=7)
UDP_DST = Destination(Transport.UDP, "203.0.113.5", 5060)
TCP_DST = Destination(Transport.TCP, "203.0.113.5", 5060, conn_id=3)


def sip(text: str) -> bytes:
    return text.lstrip("\n").replace("\n", "\r\n").encode()


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bK776asdhds",
    transport: str = "UDP",
    sent_by: str = "192.0.2.10:5060",
    via_params: str = ";rport",
    to_tag: str | None = None,
    cseq: int = 314159,
    cseq_method: str | None = None,
    routes: tuple[str, ...] = (),
    call_id: str = "a84b4c76e66710@pc33.atlanta.example.com",
) -> Request:
    to = "Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    route_lines = "".join(f"Route: {r}\n" for r in routes)
    text = f"""
{method} sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/{transport} {sent_by};branch={branch}{via_params}
{route_lines}Max-Forwards: 70
To: {to}
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: {call_id}
CSeq: {cseq} {cseq_method or method}
Contact: <sip:alice@192.0.2.10>
Content-Length: 0

"""
    msg = parse_message(sip(text))
    assert isinstance(msg, Request)
    return msg


def response_to(req: Request, status: int, to_tag: str | None = "a6c85cf") -> Response:
    """A response as the peer sends it: parsed from bytes, like the network would give."""
    resp = req.create_response(status, to_tag=to_tag if status > 100 else None)
    msg = parse_message(bytes(resp))
    assert isinstance(msg, Response)
    return msg


def sends(events: list[TransactionEvent]) -> list[SendMessage]:
    return [e for e in events if isinstance(e, SendMessage)]


def sent(events: list[TransactionEvent]) -> list[Request | Response]:
    return [e.message for e in sends(events)]


def statuses(events: list[TransactionEvent]) -> list[int]:
    return [m.status for m in sent(events) if isinstance(m, Response)]


def of_type(events: list[TransactionEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def run_until(txn_or_layer: TransactionLayer | ClientInviteTransaction, end: float) -> list[float]:
    """Step the clock deadline by deadline up to ``end``; return when something was sent."""
    times: list[float] = []
    while True:
        deadline = txn_or_layer.next_deadline()
        if deadline is None or deadline > end:
            return times
        events = txn_or_layer.handle_timers(deadline)
        if sends(events):
            times.append(deadline)


# --- timer configuration ----------------------------------------------------------------


def test_timer_values_per_rfc_table_4() -> None:
    cfg = TimerConfig()
    udp = {t: cfg.duration(t, reliable=False) for t in Timer}
    tcp = {t: cfg.duration(t, reliable=True) for t in Timer}
    assert udp == {
        Timer.A: 0.5,
        Timer.B: 32.0,
        Timer.D: 32.0,
        Timer.E: 0.5,
        Timer.F: 32.0,
        Timer.G: 0.5,
        Timer.H: 32.0,
        Timer.I: 5.0,
        Timer.J: 32.0,
        Timer.K: 5.0,
        Timer.L: 32.0,
        Timer.M: 32.0,
    }
    assert tcp == {
        Timer.A: None,
        Timer.B: 32.0,
        Timer.D: 0.0,
        Timer.E: None,
        Timer.F: 32.0,
        Timer.G: None,
        Timer.H: 32.0,
        Timer.I: 0.0,
        Timer.J: 0.0,
        Timer.K: 0.0,
        Timer.L: 32.0,
        Timer.M: 32.0,
    }


def test_timer_config_is_configurable_and_checked() -> None:
    cfg = TimerConfig(t1=0.1, t2=2.0, t4=3.0)
    assert cfg.duration(Timer.B, reliable=False) == pytest.approx(6.4)
    assert cfg.duration(Timer.K, reliable=False) == 3.0
    with pytest.raises(SipUsageError):
        TimerConfig(t1=0)
    with pytest.raises(SipUsageError):
        TimerConfig(t1=1.0, t2=0.5)


# --- INVITE client transaction (§17.1.1, RFC 6026) ----------------------------------------


def test_invite_client_udp_retransmits_with_timer_a_and_times_out_with_b() -> None:
    layer = TransactionLayer()
    invite = request()
    txn, events = layer.send_request(invite, UDP_DST, now=0.0)
    assert isinstance(txn, ClientInviteTransaction)
    assert [(e.message, e.destination, e.transaction) for e in sends(events)] == [
        (invite, UDP_DST, txn)
    ]
    assert txn.timer_deadline(Timer.A) == 0.5
    assert txn.timer_deadline(Timer.B) == 32.0
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert layer.next_deadline() == 32.0
    events = layer.handle_timers(32.0)
    assert events == [TransactionTimeout(txn, Timer.B), TransactionTerminated(txn)]
    assert txn.state is ClientInviteState.TERMINATED
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_invite_client_tcp_does_not_retransmit() -> None:
    layer = TransactionLayer()
    txn, events = layer.send_request(request(transport="TCP"), TCP_DST, now=10.0)
    assert len(sends(events)) == 1
    assert txn.timer_deadline(Timer.A) is None
    assert layer.next_deadline() == 42.0
    assert of_type(layer.handle_timers(42.0), TransactionTimeout) == [
        TransactionTimeout(txn, Timer.B)
    ]


def test_invite_client_provisional_stops_a_and_b() -> None:
    layer = TransactionLayer()
    invite = request()
    txn, _ = layer.send_request(invite, UDP_DST, now=0.0)
    layer.handle_timers(0.5)
    ringing = response_to(invite, 180)
    events = layer.receive(ringing, UDP_SRC, now=0.7)
    assert events == [ResponseReceived(txn, ringing, UDP_SRC)]
    assert txn.state is ClientInviteState.PROCEEDING
    assert layer.next_deadline() is None  # no A, and B only runs in Calling


def test_invite_client_acks_non_2xx_itself() -> None:
    layer = TransactionLayer()
    invite = request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    txn, _ = layer.send_request(invite, UDP_DST, now=0.0)
    busy = response_to(invite, 486)
    events = layer.receive(busy, UDP_SRC, now=1.0)
    # "ACK sent, resp. to TU" (RFC 6026 figure 3).
    assert len(events) == 2
    ack_event, to_tu = events
    assert to_tu == ResponseReceived(txn, busy, UDP_SRC)
    assert isinstance(ack_event, SendMessage)
    assert ack_event.destination == UDP_DST  # §17.1.1.3: where the INVITE went
    ack = parse_message(bytes(ack_event.message))
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(invite.uri)
    assert [str(v) for v in ack.via] == [str(invite.top_via)]  # one Via, same branch
    assert ack.top_via.branch == invite.top_via.branch
    assert [str(r) for r in ack.routes] == [str(r) for r in invite.routes]
    assert ack.to.tag == "a6c85cf"
    assert ack.from_tag == invite.from_tag
    assert ack.call_id == invite.call_id
    assert (ack.cseq.seq, ack.cseq.method) == (314159, "ACK")
    assert ack.max_forwards == 70
    assert ack.body == b""
    assert txn.state is ClientInviteState.COMPLETED
    assert txn.timer_deadline(Timer.D) == 33.0
    # A retransmitted final response gets the same ACK again and is not passed up.
    again = layer.receive(response_to(invite, 486), UDP_SRC, now=2.0)
    assert sent(again) == [ack_event.message]
    assert of_type(again, ResponseReceived) == []
    assert layer.handle_timers(33.0) == [TransactionTerminated(txn)]
    assert len(layer) == 0


def test_invite_client_non_2xx_over_tcp_terminates_at_once() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    txn, _ = layer.send_request(invite, TCP_DST, now=0.0)
    events = layer.receive(response_to(invite, 503), TCP_SRC, now=1.0)
    assert [type(e) for e in events] == [SendMessage, ResponseReceived, TransactionTerminated]
    assert txn.state is ClientInviteState.TERMINATED  # Timer D = 0
    assert len(layer) == 0


def test_invite_client_accepted_state_passes_every_2xx_then_timer_m() -> None:
    layer = TransactionLayer()
    invite = request()
    txn, _ = layer.send_request(invite, UDP_DST, now=0.0)
    ok = response_to(invite, 200)
    assert layer.receive(ok, UDP_SRC, now=2.0) == [ResponseReceived(txn, ok, UDP_SRC)]
    assert txn.state is ClientInviteState.ACCEPTED
    assert txn.timer_deadline(Timer.A) is None
    assert layer.next_deadline() == 34.0  # Timer M = 64*T1
    # RFC 6026 §8.4: retransmissions and 2xx from other forks still go to the TU.
    ok2 = response_to(invite, 200)
    forked = response_to(invite, 200, to_tag="other-fork")
    assert layer.receive(ok2, UDP_SRC, now=2.5) == [ResponseReceived(txn, ok2, UDP_SRC)]
    assert layer.receive(forked, UDP_SRC, now=2.6) == [ResponseReceived(txn, forked, UDP_SRC)]
    # Non-2xx are dropped in Accepted.
    assert layer.receive(response_to(invite, 486), UDP_SRC, now=3.0) == []
    assert layer.handle_timers(34.0) == [TransactionTerminated(txn)]
    # After Timer M the TU still sees 2xx retransmissions, as strays.
    late = response_to(invite, 200)
    assert layer.receive(late, UDP_SRC, now=40.0) == [StrayResponse(late, UDP_SRC)]


def test_invite_client_transport_error() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request(), UDP_DST, now=0.0)
    assert layer.transport_error(txn, now=0.1) == [TransportError(txn), TransactionTerminated(txn)]
    assert len(layer) == 0
    assert layer.next_deadline() is None


def test_late_timer_call_does_not_burst() -> None:
    # The clock jumped (a stalled loop): one retransmission, then Timer B, no burst.
    txn = ClientInviteTransaction(request(), UDP_DST, TimerConfig())
    txn.start(0.0)
    events = txn.handle_timers(40.0)
    assert [type(e) for e in events] == [SendMessage, TransactionTimeout, TransactionTerminated]


def test_machine_usable_without_layer() -> None:
    txn = ClientInviteTransaction(request(), UDP_DST, TimerConfig(t1=0.25))
    txn.start(100.0)
    assert txn.next_deadline() == 100.25
    assert run_until(txn, 115.0) == [100.25, 100.75, 101.75, 103.75, 107.75]
    with pytest.raises(SipUsageError):
        txn.start(200.0)


# --- non-INVITE client transaction (§17.1.2) -------------------------------------------------


def test_non_invite_client_timer_e_doubles_up_to_t2_then_f() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request("OPTIONS"), UDP_DST, now=0.0)
    assert isinstance(txn, ClientNonInviteTransaction)
    assert txn.timer_deadline(Timer.F) == 32.0
    assert run_until(layer, 31.9) == [
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    assert layer.handle_timers(32.0) == [
        TransactionTimeout(txn, Timer.F),
        TransactionTerminated(txn),
    ]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn, _ = layer.send_request(options, UDP_DST, now=0.0)
    layer.handle_timers(0.5)  # first retransmission; next due at 1.5
    trying = response_to(options, 100)
    assert layer.receive(trying, UDP_SRC, now=0.6) == [ResponseReceived(txn, trying, UDP_SRC)]
    assert txn.state is ClientNonInviteState.PROCEEDING
    assert run_until(layer, 14.0) == [1.5, 5.5, 9.5, 13.5]


def test_non_invite_client_final_then_timer_k() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn, _ = layer.send_request(options, UDP_DST, now=0.0)
    ok = response_to(options, 200)
    assert layer.receive(ok, UDP_SRC, now=0.2) == [ResponseReceived(txn, ok, UDP_SRC)]
    assert txn.state is ClientNonInviteState.COMPLETED
    assert layer.next_deadline() == 5.2  # Timer K = T4, E and F stopped
    assert layer.receive(response_to(options, 200), UDP_SRC, now=1.0) == []  # absorbed
    assert layer.handle_timers(5.2) == [TransactionTerminated(txn)]


def test_non_invite_client_tcp() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    layer.send_request(options, TCP_DST, now=0.0)
    assert layer.next_deadline() == 32.0  # only F
    events = layer.receive(response_to(options, 200), TCP_SRC, now=0.2)
    assert [type(e) for e in events] == [ResponseReceived, TransactionTerminated]  # K = 0


def test_non_invite_client_transport_error() -> None:
    txn = ClientNonInviteTransaction(request("OPTIONS"), UDP_DST, TimerConfig())
    txn.start(0.0)
    assert txn.transport_error(0.1) == [TransportError(txn), TransactionTerminated(txn)]
    assert txn.transport_error(0.2) == []


def test_send_request_checks() -> None:
    layer = TransactionLayer()
    with pytest.raises(SipUsageError):
        layer.send_request(request(branch="1234"), UDP_DST, 0.0)  # no magic cookie
    with pytest.raises(SipUsageError):
        layer.send_request(request("ACK"), UDP_DST, 0.0)
    layer.send_request(request("OPTIONS"), UDP_DST, 0.0)
    with pytest.raises(SipUsageError):
        layer.send_request(request("OPTIONS"), UDP_DST, 0.0)  # branch reused
    # The same branch with another method is another transaction (§17.1.3): CANCEL.
    layer.send_request(request("INVITE"), UDP_DST, 0.0)
    layer.send_request(create_cancel(request("INVITE")), UDP_DST, 0.0)
    assert len(layer) == 3


def test_client_matching_uses_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite = request()
    inv_txn, _ = layer.send_request(invite, UDP_DST, 0.0)
    layer.receive(response_to(invite, 180), UDP_SRC, 0.1)
    cancel = create_cancel(invite)
    cancel_txn, _ = layer.send_request(cancel, UDP_DST, 0.2)
    cancel_ok = response_to(cancel, 200)
    terminated = response_to(invite, 487)
    assert layer.receive(cancel_ok, UDP_SRC, 0.3)[0] == ResponseReceived(
        cancel_txn, cancel_ok, UDP_SRC
    )
    assert of_type(layer.receive(terminated, UDP_SRC, 0.4), ResponseReceived) == [
        ResponseReceived(inv_txn, terminated, UDP_SRC)
    ]
    stray = response_to(request(branch="z9hG4bKunknown"), 200)
    assert layer.receive(stray, UDP_SRC, 0.5) == [StrayResponse(stray, UDP_SRC)]
    assert client_transaction_key(invite) == ("z9hG4bK776asdhds", "INVITE")
    assert client_transaction_key(request("ACK")) == ("z9hG4bK776asdhds", "INVITE")


# --- INVITE server transaction (§17.2.1, RFC 6026) -----------------------------------------


def receive_new(
    layer: TransactionLayer, req: Request, source: Source, now: float
) -> RequestReceived:
    events = layer.receive(req, source, now)
    received = of_type(events, RequestReceived)
    assert len(received) == 1
    return received[0]


def test_invite_server_sends_100_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    events = layer.receive(invite, UDP_SRC, 0.0)
    assert len(events) == 2
    trying, received = events
    assert isinstance(received, RequestReceived)
    txn = received.transaction
    assert isinstance(txn, ServerInviteTransaction)
    assert received.request is invite and received.source == UDP_SRC
    assert isinstance(trying, SendMessage)
    assert isinstance(trying.message, Response) and trying.message.status == 100
    assert trying.message.to_tag is None
    assert trying.destination == Destination(Transport.UDP, *PHONE, local=UDP_SRC.local)
    assert txn.state is ServerInviteState.PROCEEDING
    # Retransmission: the last provisional again, nothing for the TU.
    again = layer.receive(request(), UDP_SRC, 0.5)
    assert sent(again) == [trying.message]
    assert of_type(again, RequestReceived) == []
    ringing = invite.create_response(180, to_tag="srv1")
    assert sent(layer.respond(txn, ringing, 1.0)) == [ringing]
    assert sent(layer.receive(request(), UDP_SRC, 1.5)) == [ringing]
    assert layer.next_deadline() is None  # nothing runs in Proceeding


def test_invite_server_without_auto_trying() -> None:
    layer = TransactionLayer(auto_trying=False)
    events = layer.receive(request(), UDP_SRC, 0.0)
    assert [type(e) for e in events] == [RequestReceived]
    assert layer.receive(request(), UDP_SRC, 0.5) == []  # absorbed, nothing to re-send


def test_invite_server_non_2xx_timer_g_and_h() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = receive_new(layer, invite, UDP_SRC, 0.0).transaction
    busy = invite.create_response(486, to_tag="srv1")
    assert sent(layer.respond(txn, busy, 0.0)) == [busy]
    assert txn.state is ServerInviteState.COMPLETED
    assert txn.timer_deadline(Timer.G) == 0.5
    assert txn.timer_deadline(Timer.H) == 32.0
    # G: T1, 2*T1, 4*T1, then capped at T2.
    assert run_until(layer, 31.9) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert layer.handle_timers(32.0) == [
        TransactionTimeout(txn, Timer.H),
        TransactionTerminated(txn),
    ]


def test_invite_server_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = receive_new(layer, invite, UDP_SRC, 0.0).transaction
    busy = invite.create_response(486, to_tag="srv1")
    layer.respond(txn, busy, 0.0)
    # Retransmitted INVITE in Completed: the final response again.
    assert sent(layer.receive(request(), UDP_SRC, 0.2)) == [busy]
    # The ACK for a non-2xx has the INVITE's branch: it is absorbed by the transaction.
    assert layer.receive(request("ACK", to_tag="srv1"), UDP_SRC, 0.3) == []
    assert txn.state is ServerInviteState.CONFIRMED
    assert txn.timer_deadline(Timer.G) is None
    assert layer.next_deadline() == 5.3  # Timer I = T4
    assert layer.receive(request("ACK", to_tag="srv1"), UDP_SRC, 1.0) == []
    assert layer.handle_timers(5.3) == [TransactionTerminated(txn)]


def test_invite_server_tcp() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    txn = receive_new(layer, invite, TCP_SRC, 0.0).transaction
    layer.respond(txn, invite.create_response(404, to_tag="x"), 0.0)
    assert txn.timer_deadline(Timer.G) is None  # no retransmissions
    assert layer.next_deadline() == 32.0  # Timer H still waits for the ACK
    events = layer.receive(request("ACK", transport="TCP", to_tag="x"), TCP_SRC, 0.1)
    assert events == [TransactionTerminated(txn)]  # Timer I = 0


def test_invite_server_accepted_state() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = receive_new(layer, invite, UDP_SRC, 0.0).transaction
    assert isinstance(txn, ServerInviteTransaction)
    ok = invite.create_response(200, to_tag="srv1")
    assert sent(layer.respond(txn, ok, 1.0)) == [ok]
    assert txn.state is ServerInviteState.ACCEPTED
    assert layer.next_deadline() == 33.0  # Timer L = 64*T1
    # RFC 6026: INVITE retransmissions are absorbed; the 2xx is re-sent by the TU only.
    assert layer.receive(request(), UDP_SRC, 1.5) == []
    assert sent(layer.respond(txn, ok, 1.5)) == [ok]
    with pytest.raises(SipUsageError):
        layer.respond(txn, invite.create_response(486, to_tag="srv1"), 2.0)
    # An ACK that matches the transaction in Accepted goes to the TU.
    same_branch_ack = request("ACK", to_tag="srv1")
    assert layer.receive(same_branch_ack, UDP_SRC, 2.0) == [
        AckReceived(same_branch_ack, UDP_SRC, txn)
    ]
    # The regular 2xx ACK has a new branch: it matches nothing and reaches the TU.
    ack = request("ACK", branch="z9hG4bKnewack", to_tag="srv1")
    assert layer.receive(ack, UDP_SRC, 2.1) == [AckReceived(ack, UDP_SRC, None)]
    assert layer.handle_timers(33.0) == [TransactionTerminated(txn)]
    assert len(layer) == 0


def test_invite_server_tcp_accepted_still_uses_timer_l() -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP")
    txn = receive_new(layer, invite, TCP_SRC, 0.0).transaction
    layer.respond(txn, invite.create_response(200, to_tag="t"), 0.0)
    assert layer.next_deadline() == 32.0


def test_invite_server_refuses_responses_after_final() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = receive_new(layer, invite, UDP_SRC, 0.0).transaction
    layer.respond(txn, invite.create_response(486, to_tag="a"), 0.0)
    with pytest.raises(SipUsageError, match="Completed"):
        layer.respond(txn, invite.create_response(200, to_tag="a"), 0.1)


def test_invite_server_transport_error_informs_tu_and_keeps_state() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = receive_new(layer, invite, UDP_SRC, 0.0).transaction
    layer.respond(txn, invite.create_response(486, to_tag="a"), 0.0)
    assert layer.transport_error(txn, 0.1) == [TransportError(txn)]
    assert txn.state is ServerInviteState.COMPLETED
    assert layer.next_deadline() == 0.5


# --- non-INVITE server transaction (§17.2.2) -----------------------------------------------


def test_non_invite_server_udp() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="srv1")
    txn = receive_new(layer, bye, UDP_SRC, 0.0).transaction
    assert isinstance(txn, ServerNonInviteTransaction)
    assert layer.receive(request("BYE", to_tag="srv1"), UDP_SRC, 0.5) == []  # Trying: absorbed
    ok = bye.create_response(200)
    assert sent(layer.respond(txn, ok, 1.0)) == [ok]
    assert txn.state is ServerNonInviteState.COMPLETED
    assert layer.next_deadline() == 33.0  # Timer J = 64*T1
    resent = layer.receive(request("BYE", to_tag="srv1"), UDP_SRC, 2.0)
    assert sent(resent) == [ok]
    with pytest.raises(SipUsageError):
        layer.respond(txn, bye.create_response(500), 2.0)
    assert layer.handle_timers(33.0) == [TransactionTerminated(txn)]


def test_non_invite_server_proceeding() -> None:
    layer = TransactionLayer()
    register = request("REGISTER")
    txn = receive_new(layer, register, UDP_SRC, 0.0).transaction
    trying = register.create_response(100)
    layer.respond(txn, trying, 0.0)
    assert txn.state is ServerNonInviteState.PROCEEDING
    assert sent(layer.receive(request("REGISTER"), UDP_SRC, 0.5)) == [trying]
    events = layer.transport_error(txn, 0.6)
    assert events == [TransportError(txn), TransactionTerminated(txn)]
    assert len(layer) == 0


def test_non_invite_server_tcp_timer_j_zero() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS", transport="TCP")
    txn = receive_new(layer, options, TCP_SRC, 0.0).transaction
    events = layer.respond(txn, options.create_response(200), 0.0)
    assert [type(e) for e in events] == [SendMessage, TransactionTerminated]
    assert sends(events)[0].destination == Destination(
        Transport.TCP, "192.0.2.10", 5060, conn_id=7, local=TCP_SRC.local
    )
    assert len(layer) == 0


# --- server matching (§17.2.3) ----------------------------------------------------------------


def test_server_matching_needs_same_sent_by_and_method() -> None:
    layer = TransactionLayer()
    receive_new(layer, request("OPTIONS"), UDP_SRC, 0.0)
    # Same branch, other sent-by: another transaction (§17.2.3).
    receive_new(layer, request("OPTIONS", sent_by="192.0.2.99:5060"), UDP_SRC, 0.1)
    # Same branch and sent-by, other method: another transaction.
    receive_new(layer, request("INFO"), UDP_SRC, 0.2)
    assert len(layer) == 3
    # Sent-by host compares case-insensitively.
    receive_new(layer, request("MESSAGE", sent_by="Host.Example.COM"), UDP_SRC, 0.3)
    assert layer.receive(request("MESSAGE", sent_by="host.example.com"), UDP_SRC, 0.4) == []


def test_cancel_matches_the_invite_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    inv_txn = receive_new(layer, invite, UDP_SRC, 0.0).transaction
    cancel = create_cancel(request())
    events = layer.receive(cancel, UDP_SRC, 1.0)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, CancelReceived)
    assert event.cancelled is inv_txn
    assert event.request is cancel
    cancel_txn = event.transaction
    assert cancel_txn is not inv_txn and cancel_txn.method == "CANCEL"
    # §9.2: 200 to the CANCEL, 487 to the INVITE.
    layer.respond(cancel_txn, cancel.create_response(200, to_tag="srv1"), 1.0)
    layer.respond(inv_txn, invite.create_response(487, to_tag="srv1"), 1.0)
    # A CANCEL retransmission gets the 200 again; the INVITE's ACK completes it.
    assert statuses(layer.receive(create_cancel(request()), UDP_SRC, 1.5)) == [200]
    assert layer.receive(request("ACK", to_tag="srv1"), UDP_SRC, 1.6) == []
    assert inv_txn.state is ServerInviteState.CONFIRMED


def test_cancel_without_matching_transaction() -> None:
    layer = TransactionLayer()
    events = layer.receive(create_cancel(request()), UDP_SRC, 0.0)
    assert [type(e) for e in events] == [CancelReceived]
    event = events[0]
    assert isinstance(event, CancelReceived)
    assert event.cancelled is None  # the TU answers 481 (§9.2)
    layer.respond(event.transaction, event.request.create_response(481), 0.0)


def test_cancel_of_non_invite_matches_too() -> None:
    layer = TransactionLayer()
    sub = receive_new(layer, request("SUBSCRIBE"), UDP_SRC, 0.0).transaction
    event = layer.receive(create_cancel(request("SUBSCRIBE")), UDP_SRC, 0.1)[0]
    assert isinstance(event, CancelReceived) and event.cancelled is sub


def test_create_cancel_per_9_1() -> None:
    invite = request(to_tag=None, routes=("<sip:p1.example.com;lr>",))
    cancel = parse_message(bytes(create_cancel(invite)))
    assert isinstance(cancel, Request)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(invite.uri)
    assert [str(v) for v in cancel.via] == [str(invite.top_via)]
    assert [str(r) for r in cancel.routes] == ["<sip:p1.example.com;lr>"]
    assert (cancel.cseq.seq, cancel.cseq.method) == (invite.cseq.seq, "CANCEL")
    assert str(cancel.to) == str(invite.to) and str(cancel.from_) == str(invite.from_)
    assert cancel.call_id == invite.call_id
    with pytest.raises(SipUsageError):
        create_cancel(request("ACK"))


def test_create_non_2xx_ack_requires_invite() -> None:
    options = request("OPTIONS")
    with pytest.raises(SipUsageError):
        create_non_2xx_ack(options, response_to(options, 404))


# --- RFC 2543 fallback (§17.2.3, RFC 4475 §3.2.1 and §3.4.1) --------------------------------


def load(name: str) -> Request:
    msg = parse_message((RFC4475 / name).read_bytes())
    assert isinstance(msg, Request)
    return msg


def test_inv2543_matched_with_rfc2543_rules() -> None:
    layer = TransactionLayer()
    invite = load("inv2543.dat")
    assert not has_rfc3261_branch(invite.top_via)
    assert server_match_key(invite)[0] == "2543"
    src = Source(Transport.UDP, LOCAL_UDP, ("192.0.2.5", 5060))
    received = receive_new(layer, invite, src, 0.0)
    txn = received.transaction
    assert isinstance(txn, ServerInviteTransaction) and not txn.rfc3261
    # The Via sent-by is a name: received= is stamped (§18.2.1); the response goes to
    # received and the sent-by port (5060 default), not to a name.
    assert received.request.top_via.received == "192.0.2.5"
    assert txn.destination == Destination(Transport.UDP, "192.0.2.5", 5060, local=LOCAL_UDP)
    # Retransmission (same bytes): absorbed, 100 re-sent.
    again = layer.receive(load("inv2543.dat"), src, 0.5)
    assert statuses(again) == [100]
    assert of_type(again, RequestReceived) == []
    # A CANCEL built the RFC 2543 way (same Request-URI, Call-ID, CSeq number, Via).
    cancel = parse_message(bytes(create_cancel(load("inv2543.dat"))))
    assert isinstance(cancel, Request)
    event = layer.receive(cancel, src, 0.6)[0]
    assert isinstance(event, CancelReceived) and event.cancelled is txn
    # Final response with our To tag; the ACK matches only with that To tag.
    layer.respond(txn, invite.create_response(486, to_tag="srv2543"), 1.0)
    ack_bytes = (
        (RFC4475 / "inv2543.dat")
        .read_bytes()
        .split(b"\r\n\r\n")[0]
        .replace(b"INVITE sip:", b"ACK sip:")
        .replace(b"CSeq: 56 INVITE", b"CSeq: 56 ACK")
        .replace(b"Content-Type: application/sdp\r\n", b"")
    )
    wrong = parse_message(
        ack_bytes.replace(b"user=phone\r\nCall", b"user=phone;tag=zz\r\nCall") + b"\r\n\r\n"
    )
    assert isinstance(wrong, Request) and wrong.to_tag == "zz"
    assert layer.receive(wrong, src, 1.1) == [AckReceived(wrong, src, None)]
    right = parse_message(
        ack_bytes.replace(b"user=phone\r\nCall", b"user=phone;tag=srv2543\r\nCall") + b"\r\n\r\n"
    )
    assert layer.receive(right, src, 1.2) == []
    assert txn.state is ServerInviteState.CONFIRMED


def test_badbranch_falls_back_to_rfc2543_matching() -> None:
    layer = TransactionLayer()
    options = load("badbranch.dat")
    assert options.top_via.branch == "z9hG4bK"
    assert not has_rfc3261_branch(options.top_via)
    first = receive_new(layer, options, UDP_SRC, 0.0).transaction
    assert not first.rfc3261
    layer.respond(first, options.create_response(200, to_tag="t"), 0.0)
    # A retransmission matches and gets the 200 again ...
    again = layer.receive(load("badbranch.dat"), UDP_SRC, 0.5)
    assert statuses(again) == [200]
    # ... but another request with the same bare-cookie branch is a new transaction,
    # which matching on the branch alone would have swallowed.
    other = parse_message(
        (RFC4475 / "badbranch.dat").read_bytes().replace(b"Call-ID: badbranch.", b"Call-ID: other.")
    )
    assert isinstance(other, Request)
    receive_new(layer, other, UDP_SRC, 0.6)


# --- §18.2.1 / §18.2.2 / RFC 3581 -----------------------------------------------------------


def test_stamp_received_rport_and_position() -> None:
    req = request(sent_by="10.0.0.2:5060", via_params=";rport")
    src = Source(Transport.UDP, LOCAL_UDP, ("192.0.2.44", 40000))
    assert stamp_received(req, src)
    via = req.top_via
    assert via.rport == 40000 and via.received == "192.0.2.44"
    assert via.branch == "z9hG4bK776asdhds"
    # The Via stays the first header line, and the message re-parses to the same.
    assert bytes(req).split(b"\r\n")[1].startswith(b"Via: SIP/2.0/UDP 10.0.0.2:5060;")
    assert str(parse_message(bytes(req)).top_via) == str(via)
    assert not stamp_received(req, src)  # idempotent


def test_stamp_received_rules() -> None:
    # sent-by is the source address and no rport: nothing to add (§18.2.1).
    req = request(sent_by="192.0.2.10:5060", via_params="")
    assert not stamp_received(req, UDP_SRC)
    assert req.top_via.received is None
    # rport present: received is added even when equal (RFC 3581 §4).
    req = request(sent_by="192.0.2.10:5060", via_params=";rport")
    assert stamp_received(req, UDP_SRC)
    assert req.top_via.received == "192.0.2.10" and req.top_via.rport == 5060
    # IPv6: equal addresses in other spellings are equal; received has no brackets.
    v6 = Source(Transport.UDP, ("2001:db8::1", 5060), ("2001:db8::9:1", 5060))
    req = request(sent_by="[2001:DB8:0::9:1]:5060", via_params="")
    assert not stamp_received(req, v6)
    req = request(sent_by="[2001:db8::2]", via_params="")
    assert stamp_received(req, v6)
    assert req.top_via.received == "2001:db8::9:1"


def test_stamp_received_with_several_vias() -> None:
    text = sip(
        """
OPTIONS sip:bob@example.com SIP/2.0
v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKu0
To: <sip:bob@example.com>
From: <sip:alice@example.com>;tag=1
Call-ID: several
CSeq: 1 OPTIONS
Content-Length: 0

"""
    )
    req = parse_message(text)
    assert isinstance(req, Request)
    stamp_received(req, UDP_SRC)
    assert [str(v) for v in req.via] == [
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1;received=192.0.2.10",
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1",
        "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKu0",
    ]
    assert bytes(req).split(b"\r\n")[1].startswith(b"Via: SIP/2.0/UDP proxy.example.com")
    # Several Via lines: the top one is replaced where it was.
    text2 = text.replace(b"v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, ", b"v: ")
    req2 = parse_message(text2)
    assert isinstance(req2, Request)
    stamp_received(req2, UDP_SRC)
    lines = bytes(req2).split(b"\r\n")
    assert lines[1] == b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu1;received=192.0.2.10"
    assert lines[2] == b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKu0"


def test_response_destination() -> None:
    nat = Source(Transport.UDP, LOCAL_UDP, ("203.0.113.9", 61000))
    # rport (stamped): back to the packet's source address and port (RFC 3581 §4).
    via = parse_via("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKa;rport=61000;received=203.0.113.9")
    assert response_destination(via, nat) == Destination(
        Transport.UDP, "203.0.113.9", 61000, local=LOCAL_UDP
    )
    # No rport: received + sent-by port (§18.2.2), default 5060.
    via = parse_via("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKa;received=203.0.113.9")
    assert response_destination(via, nat) == Destination(
        Transport.UDP, "203.0.113.9", 5062, local=LOCAL_UDP
    )
    via = parse_via("SIP/2.0/UDP host.example.com;branch=z9hG4bKa;received=203.0.113.9")
    assert response_destination(via, nat) == Destination(
        Transport.UDP, "203.0.113.9", 5060, local=LOCAL_UDP
    )
    # ... unless the policy forces rport for NATed UAs.
    forced = functools.partial(response_destination, force_rport=True)
    assert forced(via, nat) == Destination(Transport.UDP, "203.0.113.9", 61000, local=LOCAL_UDP)
    # sent-by is an IP and no received: the sent-by address.
    via = parse_via("SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bKa")
    assert response_destination(via, nat) == Destination(
        Transport.UDP, "203.0.113.9", 5070, local=LOCAL_UDP
    )
    # maddr wins on unreliable transports.
    via = parse_via("SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKa;maddr=239.255.255.1;rport=61000")
    assert response_destination(via, nat) == Destination(
        Transport.UDP, "239.255.255.1", 5060, local=LOCAL_UDP
    )
    # Reliable transport: the same connection; address fallback is received + sent-by port.
    tls = Source(Transport.TLS, ("198.51.100.1", 5061), ("203.0.113.9", 50123), conn_id=42)
    via = parse_via("SIP/2.0/TLS phone.invalid;branch=z9hG4bKa;received=203.0.113.9;rport=50123")
    assert response_destination(via, tls) == Destination(
        Transport.TLS, "203.0.113.9", 5061, conn_id=42, local=("198.51.100.1", 5061)
    )


def test_layer_sends_responses_where_18_2_2_says() -> None:
    layer = TransactionLayer()
    nat = Source(Transport.UDP, LOCAL_UDP, ("203.0.113.9", 61000))
    req = request("OPTIONS", sent_by="10.0.0.2:5060", via_params=";rport")
    txn = receive_new(layer, req, nat, 0.0).transaction
    response = req.create_response(200)
    assert response.top_via.rport == 61000  # the stamped Via is copied into the response
    [send] = sends(layer.respond(txn, response, 0.0))
    assert send.destination == Destination(Transport.UDP, "203.0.113.9", 61000, local=LOCAL_UDP)
    # Without rport, a NATed UA is answered at its sent-by port (RFC 3261 behaviour) ...
    req = request("OPTIONS", branch="z9hG4bKnorport", sent_by="10.0.0.2:5060", via_params="")
    txn = receive_new(layer, req, nat, 0.0).transaction
    [send] = sends(layer.respond(txn, req.create_response(200), 0.0))
    assert send.destination == Destination(Transport.UDP, "203.0.113.9", 5060, local=LOCAL_UDP)
    # ... or at its source port with the hook replaced.
    layer = TransactionLayer(
        response_destination=functools.partial(response_destination, force_rport=True)
    )
    req = request("OPTIONS", sent_by="10.0.0.2:5060", via_params="")
    txn = receive_new(layer, req, nat, 0.0).transaction
    assert txn.destination == Destination(Transport.UDP, "203.0.113.9", 61000, local=LOCAL_UDP)


def test_layer_without_stamping() -> None:
    layer = TransactionLayer(stamp_via=False)
    req = request("OPTIONS", sent_by="10.0.0.2:5060", via_params=";rport")
    receive_new(layer, req, UDP_SRC, 0.0)
    assert req.top_via.received is None


# --- helpers and the table ----------------------------------------------------------------------


def test_new_branch_and_via() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith("z9hG4bK") and len(b) > 7 for b in branches)
    via = new_via(Transport.TLS, "2001:db8::1", 5061)
    assert str(via).startswith("SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK")
    assert via.has_rport and has_rfc3261_branch(via)
    assert str(new_via(Transport.UDP, "192.0.2.1", None, branch="z9hG4bKx", rport=False)) == (
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"
    )


def test_layer_runs_many_transactions_in_deadline_order() -> None:
    layer = TransactionLayer()
    inv, _ = layer.send_request(request(branch="z9hG4bKinv"), UDP_DST, 0.0)
    opt, _ = layer.send_request(request("OPTIONS", branch="z9hG4bKopt"), UDP_DST, 0.2)
    srv = receive_new(layer, request("BYE", branch="z9hG4bKbye", to_tag="x"), UDP_SRC, 0.3)
    assert layer.next_deadline() == 0.5
    events = layer.handle_timers(0.7)
    assert [e.transaction for e in sends(events)] == [inv, opt]
    # Timers are reset when they fire (§17.1.1.2 "reset the timer with 2*T1"): a late
    # call shifts the schedule instead of bursting.
    assert inv.timer_deadline(Timer.A) == 1.7
    assert opt.timer_deadline(Timer.E) == 1.7
    layer.respond(srv.transaction, srv.request.create_response(200), 1.0)
    ok = response_to(opt.request, 200)
    layer.receive(ok, UDP_SRC, 1.0)
    # OPTIONS: K at 6.0; BYE server: J at 33.0; INVITE: A, B at 32.0.
    assert opt.timer_deadline(Timer.K) == 6.0
    assert len(layer) == 3
    layer.handle_timers(6.0)
    assert len(layer) == 2
    layer.handle_timers(33.0)
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer.client_transactions == [] and layer.server_transactions == []


# --- properties: random interleavings keep the machines on their RFC edges ------------------

CLIENT_INVITE_EDGES = {
    (ClientInviteState.CALLING, ClientInviteState.PROCEEDING),
    (ClientInviteState.CALLING, ClientInviteState.COMPLETED),
    (ClientInviteState.CALLING, ClientInviteState.ACCEPTED),
    (ClientInviteState.CALLING, ClientInviteState.TERMINATED),
    (ClientInviteState.PROCEEDING, ClientInviteState.COMPLETED),
    (ClientInviteState.PROCEEDING, ClientInviteState.ACCEPTED),
    (ClientInviteState.COMPLETED, ClientInviteState.TERMINATED),
    (ClientInviteState.ACCEPTED, ClientInviteState.TERMINATED),
}
SERVER_INVITE_EDGES = {
    (ServerInviteState.PROCEEDING, ServerInviteState.COMPLETED),
    (ServerInviteState.PROCEEDING, ServerInviteState.ACCEPTED),
    (ServerInviteState.COMPLETED, ServerInviteState.CONFIRMED),
    (ServerInviteState.COMPLETED, ServerInviteState.TERMINATED),
    (ServerInviteState.CONFIRMED, ServerInviteState.TERMINATED),
    (ServerInviteState.ACCEPTED, ServerInviteState.TERMINATED),
}

statuses_st = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 503, 603])


@settings(max_examples=300, deadline=None)
@given(
    reliable=st.booleans(),
    actions=st.lists(
        st.tuples(st.floats(min_value=0, max_value=8, allow_nan=False), statuses_st), max_size=12
    ),
)
def test_client_invite_random_interleavings(
    reliable: bool, actions: list[tuple[float, int]]
) -> None:
    layer = TransactionLayer()
    invite = request(transport="TCP" if reliable else "UDP")
    txn, events = layer.send_request(invite, TCP_DST if reliable else UDP_DST, 0.0)
    assert isinstance(txn, ClientInviteTransaction)
    now = 0.0
    invites_sent = len(sends(events))
    for step, status in actions:
        now += step
        before = txn.state
        events = layer.handle_timers(now) + layer.receive(response_to(invite, status), UDP_SRC, now)
        invites_sent += sum(1 for m in sent(events) if m is invite)
        if txn.state is not before:
            # Over TCP, Timer D = 0 passes through Completed within one call.
            collapsed = {(ClientInviteState.PROCEEDING, ClientInviteState.TERMINATED)}
            assert (before, txn.state) in CLIENT_INVITE_EDGES | (collapsed if reliable else set())
        # Non-2xx finals never reach the TU twice; ACKs only ever follow non-2xx.
        for m in sent(events):
            assert m is invite or (isinstance(m, Request) and m.method == "ACK")
    # RFC 3261 §17.1.1.2: at most 7 transmissions over UDP, 1 over TCP.
    assert invites_sent <= (1 if reliable else 7)
    # Whatever happened, the transaction is gone 64*T1 + Timer D later, except in
    # Proceeding, which waits for a final response (ending it is the TU's Timer C, §16.6).
    layer.handle_timers(now + 32.0 + 32.0)
    if txn.state is ClientInviteState.PROCEEDING:
        assert layer.next_deadline() is None
    else:
        assert txn.terminated and len(layer) == 0 and layer.next_deadline() is None


@settings(max_examples=300, deadline=None)
@given(
    reliable=st.booleans(),
    actions=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=8, allow_nan=False),
            st.one_of(statuses_st, st.sampled_from(["INVITE", "ACK", "ERROR"])),
        ),
        max_size=12,
    ),
)
def test_server_invite_random_interleavings(
    reliable: bool, actions: list[tuple[float, int | str]]
) -> None:
    layer = TransactionLayer()
    transport = "TCP" if reliable else "UDP"
    src = TCP_SRC if reliable else UDP_SRC
    invite = request(transport=transport)
    txn = receive_new(layer, invite, src, 0.0).transaction
    assert isinstance(txn, ServerInviteTransaction)
    now = 0.0
    for step, action in actions:
        now += step
        before = txn.state
        layer.handle_timers(now)
        if action == "INVITE":
            events = layer.receive(request(transport=transport), src, now)
            assert of_type(events, RequestReceived) == [] or txn.terminated
        elif action == "ACK":
            layer.receive(request("ACK", transport=transport, to_tag="t"), src, now)
        elif action == "ERROR":
            layer.transport_error(txn, now)
        else:
            assert isinstance(action, int)
            try:
                layer.respond(txn, invite.create_response(action, to_tag="t"), now)
            except SipUsageError:
                assert txn.state is not ServerInviteState.PROCEEDING
        if txn.state is not before and not (
            before is ServerInviteState.TERMINATED or (txn.terminated and action == "INVITE")
        ):
            assert (before, txn.state) in SERVER_INVITE_EDGES
    layer.handle_timers(now + 32.0 + 5.0)
    if txn.state is ServerInviteState.PROCEEDING:
        assert len(layer) >= 1  # waits for the TU, as §17.2.1 says
    else:
        assert txn.terminated and txn not in layer.server_transactions
