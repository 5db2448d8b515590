"""asyncio adapters that move SIP bytes: UDP, TCP and TLS, IPv4 and IPv6 (DESIGN.md).

One :class:`TransportLayer` owns every SIP socket of a process and hands each received
message to one entry point, ``on_message(message, source)``. It frames streams, answers
CRLF keepalives, keeps the connection table for reuse, enforces the limits of
:class:`Limits` and never lets a bad message or a handler error escape into the loop.
uvloop is used when the application runs the loop with it (``limen.app.run``).
"""

from limen.sip.addressing import bracket
from limen.transport.addresses import (
    format_address,
    format_hostport,
    is_keepalive_datagram,
    unbracket,
    via_sent_by,
)
from limen.transport.layer import (
    Listener,
    MessageHandler,
    TransportCounters,
    TransportError,
    TransportLayer,
)
from limen.transport.limits import Limits
from limen.transport.stream import StreamConnection
from limen.transport.tls import client_context, ensure_sip_certificate, server_context

__all__ = [
    "Limits",
    "Listener",
    "MessageHandler",
    "StreamConnection",
    "TransportCounters",
    "TransportError",
    "TransportLayer",
    "bracket",
    "client_context",
    "ensure_sip_certificate",
    "format_address",
    "format_hostport",
    "is_keepalive_datagram",
    "server_context",
    "unbracket",
    "via_sent_by",
]
