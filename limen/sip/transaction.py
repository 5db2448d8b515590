"""SIP transactions: RFC 3261 §17 with the RFC 6026 corrections, sans-IO.

Implemented here:

- §17.1.1 INVITE client transaction, with RFC 6026 §8.4 ("Accepted" state, Timer M):
  2xx responses (first and retransmitted) go to the TU, which sends the ACK itself.
  The ACK for a non-2xx final response is built here (§17.1.1.3).
- §17.1.2 non-INVITE client transaction (Timers E, F, K).
- §17.2.1 INVITE server transaction, with RFC 6026 §7.1 / §8.5-§8.7 ("Accepted" state,
  Timer L): after a 2xx, retransmitted INVITEs are absorbed and ACKs reach the TU; 2xx
  retransmission (§13.3.1.4) stays the TU's job.
- §17.2.2 non-INVITE server transaction (Timer J).
- §17.1.3 / §17.2.3 matching, including the RFC 2543 fallback of §17.2.3; §9.1 CANCEL
  construction and §9.2 CANCEL matching.
- §18.2.1 + RFC 3581 §4 (``received`` / ``rport`` on the top Via of a received request)
  and §18.2.2 + RFC 3581 §4 (where a response goes).

Nothing here reads a clock or touches a socket: every entry point takes ``now`` (seconds,
any monotonic origin) and returns events; :class:`SendMessage` events are the bytes to
write, in order. ``next_deadline()`` says when to call ``handle_timers(now)`` next
(after aioquic's ``get_timer`` / ``handle_timer``).

Deviations, written down where they happen (after kamailio's ``t_lookup.c``):

- A Via branch that is *only* the magic cookie (``z9hG4bK``, RFC 4475 §3.2.1) is not
  unique, so it is matched with the RFC 2543 rules instead of as an RFC 3261 branch.
- A timer the RFC sets to zero on reliable transports (D, I, J, K) is not scheduled at
  all: the transaction terminates in the same call.
- The INVITE server transaction sends 100 Trying at once when the layer is built with
  ``auto_trying`` (the default) instead of waiting 200 ms to see whether the TU answers
  (§17.2.1 allows both; answering at once stops retransmissions sooner and needs no
  extra timer).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import ClassVar, Final

from limen.sip.addressing import Destination, Source, Transport, bracket
from limen.sip.errors import SipParseError, SipUsageError
from limen.sip.grammar import Params
from limen.sip.headers import MAGIC_COOKIE, Via
from limen.sip.message import Request, Response

logger = logging.getLogger(__name__)

__all__ = [
    "AckReceived",
    "CancelReceived",
    "ClientInviteState",
    "ClientInviteTransaction",
    "ClientNonInviteState",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "RequestReceived",
    "ResponseReceived",
    "SendMessage",
    "ServerInviteState",
    "ServerInviteTransaction",
    "ServerNonInviteState",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "StrayResponse",
    "Timer",
    "TimerConfig",
    "Transaction",
    "TransactionEvent",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
    "client_transaction_key",
    "create_cancel",
    "create_non_2xx_ack",
    "has_rfc3261_branch",
    "new_branch",
    "new_via",
    "response_destination",
    "server_match_key",
    "stamp_received",
]

DEFAULT_MAX_FORWARDS: Final = 70


# --- timers ------------------------------------------------------------------------------


class Timer(StrEnum):
    """The transaction timers, named as in RFC 3261 table 4 and RFC 6026 §8.11."""

    A = "A"  # INVITE request retransmit interval (unreliable only)
    B = "B"  # INVITE transaction timeout
    D = "D"  # wait for response retransmissions (client INVITE, Completed)
    E = "E"  # non-INVITE request retransmit interval (unreliable only)
    F = "F"  # non-INVITE transaction timeout
    G = "G"  # INVITE response retransmit interval (server, Completed, unreliable only)
    H = "H"  # wait for ACK receipt (server INVITE, Completed)
    I = "I"  # noqa: E741 - the RFC's name; wait for ACK retransmissions (Confirmed)
    J = "J"  # wait for non-INVITE request retransmissions (server, Completed)
    K = "K"  # wait for response retransmissions (client non-INVITE, Completed)
    L = "L"  # RFC 6026: wait for INVITE retransmissions (server, Accepted)
    M = "M"  # RFC 6026: wait for 2xx retransmissions (client, Accepted)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2, T4 (RFC 3261 §17.1.1.1, table 4) and the timers derived from them.

    ``d`` is Timer D on unreliable transports: "at least 32 seconds" (§17.1.1.2), long
    enough to absorb the server's retransmissions of its final response (Timer H).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0 and self.d >= 0):
            raise SipUsageError(f"inconsistent timer configuration {self!r}")

    def duration(self, timer: Timer, *, reliable: bool) -> float | None:
        """Initial value of ``timer``; None where the RFC does not start it at all
        (retransmission timers A, E, G on reliable transports, §17.1.1.2 / §17.1.2.2 /
        §17.2.1), 0.0 where it says "zero seconds for reliable transports"."""
        t1 = self.t1
        if timer in (Timer.A, Timer.E, Timer.G):
            return None if reliable else t1
        if timer in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
            return 64 * t1
        if timer is Timer.D:
            return 0.0 if reliable else self.d
        if timer is Timer.J:
            return 0.0 if reliable else 64 * t1
        # I and K: T4 on unreliable transports, zero on reliable ones.
        return 0.0 if reliable else self.t4


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Write ``message`` to ``destination``. ``transaction`` is the one that sent it (None
    for messages sent outside transactions); report a failure with ``transport_error``."""

    message: Request | Response
    destination: Destination
    transaction: Transaction | None = None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission) created ``transaction``; the TU answers it
    through :meth:`TransactionLayer.respond`."""

    transaction: ServerTransaction
    request: Request
    source: Source


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A new CANCEL (§9.2). ``transaction`` is the CANCEL's own server transaction (the TU
    answers 200 on it, or 481 when ``cancelled`` is None); ``cancelled`` is the server
    transaction the CANCEL matched, whose request the TU ends with 487 if it has not sent
    a final response yet."""

    transaction: ServerNonInviteTransaction
    request: Request
    source: Source
    cancelled: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for the TU: one that matched no transaction (the ACK for a 2xx is a
    transaction of its own, §17) or one received in the Accepted state (RFC 6026 §7.1).
    ``transaction`` is the INVITE server transaction it matched, if any."""

    request: Request
    source: Source
    transaction: ServerInviteTransaction | None = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response the client transaction passes to the TU (provisional, final, and for
    INVITE every 2xx including retransmissions, RFC 6026 §8.4)."""

    transaction: ClientTransaction
    response: Response
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matched no client transaction (§18.1.2 / RFC 6026 §7.1.1). A UA
    core must still see 2xx retransmissions to INVITE after Timer M, to re-send its ACK."""

    response: Response
    source: Source


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F or H fired: the transaction failed (the TU acts as on a 408)."""

    transaction: Transaction
    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send a message of ``transaction`` (§17.1.4, §17.2.4)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """``transaction`` reached Terminated and left the table (§17.1.1.2: destroyed at once)."""

    transaction: Transaction


TransactionEvent = (
    SendMessage
    | RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportError
    | TransactionTerminated
)


# --- identifiers -------------------------------------------------------------------------


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie + 96 random bits (§8.1.1.7). Lower-case hex,
    so that peers that (wrongly) compare branches case-insensitively agree with us."""
    return MAGIC_COOKIE + secrets.token_hex(12)


def new_via(
    transport: Transport,
    host: str,
    port: int | None,
    *,
    branch: str | None = None,
    rport: bool = True,
) -> Via:
    """A Via for a request we originate: our sent-by, a new branch, and an empty ``rport``
    (RFC 3581 §3) so that answers come back through NATs."""
    host = bracket(host)  # RFC 5118 §4.5: IPv6 references in sent-by are bracketed.
    items: list[tuple[str, str | None]] = [("branch", branch or new_branch())]
    if rport:
        items.append(("rport", None))
    return Via(transport.via_name, host, port, Params(tuple(items)))


def has_rfc3261_branch(via: Via) -> bool:
    """True when the branch can identify a transaction (§17.2.3): it carries the magic
    cookie *and something after it*. RFC 4475 §3.2.1 (``badbranch``) shows a branch that
    is only the cookie; such a request is matched with the RFC 2543 rules."""
    return via.rfc3261_branch


def client_transaction_key(message: Request | Response) -> tuple[str, str]:
    """§17.1.3: top Via branch + CSeq method; an ACK belongs to its INVITE."""
    method = message.cseq.method
    if method == "ACK":
        method = "INVITE"
    return (message.top_via.branch or "", method)


def _via_key(via: Via) -> tuple[object, ...]:
    return (via.protocol, via.transport, via.host.lower(), via.port, via.params)


def server_match_key(request: Request) -> tuple[object, ...]:
    """The part of §17.2.3's matching rules that does not depend on the method.

    RFC 3261 branch: (branch, sent-by). RFC 2543 fallback: (Request-URI, From tag,
    Call-ID, CSeq number, top Via). The method, and for the fallback the To tag, are
    compared per transaction (:meth:`ServerTransaction.matches`) because ACK and CANCEL
    match transactions of another method, and an ACK's To tag is that of our response.
    Compute it *before* :func:`stamp_received` changes the top Via.
    """
    via = request.top_via
    if has_rfc3261_branch(via):
        return ("3261", via.branch, via.host.lower(), via.port)
    return (
        "2543",
        str(request.uri),
        request.from_tag,
        request.call_id,
        request.cseq.seq,
        _via_key(via),
    )


# --- addressing ----------------------------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def stamp_received(request: Request, source: Source) -> bool:
    """Add ``received`` (RFC 3261 §18.2.1) and fill ``rport`` (RFC 3581 §4) on the top Via
    of a request we received. Returns True if the Via changed.

    ``received`` is added when sent-by is a domain name or an address other than the
    packet's source; with ``rport`` present it is added in any case (RFC 3581 §4).
    """
    via = request.top_via
    src_host, src_port = source.remote
    src_ip = _ip(src_host)
    params = via.params
    if via.has_rport:
        params = params.with_("rport", str(src_port))
    if via.has_rport or src_ip is None or _ip(via.host) != src_ip:
        params = params.with_("received", str(src_ip) if src_ip is not None else src_host)
    if params == via.params:
        return False
    _replace_top_via(request, str(via.with_params(params)))
    return True


def _replace_top_via(request: Request, value: str) -> None:
    lines = request.get_all("via")
    if len(lines) == 1:
        # One Via line (possibly with several comma-separated values): ``set`` rewrites
        # it in place. pop_first + add(first=True) would move it to the end of the header
        # section when it was the only Via value.
        rest = request.values("via")[1:]
        request.set("Via", ", ".join([value, *rest]))
    else:
        request.pop_first("via")
        request.add("Via", value, first=True)


def _default_port(transport: Transport) -> int:
    return 5061 if transport is Transport.TLS else 5060


def response_destination(via: Via, source: Source, *, force_rport: bool = False) -> Destination:
    """Where a response to a request with top Via ``via`` (already stamped by
    :func:`stamp_received`) goes: RFC 3261 §18.2.2 with RFC 3581 §4.

    - Reliable transports: back over the connection the request came on (``conn_id``);
      the address is the fallback for a closed connection: ``received`` and the sent-by
      port (§18.2.2, first bullet).
    - ``maddr`` (an IP literal): that address, sent-by port (§18.2.2, second bullet).
    - ``rport`` (RFC 3581 §4), or ``force_rport`` (NATed UAs that do not ask for it):
      the source address and port of the request.
    - Otherwise ``received`` (or the sent-by address) and the sent-by port (§18.2.2,
      third and fourth bullets). A sent-by domain name without ``received`` cannot occur
      after stamping; without stamping we use the packet's source address rather than
      resolve names in the core (RFC 3263 §5 belongs to the transport layer).
    """
    transport = source.transport
    src_host, src_port = source.remote
    port = via.port if via.port is not None else _default_port(transport)
    if transport.reliable:
        host = via.received or src_host
        return Destination(transport, host.strip("[]"), port, source.conn_id, source.local)
    maddr = via.maddr
    if maddr is not None and _ip(maddr) is not None:
        return Destination(transport, maddr.strip("[]"), port, source.conn_id, source.local)
    if via.has_rport or force_rport:
        return Destination(transport, src_host, src_port, source.conn_id, source.local)
    received = via.received
    if received is not None:
        return Destination(transport, received.strip("[]"), port, source.conn_id, source.local)
    if _ip(via.host) is not None:
        return Destination(transport, via.host.strip("[]"), port, source.conn_id, source.local)
    return Destination(transport, src_host, port, source.conn_id, source.local)


# --- requests the transaction layer builds --------------------------------------------------


def _hop_fields(request: Request) -> list[tuple[str, str]]:
    """Top Via, the Route fields and Max-Forwards of ``request``: the part that an ACK for a
    non-2xx (§17.1.1.3) and a CANCEL (§9.1) copy from the request."""
    fields: list[tuple[str, str]] = [("Via", request.values("via")[0])]
    fields.extend((f.name, f.value) for f in request.fields if f.key == "route")
    max_forwards = request.max_forwards
    fields.append(
        ("Max-Forwards", str(max_forwards if max_forwards is not None else DEFAULT_MAX_FORWARDS))
    )
    return fields


def _require(message: Request | Response, name: str) -> str:
    value = message.get(name)
    if value is None:
        raise SipParseError(f"missing {name}")
    return value


def create_non_2xx_ack(invite: Request, response: Response) -> Request:
    """The ACK the INVITE client transaction sends for a 300-699 response (§17.1.1.3):
    Request-URI, Call-ID, From, top Via (same branch) and Route of the INVITE, the To of
    the response (with its tag), CSeq number of the INVITE with method ACK, no body."""
    if invite.method != "INVITE":
        raise SipUsageError(f"ACK is for INVITE, not {invite.method}")
    fields = _hop_fields(invite)
    fields.extend(
        [
            ("From", _require(invite, "from")),
            ("To", _require(response, "to")),
            ("Call-ID", _require(invite, "call-id")),
            ("CSeq", f"{invite.cseq.seq} ACK"),
        ]
    )
    return Request("ACK", invite.uri, fields)


def create_cancel(request: Request) -> Request:
    """A CANCEL for ``request`` (§9.1): same Request-URI, Call-ID, From, To (tags
    included), CSeq number, top Via (so the same branch) and Route; method CANCEL.

    The caller sends it with :meth:`TransactionLayer.send_request` to the destination of
    the request's client transaction, and only after a provisional response (§9.1).
    """
    if request.method in ("ACK", "CANCEL"):
        raise SipUsageError(f"{request.method} cannot be cancelled")
    fields = _hop_fields(request)
    fields.extend(
        [
            ("From", _require(request, "from")),
            ("To", _require(request, "to")),
            ("Call-ID", _require(request, "call-id")),
            ("CSeq", f"{request.cseq.seq} CANCEL"),
        ]
    )
    return Request("CANCEL", request.uri, fields)


# --- the state machines ---------------------------------------------------------------------


class ClientInviteState(Enum):
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"  # RFC 6026 §8.4
    TERMINATED = "Terminated"


class ClientNonInviteState(Enum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class ServerInviteState(Enum):
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026 §7.1
    TERMINATED = "Terminated"


class ServerNonInviteState(Enum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


Events = list[TransactionEvent]


class Transaction:
    """What the four machines share: the request, the timers, the destination."""

    request: Request
    destination: Destination
    config: TimerConfig
    reliable: bool
    # Each machine narrows this to its own enum (one per machine, as in the RFC figures)
    # and names that enum's Terminated state.
    state: ClientInviteState | ClientNonInviteState | ServerInviteState | ServerNonInviteState
    _TERMINATED: ClassVar[
        ClientInviteState | ClientNonInviteState | ServerInviteState | ServerNonInviteState
    ]

    def __init__(self, request: Request, destination: Destination, config: TimerConfig) -> None:
        self.request = request
        self.destination = destination
        self.config = config
        self.reliable = destination.transport.reliable
        self._timers: dict[Timer, float] = {}
        self._interval = 0.0  # current value of the retransmission timer (A, E or G)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def branch(self) -> str | None:
        return self.request.top_via.branch

    @property
    def terminated(self) -> bool:
        return self.state is self._TERMINATED

    @property
    def state_name(self) -> str:
        return str(self.state.value)

    # -- timers ------------------------------------------------------------------------
    def timer_deadline(self, timer: Timer) -> float | None:
        """When ``timer`` fires, or None if it is not running."""
        return self._timers.get(timer)

    def next_deadline(self) -> float | None:
        return min(self._timers.values(), default=None)

    def handle_timers(self, now: float) -> Events:
        """Fire every timer due at ``now``, earliest first."""
        events: Events = []
        while self._timers:
            timer, deadline = min(self._timers.items(), key=lambda item: item[1])
            if deadline > now:
                break
            del self._timers[timer]
            events.extend(self._fire(timer, now))
        return events

    def _start(self, timer: Timer, now: float, duration: float | None = None) -> None:
        if duration is None:
            duration = self.config.duration(timer, reliable=self.reliable)
        if duration is not None:
            self._timers[timer] = now + duration

    def _start_retransmit(self, timer: Timer, now: float) -> None:
        initial = self.config.duration(timer, reliable=self.reliable)
        if initial is not None:
            self._interval = initial
            self._timers[timer] = now + initial

    def _cancel(self, *timers: Timer) -> None:
        for timer in timers:
            self._timers.pop(timer, None)

    def _fire(self, timer: Timer, now: float) -> Events:
        raise NotImplementedError

    def _send(self, message: Request | Response) -> SendMessage:
        return SendMessage(message, self.destination, self)

    def cancel_timers(self) -> None:
        """Stop every timer and end the transaction without an event (the layer's
        :meth:`TransactionLayer.respond_stateless`)."""
        self._timers.clear()
        self._set_terminated()

    def _terminate(self, events: Events) -> Events:
        self._timers.clear()
        self._set_terminated()
        events.append(TransactionTerminated(self))
        return events

    def _set_terminated(self) -> None:
        self.state = self._TERMINATED

    def transport_error(self, now: float) -> Events:
        """The transport failed to send one of this transaction's messages."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state_name}>"


class ClientTransaction(Transaction):
    """Client side (§17.1): sends the request, retransmits it, matches responses."""

    last_response: Response | None

    def __init__(self, request: Request, destination: Destination, config: TimerConfig) -> None:
        super().__init__(request, destination, config)
        if not has_rfc3261_branch(request.top_via):
            raise SipUsageError("a client transaction needs an RFC 3261 branch in the top Via")
        self.key = client_transaction_key(request)
        self.last_response = None

    def start(self, now: float) -> Events:
        """Send the request and start the timers."""
        raise NotImplementedError

    def receive_response(
        self, response: Response, now: float, source: Source | None = None
    ) -> Events:
        raise NotImplementedError

    def _to_tu(self, response: Response, source: Source | None) -> ResponseReceived:
        self.last_response = response
        return ResponseReceived(self, response, source)


class ClientInviteTransaction(ClientTransaction):
    """§17.1.1 (figure 5) as corrected by RFC 6026 §8.4 (figure 3)."""

    state: ClientInviteState
    _TERMINATED = ClientInviteState.TERMINATED

    def __init__(self, request: Request, destination: Destination, config: TimerConfig) -> None:
        if request.method != "INVITE":
            raise SipUsageError(f"INVITE client transaction for {request.method}")
        super().__init__(request, destination, config)
        self.state = ClientInviteState.CALLING
        self.ack: Request | None = None

    def start(self, now: float) -> Events:
        if self.state is not ClientInviteState.CALLING or self._timers:
            raise SipUsageError("transaction already started")
        # §17.1.1.2: Timer A (unreliable only) and Timer B start with the INVITE.
        self._start_retransmit(Timer.A, now)
        self._start(Timer.B, now)
        return [self._send(self.request)]

    def receive_response(
        self, response: Response, now: float, source: Source | None = None
    ) -> Events:
        state = self.state
        status = response.status
        S = ClientInviteState
        if state in (S.CALLING, S.PROCEEDING):
            if status < 200:
                # §17.1.1.2: no more retransmissions in Proceeding, and Timer B only
                # applies to Calling (the TU's Timer C, if any, takes over).
                self.state = S.PROCEEDING
                self._cancel(Timer.A, Timer.B)
                return [self._to_tu(response, source)]
            if status < 300:
                # RFC 6026 §8.4: Accepted, so that 2xx retransmissions still match.
                self.state = S.ACCEPTED
                self._cancel(Timer.A, Timer.B)
                self._start(Timer.M, now)
                return [self._to_tu(response, source)]
            self.state = S.COMPLETED
            self._cancel(Timer.A, Timer.B)
            self.ack = create_non_2xx_ack(self.request, response)
            events: Events = [self._send(self.ack), self._to_tu(response, source)]
            duration = self.config.duration(Timer.D, reliable=self.reliable)
            if not duration:
                return self._terminate(events)
            self._start(Timer.D, now, duration)
            return events
        if state is S.COMPLETED and status >= 300 and self.ack is not None:
            # §17.1.1.2: retransmitted final response → ACK again, not passed to the TU.
            return [self._send(self.ack)]
        if state is S.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.4: every 2xx goes to the TU, which ACKs it (it may come from
            # another fork: a new dialog).
            return [self._to_tu(response, source)]
        logger.debug("%r: dropping %r", self, response)
        return []

    def _fire(self, timer: Timer, now: float) -> Events:
        S = ClientInviteState
        if timer is Timer.A and self.state is S.CALLING:
            # §17.1.1.2: retransmit and double the interval (no T2 cap for INVITE).
            self._interval *= 2
            self._timers[Timer.A] = now + self._interval
            return [self._send(self.request)]
        if timer is Timer.B and self.state is S.CALLING:
            return self._terminate([TransactionTimeout(self, Timer.B)])
        if (timer is Timer.D and self.state is S.COMPLETED) or (
            timer is Timer.M and self.state is S.ACCEPTED
        ):
            return self._terminate([])
        return []

    def transport_error(self, now: float) -> Events:
        # RFC 6026 figure 3: Calling and Completed send messages; the others send nothing.
        if self.state in (ClientInviteState.CALLING, ClientInviteState.COMPLETED):
            return self._terminate([TransportError(self)])
        return []


class ClientNonInviteTransaction(ClientTransaction):
    """§17.1.2 (figure 6)."""

    state: ClientNonInviteState
    _TERMINATED = ClientNonInviteState.TERMINATED

    def __init__(self, request: Request, destination: Destination, config: TimerConfig) -> None:
        if request.method in ("INVITE", "ACK"):
            raise SipUsageError(f"non-INVITE client transaction for {request.method}")
        super().__init__(request, destination, config)
        self.state = ClientNonInviteState.TRYING

    def start(self, now: float) -> Events:
        if self.state is not ClientNonInviteState.TRYING or self._timers:
            raise SipUsageError("transaction already started")
        self._start_retransmit(Timer.E, now)
        self._start(Timer.F, now)
        return [self._send(self.request)]

    def receive_response(
        self, response: Response, now: float, source: Source | None = None
    ) -> Events:
        S = ClientNonInviteState
        if self.state in (S.TRYING, S.PROCEEDING):
            if response.status < 200:
                self.state = S.PROCEEDING
                return [self._to_tu(response, source)]
            self.state = S.COMPLETED
            self._cancel(Timer.E, Timer.F)
            events: Events = [self._to_tu(response, source)]
            duration = self.config.duration(Timer.K, reliable=self.reliable)
            if not duration:
                return self._terminate(events)
            self._start(Timer.K, now, duration)
            return events
        # Completed: response retransmissions are absorbed (§17.1.2.2).
        return []

    def _fire(self, timer: Timer, now: float) -> Events:
        S = ClientNonInviteState
        if timer is Timer.E and self.state in (S.TRYING, S.PROCEEDING):
            # §17.1.2.2: doubling up to T2 in Trying; T2 flat in Proceeding.
            if self.state is S.TRYING:
                self._interval = min(2 * self._interval, self.config.t2)
            else:
                self._interval = self.config.t2
            self._timers[Timer.E] = now + self._interval
            return [self._send(self.request)]
        if timer is Timer.F and self.state in (S.TRYING, S.PROCEEDING):
            return self._terminate([TransactionTimeout(self, Timer.F)])
        if timer is Timer.K and self.state is S.COMPLETED:
            return self._terminate([])
        return []

    def transport_error(self, now: float) -> Events:
        if self.state in (ClientNonInviteState.TRYING, ClientNonInviteState.PROCEEDING):
            return self._terminate([TransportError(self)])
        return []


class ServerTransaction(Transaction):
    """Server side (§17.2): absorbs request retransmissions, sends the TU's responses."""

    last_response: Response | None

    def __init__(
        self,
        request: Request,
        source: Source,
        destination: Destination,
        config: TimerConfig,
        match_key: tuple[object, ...] | None = None,
    ) -> None:
        super().__init__(request, destination, config)
        self.source = source
        self.match_key = match_key if match_key is not None else server_match_key(request)
        self.rfc3261 = self.match_key[0] == "3261"
        self.last_response = None
        self._request_to_tag = request.to_tag

    @property
    def response_to_tag(self) -> str | None:
        """To tag of the last response sent (an RFC 2543 ACK must carry it, §17.2.3)."""
        return None if self.last_response is None else self.last_response.to_tag

    def matches(self, request: Request, *, cancel_target: bool = False) -> bool:
        """Method and To tag rules of §17.2.3 for a request with the same match key.

        ``cancel_target``: is this the transaction a CANCEL cancels (§9.2: any method but
        CANCEL and ACK)? Otherwise: is ``request`` a retransmission of ours, or its ACK?
        """
        method = request.method
        if cancel_target:
            if self.method in ("CANCEL", "ACK"):
                return False
        elif method == "ACK":
            if self.method != "INVITE":
                return False
            # RFC 2543: the ACK carries the To tag of the response we sent.
            return self.rfc3261 or request.to_tag == self.response_to_tag
        elif method != self.method:
            return False
        return self.rfc3261 or request.to_tag == self._request_to_tag

    def receive_request(self, request: Request, now: float) -> Events:
        """A retransmission of the request: re-send the last response, if any."""
        raise NotImplementedError

    def send_response(self, response: Response, now: float) -> Events:
        raise NotImplementedError

    def _resend_last(self) -> Events:
        return [] if self.last_response is None else [self._send(self.last_response)]

    def _refuse(self, response: Response) -> SipUsageError:
        return SipUsageError(
            f"cannot send {response.status} on {self.method} server transaction "
            f"in state {self.state_name}"
        )


class ServerInviteTransaction(ServerTransaction):
    """§17.2.1 (figure 7) as corrected by RFC 6026 §7.1 (figure 5)."""

    state: ServerInviteState
    _TERMINATED = ServerInviteState.TERMINATED

    def __init__(
        self,
        request: Request,
        source: Source,
        destination: Destination,
        config: TimerConfig,
        match_key: tuple[object, ...] | None = None,
    ) -> None:
        if request.method != "INVITE":
            raise SipUsageError(f"INVITE server transaction for {request.method}")
        super().__init__(request, source, destination, config, match_key)
        self.state = ServerInviteState.PROCEEDING

    def receive_request(self, request: Request, now: float) -> Events:
        # Proceeding: re-send the last provisional; Completed: the final response.
        # Accepted (RFC 6026 §7.1) and Confirmed: absorbed; 2xx retransmission is the TU's.
        if self.state in (ServerInviteState.PROCEEDING, ServerInviteState.COMPLETED):
            return self._resend_last()
        return []

    def receive_ack(self, request: Request, now: float, source: Source | None = None) -> Events:
        S = ServerInviteState
        if self.state is S.COMPLETED:
            # §17.2.1: Confirmed; Timer I absorbs ACK retransmissions.
            self.state = S.CONFIRMED
            self._cancel(Timer.G, Timer.H)
            duration = self.config.duration(Timer.I, reliable=self.reliable)
            if not duration:
                return self._terminate([])
            self._start(Timer.I, now, duration)
            return []
        if self.state is S.ACCEPTED:
            # RFC 6026 §7.1: an ACK matching the transaction in Accepted goes to the TU.
            return [AckReceived(request, source if source is not None else self.source, self)]
        return []

    def send_response(self, response: Response, now: float) -> Events:
        S = ServerInviteState
        status = response.status
        if self.state is S.PROCEEDING:
            self.last_response = response
            if status < 200:
                return [self._send(response)]
            if status < 300:
                self.state = S.ACCEPTED
                self._start(Timer.L, now)
                return [self._send(response)]
            self.state = S.COMPLETED
            self._start_retransmit(Timer.G, now)
            self._start(Timer.H, now)
            return [self._send(response)]
        if self.state is S.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.5: 2xx from the TU (its own retransmissions, §13.3.1.4) are
            # passed to the transport.
            self.last_response = response
            return [self._send(response)]
        raise self._refuse(response)

    def _fire(self, timer: Timer, now: float) -> Events:
        S = ServerInviteState
        if timer is Timer.G and self.state is S.COMPLETED and self.last_response is not None:
            # §17.2.1: MIN(2*T1, T2), then doubling up to T2.
            self._interval = min(2 * self._interval, self.config.t2)
            self._timers[Timer.G] = now + self._interval
            return [self._send(self.last_response)]
        if timer is Timer.H and self.state is S.COMPLETED:
            return self._terminate([TransactionTimeout(self, Timer.H)])
        if (timer is Timer.I and self.state is S.CONFIRMED) or (
            timer is Timer.L and self.state is S.ACCEPTED
        ):
            return self._terminate([])
        return []

    def transport_error(self, now: float) -> Events:
        # RFC 6026 figure 5: the TU is informed and the state does not change (Timer H or
        # L still ends the transaction).
        if self.state in (
            ServerInviteState.PROCEEDING,
            ServerInviteState.COMPLETED,
            ServerInviteState.ACCEPTED,
        ):
            return [TransportError(self)]
        return []


class ServerNonInviteTransaction(ServerTransaction):
    """§17.2.2 (figure 8)."""

    state: ServerNonInviteState
    _TERMINATED = ServerNonInviteState.TERMINATED

    def __init__(
        self,
        request: Request,
        source: Source,
        destination: Destination,
        config: TimerConfig,
        match_key: tuple[object, ...] | None = None,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise SipUsageError(f"non-INVITE server transaction for {request.method}")
        super().__init__(request, source, destination, config, match_key)
        self.state = ServerNonInviteState.TRYING

    def receive_request(self, request: Request, now: float) -> Events:
        # Trying: absorbed (nothing sent yet); Proceeding / Completed: re-send.
        return self._resend_last()

    def send_response(self, response: Response, now: float) -> Events:
        S = ServerNonInviteState
        if self.state not in (S.TRYING, S.PROCEEDING):
            raise self._refuse(response)
        self.last_response = response
        events: Events = [self._send(response)]
        if response.status < 200:
            self.state = S.PROCEEDING
            return events
        self.state = S.COMPLETED
        duration = self.config.duration(Timer.J, reliable=self.reliable)
        if not duration:
            return self._terminate(events)
        self._start(Timer.J, now, duration)
        return events

    def _fire(self, timer: Timer, now: float) -> Events:
        if timer is Timer.J and self.state is ServerNonInviteState.COMPLETED:
            return self._terminate([])
        return []

    def transport_error(self, now: float) -> Events:
        if self.state in (ServerNonInviteState.PROCEEDING, ServerNonInviteState.COMPLETED):
            return self._terminate([TransportError(self)])
        return []


# --- the layer --------------------------------------------------------------------------------

ResponseDestinationHook = Callable[[Via, Source], Destination]


class TransactionLayer:
    """The transaction table: routes received messages to transactions, creates server
    transactions for new requests, and runs every transaction's timers.

    Every method returns the events it produced, in order; the caller performs the
    :class:`SendMessage` events and hands the others to the TU. Terminated transactions
    leave the table at once (§17.1.1.2, §17.2.1).

    ``stamp_via``: add received/rport to the top Via of received requests (§18.2.1,
    RFC 3581), which responses then copy. ``response_destination``: the §18.2.2 hook
    (replace it, e.g. with ``functools.partial(response_destination, force_rport=True)``
    for NATed UAs that do not send ``rport``).
    """

    def __init__(
        self,
        config: TimerConfig | None = None,
        *,
        auto_trying: bool = True,
        stamp_via: bool = True,
        response_destination: ResponseDestinationHook = response_destination,
    ) -> None:
        self.config = config if config is not None else TimerConfig()
        self.auto_trying = auto_trying
        self.stamp_via = stamp_via
        self.response_destination = response_destination
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[object, ...], list[ServerTransaction]] = {}
        # Timer wheel: a heap of (deadline, seq, transaction), lazily invalidated by
        # ``_armed`` (the deadline currently valid for each transaction).
        self._heap: list[tuple[float, int, Transaction]] = []
        self._armed: dict[Transaction, float] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._clients) + sum(len(txns) for txns in self._servers.values())

    @property
    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._clients.values())

    @property
    def server_transactions(self) -> list[ServerTransaction]:
        return [txn for txns in self._servers.values() for txn in txns]

    # -- received messages ----------------------------------------------------------------
    def receive(self, message: Request | Response, source: Source, now: float) -> Events:
        """Hand over a parsed message from the transport."""
        if isinstance(message, Response):
            return self._receive_response(message, source, now)
        return self._receive_request(message, source, now)

    def _receive_response(self, response: Response, source: Source, now: float) -> Events:
        txn = self._clients.get(client_transaction_key(response))
        if txn is None:
            return [StrayResponse(response, source)]
        return self._after(txn, txn.receive_response(response, now, source))

    def _find_server(
        self, key: tuple[object, ...], request: Request, *, cancel_target: bool = False
    ) -> ServerTransaction | None:
        for txn in self._servers.get(key, ()):
            if txn.matches(request, cancel_target=cancel_target):
                return txn
        return None

    def _receive_request(self, request: Request, source: Source, now: float) -> Events:
        key = server_match_key(request)  # before stamping: the RFC 2543 key has the Via
        if self.stamp_via:
            stamp_received(request, source)
        method = request.method
        if method == "ACK":
            found = self._find_server(key, request)
            if isinstance(found, ServerInviteTransaction):
                return self._after(found, found.receive_ack(request, now, source))
            return [AckReceived(request, source, None)]

        existing = self._find_server(key, request)
        if existing is not None:
            return self._after(existing, existing.receive_request(request, now))

        destination = self.response_destination(request.top_via, source)
        txn: ServerTransaction
        if method == "INVITE":
            txn = ServerInviteTransaction(request, source, destination, self.config, key)
        else:
            txn = ServerNonInviteTransaction(request, source, destination, self.config, key)
        self._servers.setdefault(key, []).append(txn)
        events: Events = []
        if method == "INVITE" and self.auto_trying:
            events.extend(txn.send_response(request.create_response(100), now))
        if isinstance(txn, ServerNonInviteTransaction) and method == "CANCEL":
            cancelled = self._find_server(key, request, cancel_target=True)
            events.append(CancelReceived(txn, request, source, cancelled))
        else:
            events.append(RequestReceived(txn, request, source))
        return self._after(txn, events)

    # -- the TU's side ----------------------------------------------------------------------
    def send_request(
        self, request: Request, destination: Destination, now: float
    ) -> tuple[ClientTransaction, Events]:
        """Start a client transaction for ``request``, whose top Via (built by the caller,
        e.g. with :func:`new_via`) carries a fresh branch. ACK for a 2xx is no transaction
        (§17): send it with a plain :class:`SendMessage`."""
        txn: ClientTransaction
        if request.method == "ACK":
            raise SipUsageError("ACK is sent outside transactions (RFC 3261 §17)")
        if request.method == "INVITE":
            txn = ClientInviteTransaction(request, destination, self.config)
        else:
            txn = ClientNonInviteTransaction(request, destination, self.config)
        if txn.key in self._clients:
            raise SipUsageError(f"branch {txn.key[0]!r} already used for {txn.key[1]}")
        self._clients[txn.key] = txn
        return txn, self._after(txn, txn.start(now))

    def respond(self, transaction: ServerTransaction, response: Response, now: float) -> Events:
        """Send ``response`` on ``transaction`` (raises SipUsageError if its state forbids
        it, e.g. a second final response)."""
        return self._after(transaction, transaction.send_response(response, now))

    def respond_stateless(self, transaction: ServerTransaction, response: Response) -> Events:
        """Send ``response`` once and drop ``transaction`` with its timers.

        For the answers Limen gives to requests nobody has authenticated (challenges,
        refusals): like a stateless proxy's answer (RFC 3261 §16.11, §8.2.7 allows a UAS
        to answer without a transaction), it costs one packet and no state, so a flood of
        unauthenticated INVITEs draws no retransmissions (Timer G) and holds nothing for
        Timer H/J. A retransmitted request then finds no transaction and is simply
        answered again; the ACK of a non-2xx answer finds none either and goes to the TU,
        which ignores it.
        """
        transaction.cancel_timers()
        self._forget(transaction)
        return [SendMessage(response, transaction.destination)]

    def send_trying(self, transaction: ServerTransaction, now: float) -> Events:
        """The 100 Trying that ``auto_trying`` would have sent (§17.2.1), for layers built
        with ``auto_trying=False``: sent only while the INVITE transaction has not answered
        yet. §17.2.1 lets a transaction skip it when the TU answers within 200 ms, which is
        how a stateless challenge goes out alone."""
        if (
            isinstance(transaction, ServerInviteTransaction)
            and transaction.state is ServerInviteState.PROCEEDING
            and transaction.last_response is None
            and not transaction.terminated
        ):
            return self._after(
                transaction,
                transaction.send_response(transaction.request.create_response(100), now),
            )
        return []

    def transport_error(self, transaction: Transaction, now: float) -> Events:
        """The transport failed to deliver a message of ``transaction``."""
        return self._after(transaction, transaction.transport_error(now))

    # -- timers ----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, txn = heap[0]
            if self._armed.get(txn) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> Events:
        events: Events = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, txn = heapq.heappop(heap)
            if self._armed.get(txn) != deadline:
                continue  # stale entry: the transaction's timers changed since
            del self._armed[txn]
            events.extend(self._after(txn, txn.handle_timers(now)))
        return events

    # -- bookkeeping -----------------------------------------------------------------------
    def _after(self, txn: Transaction, events: Events) -> Events:
        if txn.terminated:
            self._forget(txn)
            return events
        deadline = txn.next_deadline()
        if deadline is None:
            self._armed.pop(txn, None)
        elif self._armed.get(txn) != deadline:
            self._armed[txn] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), txn))
        return events

    def _forget(self, txn: Transaction) -> None:
        self._armed.pop(txn, None)
        if isinstance(txn, ClientTransaction):
            if self._clients.get(txn.key) is txn:
                del self._clients[txn.key]
        elif isinstance(txn, ServerTransaction):
            txns = self._servers.get(txn.match_key)
            if txns is not None and txn in txns:
                txns.remove(txn)
                if not txns:
                    del self._servers[txn.match_key]
