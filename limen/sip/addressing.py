"""Where messages come from and go to: the small receive-info / send-info records.

``Source`` is what a transport attaches to every message it hands to the core (after
kamailio's ``receive_info``): transport, local and remote address, and the connection id
for stream transports. ``Destination`` is where the core wants a message sent; a
``conn_id`` asks the transport to reuse that exact connection (a phone behind NAT
cannot be dialled back, RFC 5626 §3.2 / RFC 3261 §18.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def reliable(self) -> bool:
        """Stream transports: no retransmission timers A/E/G (RFC 3261 §17.1.1.2)."""
        return self is not Transport.UDP

    @property
    def via_name(self) -> str:
        return self.value.upper()

    @classmethod
    def from_via(cls, name: str) -> Transport:
        try:
            return cls(name.lower())
        except ValueError:
            raise ValueError(f"unsupported transport {name!r}") from None


Address = tuple[str, int]  # (host literal without brackets, port)


def bracket(host: str) -> str:
    """The host as written in SIP (URIs, Via sent-by, Host of a URI built from an address):
    an IPv6 literal in brackets (RFC 3261 §25.1 IPv6reference, RFC 5118 §4.5); anything
    else, or an already bracketed literal, unchanged."""
    if host.startswith("["):
        return host
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class Source:
    transport: Transport
    local: Address
    remote: Address
    conn_id: int | None = None  # stream transports only


@dataclass(frozen=True, slots=True)
class Destination:
    transport: Transport
    host: str  # IP literal (no DNS inside the core), IPv6 without brackets
    port: int
    conn_id: int | None = None  # reuse this connection if it is still open
    # Send from this local address (a UDP response leaves from the socket the request
    # came in on, RFC 3261 §18.2.2); None lets the transport choose.
    local: Address | None = None

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @classmethod
    def reply_to(cls, source: Source) -> Destination:
        """Back to where ``source`` came from, over the same connection if any."""
        return cls(
            source.transport, source.remote[0], source.remote[1], source.conn_id, source.local
        )
