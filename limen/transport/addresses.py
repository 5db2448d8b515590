"""Pure helpers for socket addresses in SIP: IPv6 brackets (RFC 5118 §4.1), host:port
text, Via sent-by (RFC 3261 §18.1.1), address families, keepalive datagrams.

No sockets here: everything is testable with plain values.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any

from limen.sip.addressing import Address, Transport, bracket

DEFAULT_PORTS = {Transport.UDP: 5060, Transport.TCP: 5060, Transport.TLS: 5061}


@functools.lru_cache(maxsize=4096)
def is_ipv6(host: str) -> bool:
    """True for an IPv6 literal, bracketed or not (a scope id like ``fe80::1%eth0`` too)."""
    text = unbracket(host).split("%", 1)[0]
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    text = unbracket(host).split("%", 1)[0]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if is_ipv6(host) else socket.AF_INET


def unbracket(host: str) -> str:
    """``[::1]`` → ``::1``; anything else unchanged."""
    if len(host) >= 2 and host[0] == "[" and host[-1] == "]":
        return host[1:-1]
    return host


def format_hostport(host: str, port: int | None) -> str:
    """``host:port`` with IPv6 in brackets; the port omitted when None."""
    return bracket(host) if port is None else f"{bracket(host)}:{port}"


def format_address(address: Address) -> str:
    return format_hostport(address[0], address[1])


def normalize_address(sockaddr: Any) -> Address:
    """An asyncio/socket address (2-tuple for IPv4, 4-tuple for IPv6) as (host, port).

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, seen on dual-stack sockets) become
    the plain IPv4 text so that one phone has one address in the connection table.
    """
    host, port = str(sockaddr[0]), int(sockaddr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, port)


def canonical_host(host: str) -> str:
    """Compare-friendly text of an IP literal (``2001:DB8:0::1`` → ``2001:db8::1``);
    a non-literal is lower-cased."""
    text = unbracket(host)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.lower()


def same_host(a: str, b: str) -> bool:
    return canonical_host(a) == canonical_host(b)


def via_sent_by(transport: Transport, host: str, port: int) -> str:
    """The ``sent-protocol SP sent-by`` of a Via we write (RFC 3261 §18.1.1, §20.42):
    ``SIP/2.0/TLS [2001:db8::1]:5061``. The port is always written, even the default one,
    so that a response finds the exact socket."""
    return f"SIP/2.0/{transport.via_name} {format_hostport(host, port)}"


def is_keepalive_datagram(data: bytes) -> bool:
    """A datagram of nothing but CR/LF: a NAT keepalive some phones send over UDP.

    RFC 5626 §3.5.1 defines CRLF keepalives for streams only (UDP uses STUN); we neither
    answer nor count these as errors.
    """
    # First octet before strip(): a SIP message ends in CRLF CRLF, so strip() would copy
    # every message on the receive path only to find text in it.
    return bool(data) and data[0] in (10, 13) and not data.strip(b"\r\n")
