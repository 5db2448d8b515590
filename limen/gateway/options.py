"""The day-one request handler: answer OPTIONS, refuse the rest clearly (RFC 3261 §11, §8.2).

Until the registrar and the call controller exist, Limen is a stateless UAS that:

- answers OPTIONS with 200 OK and its capabilities (RFC 3261 §11.2): Allow, Accept,
  Accept-Encoding, Accept-Language, Supported, and Server unless that is configured empty;
- never answers ACK (§17.2.1);
- refuses what :func:`limen.sip.validate.check_request` refuses (unknown method 501 with
  Allow, known but not allowed method 405 with Allow, 416, 420, 483, 415, 406 ...);
- answers BYE and CANCEL with 481: there is no dialog or transaction they could refer to
  yet (§15.1.2, §9.2);
- answers every other allowed method (INVITE, REGISTER, SUBSCRIBE ...) with 501 Not
  Implemented: "the server does not support the functionality required" (§21.5.2) is
  the honest answer for a method we will handle but cannot yet.

Choice of 405 vs 501: ``Allow`` lists the methods Limen is built to handle as a
teleworker gateway. A method known to SIP but outside that list (PUBLISH by default, or
REGISTER if an operator removes it) gets 405 with Allow; a method nobody defined gets 501
with Allow (validate's rule, RFC 3261 §21.5.2 / RFC 4475 §3.1.1.2).

Responses go where RFC 3261 §18.2.2 and RFC 3581 say
(:func:`limen.sip.transaction.response_destination`), with one deliberate deviation: over
UDP Limen answers to the packet's source port even without ``rport`` (``symmetric``, what
kamailio's ``force_rport()`` does), because phones behind NAT cannot be reached on the
port their Via names. Stateless: a retransmitted request is simply answered again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable

from limen.sip.addressing import Destination, Source
from limen.sip.message import Request
from limen.sip.transaction import response_destination, stamp_received
from limen.sip.validate import check_request

log = logging.getLogger("limen.gateway")

Send = Callable[[bytes, Destination], None]

# The methods a teleworker gateway handles (advertised in Allow).
ALLOWED_METHODS: frozenset[str] = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "MESSAGE",
        "REFER",
        "SUBSCRIBE",
        "NOTIFY",
    }
)
# Option tags Limen implements (Supported, and what Require may ask for). None yet: a
# Require naming any extension gets 420 (RFC 3261 §8.2.2.3).
SUPPORTED: frozenset[str] = frozenset()
ACCEPT = "application/sdp"
ACCEPT_ENCODING = "identity"
ACCEPT_LANGUAGE = "en"
# Allowed methods answered 481: nothing exists yet that they could refer to.
_NO_SUCH_TRANSACTION = frozenset({"BYE", "CANCEL"})
# The order methods are listed in Allow: the core ones first, as phones show them.
_ALLOW_ORDER = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "MESSAGE",
    "REFER",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
)


def allow_header(methods: Iterable[str]) -> str:
    wanted = set(methods)
    ordered = [m for m in _ALLOW_ORDER if m in wanted]
    return ", ".join(ordered + sorted(wanted - set(ordered)))


class OptionsResponder:
    """Stateless UAS for the first days: ``responder(request, source)``."""

    def __init__(
        self,
        send: Send,
        *,
        server_header: str = "",
        allowed_methods: frozenset[str] = ALLOWED_METHODS,
        supported: frozenset[str] = SUPPORTED,
        symmetric: bool = True,
    ) -> None:
        self._send = send
        self.server_header = server_header
        self.allowed_methods = allowed_methods
        self.supported = supported
        self.symmetric = symmetric
        self._allow = allow_header(allowed_methods)

    def __call__(self, request: Request, source: Source) -> None:
        method = request.method
        if method == "ACK":
            return
        rejection = check_request(
            request, supported=self.supported, allowed_methods=self.allowed_methods
        )
        if rejection is not None:
            headers = [
                ("Allow", self._allow) if name.lower() == "allow" else (name, value)
                for name, value in rejection.headers
            ]
            self.respond(request, source, rejection.status, rejection.reason, headers)
        elif method == "OPTIONS":
            self.respond(request, source, 200, None, self.capabilities())
        elif method in _NO_SUCH_TRANSACTION:
            self.respond(request, source, 481, None)
        else:
            self.respond(request, source, 501, None, [("Allow", self._allow)])

    def capabilities(self) -> list[tuple[str, str]]:
        """RFC 3261 §11.2: what an OPTIONS answer describes."""
        return [
            ("Allow", self._allow),
            ("Accept", ACCEPT),
            ("Accept-Encoding", ACCEPT_ENCODING),
            ("Accept-Language", ACCEPT_LANGUAGE),
            ("Supported", ", ".join(sorted(self.supported))),
        ]

    def respond(
        self,
        request: Request,
        source: Source,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        extra = list(headers)
        if self.server_header:
            extra.append(("Server", self.server_header))
        # §18.2.1 / RFC 3581: record where the request came from; the response copies it.
        stamp_received(request, source)
        response = request.create_response(
            status, reason, to_tag=secrets.token_hex(6), headers=extra
        )
        destination = response_destination(request.top_via, source, force_rport=self.symmetric)
        self._send(bytes(response), destination)
