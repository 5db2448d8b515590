"""The asyncio adapter around the sans-IO transaction layer (after aioquic's protocol.py).

The transport hands every parsed message to :meth:`SipStack.receive`; the stack feeds it
to :class:`~limen.sip.transaction.TransactionLayer` with the loop's time, performs the
``SendMessage`` events through the transport, passes the other events to the
transaction user (the gateway) and re-arms one ``loop.call_at`` for the earlier of the
layer's next deadline and the gateway's own (:class:`~limen.gateway.timers.Timers`:
Timer C, 2xx retransmission, linger, registration refresh and flush, keepalive). Nothing
here knows what a phone or a PBX is.

One clock drives both: ``clock`` (the loop's ``time`` by default). Built with a manual
``clock`` and no loop, the stack arms nothing: a test sets the time and calls
:meth:`SipStack.handle_timers`, and the whole gateway runs on that clock without sleeps.

Client transactions report to the callback given to :meth:`send_request`; server-side
events go to the :class:`TransactionUser`. An exception raised by either is logged and
contained: one bad handler must not stop the stack (nor the event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from limen.gateway.timers import TimerHandle, Timers
from limen.sip.addressing import Destination, Source
from limen.sip.message import Message, Request, Response
from limen.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerTransaction,
    StrayResponse,
    TransactionEvent,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)

if TYPE_CHECKING:
    from limen.gateway.history import SipHistory

log = logging.getLogger("limen.gateway.stack")

ClientEvent = ResponseReceived | TransactionTimeout | TransportError
ClientCallback = Callable[[ClientEvent], None]


class Sender(Protocol):
    """What the stack needs of the transport layer."""

    def send(self, data: bytes, dest: Destination) -> None: ...


class TransactionUser(Protocol):
    """The layer above transactions (RFC 3261 §8, §12-§16): the gateway."""

    def on_request(self, txn: ServerTransaction, request: Request, source: Source) -> None: ...

    def on_cancel(
        self,
        txn: ServerTransaction,
        request: Request,
        source: Source,
        cancelled: ServerTransaction | None,
    ) -> None: ...

    def on_ack(self, request: Request, source: Source) -> None: ...

    def on_stray_response(self, response: Response, source: Source) -> None: ...


class SipStack:
    """Transport ⇄ transaction layer ⇄ transaction user, on one event loop."""

    def __init__(
        self,
        sender: Sender,
        layer: TransactionLayer | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.sender = sender
        self.layer = layer if layer is not None else TransactionLayer(auto_trying=False)
        self.loop: asyncio.AbstractEventLoop | None
        if clock is None:
            self.loop = loop if loop is not None else asyncio.get_running_loop()
            clock = self.loop.time
        else:
            self.loop = loop  # None: a manual clock, driven by handle_timers()
        # The one clock of the transaction layer and the gateway's timers.
        self.now: Callable[[], float] = clock
        self.timers = Timers(clock)
        self._firing = False
        self.tu: TransactionUser | None = None
        self._callbacks: dict[ClientTransaction, ClientCallback] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.handler_errors = 0
        # Every message received or sent, filed by Call-ID (the console's call ladder).
        self.history: SipHistory | None = None

    # -- input ------------------------------------------------------------------------------
    def receive(self, message: Request | Response, source: Source) -> None:
        """The transport's single entry point (``TransportLayer.on_message``)."""
        if self.history is not None:
            self.history.received(message, source)
        self._process(self.layer.receive(message, source, self.now()))

    def send_error(self, dest: Destination, exc: Exception) -> None:
        """The transport could not deliver to ``dest``: fail the client transactions bound
        there (RFC 3261 §17.1.4) so their users learn it now rather than at Timer B/F."""
        now = self.now()
        for txn in list(self._callbacks):
            d = txn.destination
            if not txn.terminated and (d.host, d.port, d.transport) == (
                dest.host,
                dest.port,
                dest.transport,
            ):
                log.info("transport error towards %s:%d: %s", dest.host, dest.port, exc)
                self._process(self.layer.transport_error(txn, now))

    # -- output -----------------------------------------------------------------------------
    def send_request(
        self, request: Request, destination: Destination, on_event: ClientCallback
    ) -> ClientTransaction:
        """Start a client transaction; ``on_event`` gets its responses and its failure."""
        txn, events = self.layer.send_request(request, destination, self.now())
        self._callbacks[txn] = on_event
        self._process(events)
        return txn

    def respond(self, txn: ServerTransaction, response: Response) -> None:
        self._process(self.layer.respond(txn, response, self.now()))

    def respond_stateless(self, txn: ServerTransaction, response: Response) -> None:
        """Answer once and forget the transaction (challenges and refusals of requests no
        one has authenticated: one packet each, no retransmission, no state)."""
        self._process(self.layer.respond_stateless(txn, response))

    def send_stateless(self, message: Message, destination: Destination) -> None:
        """Send outside any transaction: ACK for a 2xx, 2xx retransmissions (RFC 6026)."""
        data = bytes(message)
        self.sender.send(data, destination)
        if self.history is not None:
            self.history.sent(message, data, destination)

    # -- the gateway's timers -------------------------------------------------------------
    def later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` in ``delay`` seconds, on the stack's clock."""
        return self.at(self.now() + delay, callback)

    def at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        handle = self.timers.at(when, callback)
        if not self._firing and (self._timer_at is None or when < self._timer_at):
            self._rearm()
        return handle

    def next_deadline(self) -> float | None:
        """The earlier of the transaction layer's and the gateway's next deadline."""
        deadline = self.layer.next_deadline()
        ours = self.timers.next_deadline()
        if ours is not None and (deadline is None or ours < deadline):
            return ours
        return deadline

    def handle_timers(self, now: float) -> None:
        """Fire what is due at ``now``: transaction timers, then the gateway's."""
        self._firing = True
        try:
            self._process(self.layer.handle_timers(now))
            self.timers.handle_timers(now)
        finally:
            self._firing = False
        self._rearm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
        self.timers.clear()
        self._callbacks.clear()

    # -- internals ----------------------------------------------------------------------------
    def _process(self, events: list[TransactionEvent]) -> None:
        for event in events:
            try:
                self._dispatch(event)
            except Exception:
                self.handler_errors += 1
                log.exception("error handling %s", type(event).__name__)
        self._rearm()

    def _dispatch(self, event: TransactionEvent) -> None:
        if isinstance(event, SendMessage):
            data = bytes(event.message)
            self.sender.send(data, event.destination)
            if self.history is not None:
                self.history.sent(event.message, data, event.destination)
        elif isinstance(event, ResponseReceived | TransactionTimeout | TransportError):
            txn = event.transaction
            callback = self._callbacks.get(txn) if isinstance(txn, ClientTransaction) else None
            if callback is not None:
                callback(event)
            elif isinstance(event, TransportError | TransactionTimeout):
                log.debug("%s on %r", type(event).__name__, txn)
        elif isinstance(event, TransactionTerminated):
            if isinstance(event.transaction, ClientTransaction):
                self._callbacks.pop(event.transaction, None)
        else:
            self._to_tu(event)

    def _to_tu(self, event: TransactionEvent) -> None:
        """Server-side events: to the transaction user."""
        if self.tu is None:
            log.debug("no transaction user for %s", type(event).__name__)
        elif isinstance(event, RequestReceived):
            self.tu.on_request(event.transaction, event.request, event.source)
            if event.request.method == "INVITE" and not self.layer.auto_trying:
                # §17.2.1: the TU ran synchronously; if it did not answer, say Trying now
                # (a stateless challenge thus goes out alone, without a 100 before it).
                self._process(self.layer.send_trying(event.transaction, self.now()))
        elif isinstance(event, CancelReceived):
            self.tu.on_cancel(event.transaction, event.request, event.source, event.cancelled)
        elif isinstance(event, AckReceived):
            self.tu.on_ack(event.request, event.source)
        elif isinstance(event, StrayResponse):
            self.tu.on_stray_response(event.response, event.source)

    def _rearm(self) -> None:
        if self._firing:
            return  # handle_timers re-arms once everything due has run
        deadline = self.layer.next_deadline()
        ours = self.timers.next_deadline()
        if ours is not None and (deadline is None or ours < deadline):
            deadline = ours
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self.loop is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.handle_timers(self.now())
