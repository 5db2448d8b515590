"""A finished call leaves no reference cycle behind (issue 13: RSS grew ~20 KB per call
over 100,000 calls because ended calls waited for the cyclic collector, which the
server's GC thresholds run rarely). On the manual clock: calls answered and hung up,
and calls refused by the PBX, then past the linger; the cyclic collector must find
nothing of them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from gw_manual import ICP, PBX, PHONE, SDP, ManualGateway
from test_gw_timers import ack_for, bye_from_phone

from limen.sip import Request, Response
from limen.sip.dialog import new_tag


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def phone_invite(gw: ManualGateway, n: int) -> Request:
    invite = Request(
        "INVITE",
        "sip:3001@203.0.113.10",
        [
            ("Via", f"SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-inv-{n};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:7000@203.0.113.10>;tag={new_tag()}"),
            ("To", "<sip:3001@203.0.113.10>"),
            ("Call-ID", f"memory-{n}@192.168.1.5"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:7000@192.168.1.5:5060>"),
            ("Content-Type", "application/sdp"),
        ],
        SDP,
    )
    gw.receive(invite, PHONE)
    return invite


def last(gw: ManualGateway, host: str, since: int, what: str | int) -> Request | Response:
    for _, message, dest in reversed(gw.wire.sent[since:]):
        if dest.host != host:
            continue
        if isinstance(message, Request) and message.method == what:
            return message
        if isinstance(message, Response) and message.status == what:
            return message
    raise AssertionError(f"no {what} sent to {host}")


def with_branch(request: Request, branch: str) -> Request:
    request.set("Via", f"SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-{branch};rport")
    return request


def answered_and_hung_up(gw: ManualGateway, n: int) -> None:
    since = len(gw.wire.sent)
    invite = phone_invite(gw, n)
    relayed = last(gw, ICP.address, since, "INVITE")
    assert isinstance(relayed, Request)
    gw.pbx_answers(relayed, 200, tag=f"pbx-{n}", body=SDP)
    ok = last(gw, PHONE.remote[0], since, 200)
    assert isinstance(ok, Response)
    gw.receive(with_branch(ack_for(invite, ok), f"ack-{n}"), PHONE)
    gw.advance(gw.elapsed + 1)
    gw.receive(with_branch(bye_from_phone(invite, ok), f"bye-{n}"), PHONE)
    bye = last(gw, ICP.address, since, "BYE")
    assert isinstance(bye, Request)
    gw.receive(bye.create_response(200), PBX)


def refused(gw: ManualGateway, n: int) -> None:
    since = len(gw.wire.sent)
    phone_invite(gw, n)
    relayed = last(gw, ICP.address, since, "INVITE")
    assert isinstance(relayed, Request)
    gw.pbx_answers(relayed, 486, tag=f"pbx-{n}")


def test_finished_calls_leave_no_cycles(no_gc: None) -> None:
    gw = ManualGateway()
    options = gw.ctx.directory.options
    gw.ctx.directory.options = options.model_copy(
        update={"max_call_attempts_per_minute": 0, "max_calls_per_device": 0}
    )
    answered_and_hung_up(gw, 0)  # first use: module-level caches, lazily built tables
    gw.advance(gw.elapsed + 100)
    gw.wire.sent.clear()
    gc.collect()
    for n in range(1, 21):
        answered_and_hung_up(gw, n)
        refused(gw, 100 + n)
    assert gw.calls.active_calls == 0
    gw.advance(gw.elapsed + 100)  # past every transaction's end and the calls' linger
    assert gw.calls._legs == {}
    gw.wire.sent.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = sorted({type(o).__qualname__ for o in gc.garbage})[:12]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert found == 0, f"{found} objects in cycles after 40 calls: {kinds}"
