"""The gateway: the transaction user that routes each request to the part that owns it.

- REGISTER → the registrar (set side) — :class:`RequestHandler`.
- OPTIONS addressed to Limen itself (no user part, or a keepalive) → answered here.
- Everything else, in or out of a dialog → the call controller (:class:`CallHandler`):
  INVITE, BYE, re-INVITE, UPDATE, PRACK, INFO, REFER, SUBSCRIBE/NOTIFY, MESSAGE, OPTIONS
  to a user.

Before routing, :func:`limen.sip.validate.check_request` answers what no part should see
(RFC 3261 §8.2: 405/501, 416, 483, 420, 415, 406, malformed Contact 400). Parts not built
yet answer 501, so the day-one behaviour holds until they land.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from limen.gateway.context import GatewayContext, Side, side_of
from limen.gateway.options import ALLOWED_METHODS, allow_header, capabilities
from limen.gateway.respond import respond
from limen.sip.addressing import Source
from limen.sip.message import Request, Response
from limen.sip.transaction import ServerTransaction
from limen.sip.uri import SipUri
from limen.sip.validate import check_request

log = logging.getLogger("limen.gateway")


class RequestHandler(Protocol):
    def handle(
        self, txn: ServerTransaction, request: Request, source: Source, side: Side
    ) -> None: ...


class CallHandler(RequestHandler, Protocol):
    def cancel(
        self,
        txn: ServerTransaction,
        request: Request,
        source: Source,
        cancelled: ServerTransaction | None,
    ) -> None: ...

    def ack(self, request: Request, source: Source, side: Side) -> None: ...

    def stray_response(self, response: Response, source: Source, side: Side) -> None: ...


class Gateway:
    """The :class:`~limen.gateway.stack.TransactionUser` of the running Limen."""

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        registrar: RequestHandler | None = None,
        calls: CallHandler | None = None,
        supported: frozenset[str] = frozenset(),
    ) -> None:
        self.ctx = ctx
        self.registrar = registrar
        self.calls = calls
        self.supported = supported
        self.allowed_methods = ALLOWED_METHODS
        self._allow = allow_header(ALLOWED_METHODS)

    # -- TransactionUser ------------------------------------------------------------------
    def on_request(self, txn: ServerTransaction, request: Request, source: Source) -> None:
        rejection = check_request(
            request, supported=self.supported, allowed_methods=self.allowed_methods
        )
        if rejection is not None:
            headers = [
                ("Allow", self._allow) if name.lower() == "allow" else (name, value)
                for name, value in rejection.headers
            ]
            self.respond(txn, request, rejection.status, rejection.reason, headers)
            return
        side = side_of(source, self.ctx.directory)
        method = request.method
        if method == "REGISTER" and self.registrar is not None:
            self.registrar.handle(txn, request, source, side)
        elif method == "OPTIONS" and self._for_limen(request):
            self.respond(txn, request, 200, None, self.capabilities())
        elif self.calls is not None:
            self.calls.handle(txn, request, source, side)
        elif method in ("BYE", "CANCEL") or request.to_tag is not None:
            self.respond(txn, request, 481, None)
        else:
            self.respond(txn, request, 501, None, [("Allow", self._allow)])

    def on_cancel(
        self,
        txn: ServerTransaction,
        request: Request,
        source: Source,
        cancelled: ServerTransaction | None,
    ) -> None:
        if self.calls is not None:
            self.calls.cancel(txn, request, source, cancelled)
        else:
            # §9.2: no matching transaction → 481.
            self.respond(txn, request, 481 if cancelled is None else 200, None)

    def on_ack(self, request: Request, source: Source) -> None:
        if self.calls is not None:
            self.calls.ack(request, source, side_of(source, self.ctx.directory))

    def on_stray_response(self, response: Response, source: Source) -> None:
        if self.calls is not None:
            self.calls.stray_response(response, source, side_of(source, self.ctx.directory))

    # -- helpers ----------------------------------------------------------------------------
    def _for_limen(self, request: Request) -> bool:
        """OPTIONS without a user part (a ping, a keepalive, a scanner) is for Limen itself;
        so is every out-of-dialog OPTIONS while no call controller relays them."""
        if request.to_tag is not None:
            return False
        uri = request.uri
        if self.calls is None or not isinstance(uri, SipUri) or uri.user is None:
            return True
        # §16.3 item 2 / RFC 4475 §3.3.11: one that cannot be forwarded any further is
        # answered here. Any other OPTIONS to a user goes through the gate like a MESSAGE.
        return request.max_forwards == 0

    def capabilities(self) -> list[tuple[str, str]]:
        return capabilities(self.supported)

    def respond(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        # Statelessly: what the gateway answers by itself (malformed or unsupported
        # requests, pings) comes before any authentication and must cost no state.
        respond(self.ctx, txn, request, status, reason, headers, stateless=True)
