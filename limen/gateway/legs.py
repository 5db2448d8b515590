"""The two user-agent legs of a call, as sans-IO state machines, and the call that pairs them.

A :class:`Leg` is one side of a call: our dialog with the phone (set side) or with the PBX
(ICP side), with its own Call-ID, tags, CSeq and route set. It consumes the SIP events of
its side and emits *call events*, neutral of SIP's transaction details (in the spirit of
Sippy's ``CCEvents``):

========================  ===================================================
SIP on the leg            call event
========================  ===================================================
initial request           :class:`Try` (the controller's, from the router's route)
1xx (101-199)             :class:`Ring` (``early_media`` when it carries SDP)
2xx                       :class:`Connect`
3xx-6xx                   :class:`Fail`
re-INVITE, UPDATE         :class:`Update`
REFER                     :class:`Refer`
BYE                       :class:`Disconnect`
INFO, MESSAGE, NOTIFY ..  :class:`Info`
Timer C (§16.6 item 11)   :class:`NoAnswer`
no ACK for our 2xx        :class:`NoAck` (past 64*T1, RFC 6026 §8.1)
2xx retransmission due    :class:`Resend` (T1 doubling to T2, §13.3.1.4)
========================  ===================================================

Each event keeps the :class:`Forward` it belongs to (the request received on one leg and
sent on the other: both transactions) and the SIP message, whose end-to-end header fields
the other leg copies (a B2BUA that hides topology still relays Session-Expires, Allow,
bodies of INFO ...). The :class:`~limen.gateway.calls.CallController` maps the events of
one leg onto the other and holds the policy.

Deadlines are data: a leg's :meth:`Leg.next_deadline` is the earliest of its Timer C (on
requests it sent) and 2xx retransmission (on responses it sent); :meth:`Leg.handle_timers`
turns the due ones into events. The controller arms one timer per call on the stack's
clock for the earlier of its two legs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from limen.gateway.context import Side
from limen.gateway.policy import DIALOG_METHODS, is_sdp
from limen.sip.addressing import Destination, Transport
from limen.sip.dialog import Dialog
from limen.sip.digest import DigestClient
from limen.sip.message import Request, Response

if TYPE_CHECKING:
    from limen.gateway.offeranswer import OfferAnswer
    from limen.gateway.timers import TimerHandle
    from limen.sip.transaction import ClientTransaction, ServerTransaction
    from limen.store.schemas import DeviceCredentials

log = logging.getLogger("limen.gateway.calls")


class CallState(Enum):
    TRYING = "trying"  # initial request relayed, nothing back yet
    EARLY = "early"  # a provisional relayed
    CONFIRMED = "confirmed"  # 2xx relayed
    ENDED = "ended"


@dataclass(eq=False, slots=True)
class Forward:
    """A request received on one leg and sent on the other: the two transactions, and
    the state of that exchange (offer in it, auth rounds, Timer C, 2xx retransmission)."""

    call: Call
    source_leg: Leg
    target_leg: Leg
    server_txn: ServerTransaction
    request: Request  # as received
    out: Request  # as sent (the last attempt)
    client_txn: ClientTransaction | None = None
    provisional: bool = False  # a 1xx arrived (CANCEL may go now, §9.1)
    final_sent: bool = False
    answered: Response | None = None  # the 2xx relayed (INVITE)
    ack: Request | None = None  # our ACK on the target leg (INVITE 2xx)
    offer_in_request: bool = False
    auth: DigestClient | None = None  # the ICP's challenges to this request
    plain_retry: bool = False  # our SRTP offer was refused; sent again as plain RTP/AVP
    cancel_pending: bool = False
    timer_c_at: float | None = None  # Timer C's deadline (target leg)
    retransmit_at: float | None = None  # the next 2xx retransmission (source leg)
    retransmit_interval: float = 0.0
    retransmit_t2: float = 4.0
    give_up_at: float = 0.0  # 64*T1 after the 2xx: no ACK by then ends the call
    failed_over: list[Destination] = field(default_factory=list)  # ICP targets that failed

    def stop_timer_c(self) -> None:
        self.timer_c_at = None

    def stop_retransmit(self) -> None:
        self.retransmit_at = None


# --- call events ------------------------------------------------------------------------------


@dataclass(slots=True)
class Try:
    """An initial request: a new call, subscription, or out-of-dialog transaction."""

    forward: Forward


@dataclass(slots=True)
class Ring:
    """A provisional response (101-199); ``early_media`` when it carries SDP."""

    forward: Forward
    response: Response
    early_media: bool


@dataclass(slots=True)
class Connect:
    """A 2xx: the request succeeded (for the initial INVITE: the call is answered)."""

    forward: Forward
    response: Response


@dataclass(slots=True)
class Fail:
    """A final failure (300-699) from the leg the request was sent on."""

    forward: Forward
    response: Response


@dataclass(slots=True)
class Update:
    """A session change inside the dialog: re-INVITE or UPDATE (RFC 3311)."""

    leg: Leg
    request: Request


@dataclass(slots=True)
class Refer:
    """A transfer request (RFC 3515)."""

    leg: Leg
    request: Request


@dataclass(slots=True)
class Info:
    """Any other in-dialog request relayed end to end: INFO, MESSAGE, NOTIFY, PRACK,
    SUBSCRIBE refreshes."""

    leg: Leg
    request: Request


@dataclass(slots=True)
class Disconnect:
    """The leg's side hung up (BYE)."""

    leg: Leg
    request: Request


@dataclass(slots=True)
class NoAnswer:
    """Timer C fired on the request this forward sent (§16.6 item 11)."""

    forward: Forward


@dataclass(slots=True)
class NoAck:
    """Our 2xx was retransmitted for 64*T1 without an ACK (§13.3.1.4)."""

    forward: Forward


@dataclass(slots=True)
class Resend:
    """Send our 2xx again (the leg's unreliable transport, no ACK yet)."""

    forward: Forward


ResponseEvent = Ring | Connect | Fail
RequestEvent = Update | Refer | Info | Disconnect
TimerEvent = NoAnswer | NoAck | Resend
CallEvent = Try | ResponseEvent | RequestEvent | TimerEvent


# --- the legs --------------------------------------------------------------------------------


@dataclass(eq=False)
class Leg:
    """One user-agent leg: our dialog with the phone or with the PBX."""

    side: Side
    call: Call
    call_id: str
    local_tag: str
    destination: Destination
    is_uas: bool  # we received this leg's initial request
    dialog: Dialog | None = None
    peer: Leg | None = None

    @property
    def transport(self) -> Transport:
        return self.destination.transport

    # -- requests the leg's side sent us ------------------------------------------------------
    def receive_request(self, request: Request) -> RequestEvent | int:
        """An in-dialog request: its call event, or the status refusing it (§12.2.2)."""
        assert self.dialog is not None
        refused = self.dialog.receive_request(request)
        if refused is not None:
            return refused
        method = request.method
        if method == "BYE":
            return Disconnect(self, request)
        if method in ("INVITE", "UPDATE"):
            return Update(self, request)
        if method == "REFER":
            return Refer(self, request)
        return Info(self, request)

    # -- responses to what we sent on the leg -------------------------------------------------
    def receive_response(
        self, forward: Forward, response: Response, now: float, timer_c: float
    ) -> ResponseEvent | None:
        """A response (101-699) to ``forward``'s request. None: a provisional while a
        CANCEL waits for one (§9.1: the controller cancels now)."""
        status = response.status
        if status < 200:
            forward.provisional = True
            if forward.cancel_pending:
                return None
            if forward.timer_c_at is not None and forward.out.method == "INVITE":
                forward.timer_c_at = now + timer_c  # restarted by each provisional
        self._update_dialog(forward, response)
        if status >= 300:
            return Fail(forward, response)
        if status < 200:
            return Ring(forward, response, is_sdp(response))
        return Connect(forward, response)

    def _update_dialog(self, forward: Forward, response: Response) -> None:
        """Dialog state of this leg from a response to what we sent on it."""
        status = response.status
        creating = forward is forward.call.initial and forward.out.method in DIALOG_METHODS
        if creating and 101 <= status < 300 and response.to_tag is not None:
            dialog = self.dialog
            if dialog is None or (dialog.early and dialog.remote_tag != response.to_tag):
                self.dialog = Dialog.from_uac(forward.out, response)
            else:
                dialog.receive_response(forward.out, response)
        elif self.dialog is not None:
            self.dialog.receive_response(forward.out, response)

    # -- deadlines ----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """Timer C of the requests sent on this leg, retransmission of our 2xx on it."""
        earliest: float | None = None
        for fwd in self.call.forwards:
            due = fwd.timer_c_at if fwd.target_leg is self else None
            if due is not None and (earliest is None or due < earliest):
                earliest = due
            due = fwd.retransmit_at if fwd.source_leg is self else None
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def handle_timers(self, now: float) -> list[TimerEvent]:
        """The events of the deadlines due at ``now``."""
        events: list[TimerEvent] = []
        for fwd in list(self.call.forwards):
            if fwd.target_leg is self and fwd.timer_c_at is not None and fwd.timer_c_at <= now:
                fwd.timer_c_at = None
                events.append(NoAnswer(fwd))
            due = fwd.retransmit_at
            if fwd.source_leg is self and due is not None and due <= now:
                events.append(self._retransmission(fwd, now))
        return events

    def start_retransmit(self, forward: Forward, now: float, t1: float, t2: float) -> None:
        """Our 2xx to this leg's INVITE: again at T1 doubling to T2 until the ACK, for
        64*T1 (§13.3.1.4); only on an unreliable transport (§17.2.1)."""
        if self.transport.reliable:
            return
        forward.retransmit_interval = t1
        forward.retransmit_t2 = t2
        forward.give_up_at = now + 64 * t1
        forward.retransmit_at = now + t1

    @staticmethod
    def _retransmission(forward: Forward, now: float) -> NoAck | Resend:
        if now >= forward.give_up_at:
            forward.retransmit_at = None
            return NoAck(forward)
        forward.retransmit_interval = min(2 * forward.retransmit_interval, forward.retransmit_t2)
        forward.retransmit_at = now + forward.retransmit_interval
        return Resend(forward)


@dataclass(eq=False)
class Call:
    """Two legs and what is in flight between them."""

    key: str
    kind: str  # the initial method: INVITE, SUBSCRIBE, REFER, MESSAGE ...
    device: DeviceCredentials
    media: OfferAnswer  # the call's offer/answer, the one owner of the pending offer
    a: Leg | None = None  # the leg the initial request came in on
    b: Leg | None = None
    state: CallState = CallState.TRYING
    initial: Forward | None = None
    forwards: list[Forward] = field(default_factory=list)
    started: float = field(default_factory=time.time)  # epoch seconds, for the API
    admitted: str | None = None  # the ICP guid it was counted under (call admission)
    timer: TimerHandle | None = None  # the stack timer at the legs' next deadline
    timer_callback: Callable[[], object] | None = None  # what that timer runs
    log: CallLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = CallLog(log, {"call": self.key, "leg": "-"})

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def legs(self) -> tuple[Leg, ...]:
        return tuple(leg for leg in (self.a, self.b) if leg is not None)

    def dispose(self) -> None:
        """Break the call's reference cycles (call ⇄ legs ⇄ peer, call ⇄ forwards ⇄ their
        client transactions' callbacks) once it is forgotten, so reference counting frees
        it at once: left to the cyclic collector, ~150 objects per call wait for a full
        collection, which the server's raised GC thresholds make rare (RSS grew ~20 KB
        per call over 100,000 calls)."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        self.timer_callback = None
        for leg in self.legs():
            leg.peer = None
        for fwd in self.forwards:
            fwd.client_txn = None
            fwd.auth = None
        self.forwards.clear()
        self.initial = None
        self.a = self.b = None

    def next_deadline(self) -> float | None:
        """The earlier of its legs' next deadlines (each forward's Timer C belongs to its
        target leg, its 2xx retransmission to its source leg: one pass covers both)."""
        earliest: float | None = None
        for fwd in self.forwards:
            due = fwd.timer_c_at
            if due is not None and (earliest is None or due < earliest):
                earliest = due
            due = fwd.retransmit_at
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        return earliest

    def invite_cseq(self) -> int | None:
        """The CSeq of the initial INVITE as we sent it (RAck translation, RFC 3262)."""
        fwd = self.initial
        return fwd.out.cseq.seq if fwd is not None and fwd.out.method == "INVITE" else None

    def reinvite_pending(self) -> bool:
        """A re-INVITE relayed and not answered yet (glare, RFC 3261 §14.2)."""
        return any(
            f.out.method == "INVITE" and not f.final_sent and f is not self.initial
            for f in self.forwards
        )


class CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Per-call log lines: ``[call key leg] message`` (STYLE.md: Call-ID, leg)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra.get('call')}] {msg}", kwargs


__all__ = [
    "Call",
    "CallEvent",
    "CallLog",
    "CallState",
    "Connect",
    "Disconnect",
    "Fail",
    "Forward",
    "Info",
    "Leg",
    "NoAck",
    "NoAnswer",
    "Refer",
    "Resend",
    "Ring",
    "Try",
    "Update",
]
