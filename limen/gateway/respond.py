"""Answers the gateway writes itself (not relayed from the other side).

RFC 3261 §8.2.6.2: a UAS answering a request outside a dialog adds a To tag; one inside a
dialog (To already tagged) keeps it. Every answer of our own also carries the configured
Server header (or none). Stateless answers (``TransactionLayer.respond_stateless``) are for
requests nobody has authenticated yet, so a flood costs one packet per request and no
transaction state.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from limen.sip.message import Request, Response

if TYPE_CHECKING:
    from limen.gateway.context import GatewayContext
    from limen.sip.transaction import ServerTransaction


def own_response(
    ctx: GatewayContext,
    request: Request,
    status: int,
    reason: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """``request``'s answer from Limen itself: a fresh To tag unless the request has one
    (§8.2.6.2), ``headers`` and then the Server header."""
    to_tag = None if request.to_tag is not None else secrets.token_hex(6)
    return request.create_response(
        status, reason, to_tag=to_tag, headers=[*headers, *ctx.server_headers()]
    )


def respond(
    ctx: GatewayContext,
    txn: ServerTransaction,
    request: Request,
    status: int,
    reason: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    *,
    stateless: bool,
) -> None:
    """Send :func:`own_response` on ``txn``; ``stateless`` sends it once and forgets the
    transaction."""
    response = own_response(ctx, request, status, reason, headers)
    if stateless:
        ctx.stack.respond_stateless(txn, response)
    else:
        ctx.stack.respond(txn, response)
