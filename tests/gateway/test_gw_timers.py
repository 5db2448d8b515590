"""The gateway's timers on a manual clock: Timer C, ICP unreachable (Timer B), 2xx
retransmission until the ACK, linger, registration refresh, keepalive rounds.

Each test drives the real stack, gateway and call controller (tests/gateway/gw_manual.py)
and asserts the exact instant something happens, and that nothing happens a moment
before. The same behaviours over real sockets with Kamailio and SIPp are in
test_gw_call_kamailio.py and test_gw_feat_more.py.
"""

from __future__ import annotations

import pytest
from gw_manual import DEVICE, PBX, PHONE, SDP, START, ManualGateway, requests, statuses

from limen.gateway.keepalive import Keepalive
from limen.gateway.timers import Timers
from limen.gateway.upstream import UpstreamRegistrar
from limen.sip import Request, Response

EPS = 1e-6


# --- the scheduler itself -----------------------------------------------------------------


def test_timers_fire_in_order_at_their_deadline_and_cancel() -> None:
    now = [10.0]
    timers = Timers(lambda: now[0])
    fired: list[str] = []
    timers.later(2.0, lambda: fired.append("b"))
    first = timers.at(11.0, lambda: fired.append("a"))
    dropped = timers.later(1.5, lambda: fired.append("x"))
    dropped.cancel()
    assert timers.next_deadline() == 11.0
    assert timers.handle_timers(10.999) == 0 and fired == []
    # A callback that raises is contained; one scheduled while running and due runs too.
    timers.at(11.0, lambda: 1 / 0)
    timers.at(11.0, lambda: timers.at(11.0, lambda: fired.append("c")))
    assert timers.handle_timers(11.0) == 4
    assert fired == ["a", "c"] and timers.failures == 1
    first.cancel()  # spent: harmless
    assert timers.next_deadline() == 12.0
    timers.handle_timers(12.0)
    assert fired == ["a", "c", "b"] and timers.next_deadline() is None


# --- calls ----------------------------------------------------------------------------------


def test_timer_c_after_the_last_provisional_answers_408_and_cancels() -> None:
    """RFC 3261 §16.6 item 11: Timer C (here 180 s) runs from the INVITE and restarts at
    each provisional; when it fires the caller gets 408 and the PBX a CANCEL."""
    gw = ManualGateway(timer_c=180.0)
    gw.phone_invite()
    assert statuses(gw.to_phone()) == [(0.0, 100)]
    invite = gw.relayed_invite()
    gw.receive(invite.create_response(100), PBX)
    gw.advance(60.0)
    gw.pbx_answers(invite, 180, tag="pbx-1")
    assert statuses(gw.to_phone()) == [(0.0, 100), (60.0, 180)]
    gw.advance(240.0 - EPS)
    assert [s for _, s in statuses(gw.to_phone())] == [100, 180]
    assert requests(gw.to_pbx(), "CANCEL") == []
    gw.advance(240.0)
    assert statuses(gw.to_phone())[-1] == (240.0, 408)
    assert requests(gw.to_pbx(), "CANCEL") == [240.0]
    assert gw.calls.active_calls == 0


def test_icp_unreachable_503_with_retry_after_at_timer_b() -> None:
    """No answer from the ICP: the INVITE is retransmitted at T1 doubling (§17.1.1.2)
    and at Timer B (64*T1) the caller gets 503 with Retry-After."""
    gw = ManualGateway(timer_c=180.0, t1=0.5)
    gw.phone_invite()
    gw.advance(32.0 - EPS)
    assert requests(gw.to_pbx(), "INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [s for _, s in statuses(gw.to_phone())] == [100]
    gw.advance(32.0)
    final = [m for _, m in gw.to_phone() if isinstance(m, Response)][-1]
    assert (final.status, gw.elapsed) == (503, 32.0)
    assert final.get("Retry-After") == "30"
    assert gw.calls.active_calls == 0 and gw.calls.calls_failed == 1


def answered_call(gw: ManualGateway) -> tuple[Request, Request]:
    """A call from the phone answered 200 by the PBX at t=1 s (the phone has not ACKed)."""
    phone_invite = gw.phone_invite()
    invite = gw.relayed_invite()
    gw.advance(1.0)
    gw.pbx_answers(invite, 200, tag="pbx-1", body=SDP)
    return phone_invite, invite


def test_2xx_retransmitted_t1_doubling_to_t2_then_ack_and_bye_on_both_legs() -> None:
    """RFC 3261 §13.3.1.4, RFC 6026 §8.1: our 200 to a phone that never ACKs goes out
    again at T1, 2*T1, 4*T1 then every T2; past 64*T1 the call ends: the PBX's 200 is
    ACKed, then both legs get a BYE."""
    gw = ManualGateway(t1=0.5, t2=4.0)
    answered_call(gw)
    gw.advance(36.5 - EPS)
    oks = [t for t, s in statuses(gw.to_phone()) if s == 200]
    # Sent at 1 s, then 1 + [0.5, 1.5, 3.5, 7.5, 11.5, ..., 31.5].
    assert oks == [1.0, 1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert requests(gw.to_phone(), "BYE") == [] and requests(gw.to_pbx(), "BYE") == []
    gw.advance(36.5)  # the first retransmission instant at or past 1 + 64*T1
    assert requests(gw.to_pbx(), "ACK") == [36.5]
    assert requests(gw.to_pbx(), "BYE") == [36.5] and requests(gw.to_phone(), "BYE") == [36.5]
    ack_at = [i for i, (_, m) in enumerate(gw.to_pbx()) if isinstance(m, Request)]
    methods = [gw.to_pbx()[i][1].method for i in ack_at]  # type: ignore[union-attr]
    assert methods[-2:] == ["ACK", "BYE"]  # ACK first (§13.2.2.4), then BYE


def test_2xx_retransmission_stops_at_the_ack() -> None:
    gw = ManualGateway(t1=0.5, t2=4.0)
    phone_invite, _ = answered_call(gw)
    gw.advance(2.0)
    ok = next(m for _, m in gw.to_phone() if isinstance(m, Response) and m.status == 200)
    gw.receive(ack_for(phone_invite, ok), PHONE)
    assert requests(gw.to_pbx(), "ACK") == [2.0]
    sent = len(gw.wire.sent)
    gw.advance(60.0)
    assert [m for _, m in gw.to_phone(since=sent) if isinstance(m, Response)] == []
    assert gw.calls.active_calls == 1


def test_a_finished_call_lingers_32_s_for_late_2xx_retransmissions() -> None:
    """After the BYE the call stays known for LINGER (32 s): a late retransmission of
    the PBX's 200 is ACKed again; after it, the call is forgotten."""
    gw = ManualGateway(t1=0.5, t2=4.0)
    phone_invite, invite = answered_call(gw)
    ok = next(m for _, m in gw.to_phone() if isinstance(m, Response) and m.status == 200)
    gw.receive(ack_for(phone_invite, ok), PHONE)
    gw.advance(10.0)
    gw.receive(bye_from_phone(phone_invite, ok), PHONE)  # the call ends at 10 s
    assert gw.calls.active_calls == 0
    gw.advance(42.0 - EPS)
    gw.pbx_answers(invite, 200, tag="pbx-1", body=SDP)
    assert requests(gw.to_pbx(), "ACK")[-1] == pytest.approx(42.0)
    acks = len(requests(gw.to_pbx(), "ACK"))
    gw.advance(42.0)
    assert gw.calls._legs == {}
    gw.pbx_answers(invite, 200, tag="pbx-1", body=SDP)
    assert len(requests(gw.to_pbx(), "ACK")) == acks  # not ours any more


# --- registration side ----------------------------------------------------------------------


class LowRng:
    """The low end of every jitter range (refresh at 80 % of the granted time)."""

    def uniform(self, low: float, high: float) -> float:
        return low


def test_upstream_registration_and_its_refresh_at_their_deadlines() -> None:
    gw = ManualGateway()
    up = UpstreamRegistrar(gw.ctx, rng=LowRng())  # type: ignore[arg-type]
    up.bind(DEVICE, "tok", delay=5.0)
    gw.advance(5.0 - EPS)
    assert requests(gw.to_pbx(), "REGISTER") == []
    gw.advance(5.0)
    assert requests(gw.to_pbx(), "REGISTER") == [5.0]
    register = next(m for _, m in gw.to_pbx() if isinstance(m, Request))
    gw.receive(register.create_response(200, headers=[("Expires", "600")]), PBX)
    gw.advance(5.0 + 480.0 - EPS)  # refreshed at 80 % of the 600 s granted
    assert requests(gw.to_pbx(), "REGISTER") == [5.0]
    gw.advance(5.0 + 480.0)
    assert requests(gw.to_pbx(), "REGISTER") == [5.0, 485.0]
    up.close()


def test_keepalive_rounds_every_tick_on_the_stack_clock() -> None:
    gw = ManualGateway()
    keepalive = Keepalive(gw.ctx, gw.registrar, tick=1.0)
    rounds: list[float] = []

    def due(now: float) -> list[object]:
        rounds.append(now - START)
        return []

    keepalive.due = due  # type: ignore[method-assign,assignment]
    keepalive.start()
    gw.advance(3.5)
    assert rounds == [1.0, 2.0, 3.0]


# --- helpers ----------------------------------------------------------------------------------


def ack_for(invite: Request, ok: Response) -> Request:
    return Request(
        "ACK",
        "sip:10.0.0.1:5060",
        [
            ("Via", "SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-phone-ack;rport"),
            ("Max-Forwards", "70"),
            ("From", invite.get("From")),
            ("To", ok.get("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} ACK"),
        ],
    )


def bye_from_phone(invite: Request, ok: Response) -> Request:
    return Request(
        "BYE",
        "sip:10.0.0.1:5060",
        [
            ("Via", "SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-phone-bye;rport"),
            ("Max-Forwards", "70"),
            ("From", invite.get("From")),
            ("To", ok.get("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq + 1} BYE"),
        ],
    )
