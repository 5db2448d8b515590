"""Socket-free parts of the transport layer: addresses, limits, the connection table."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest

from limen.config import SipSettings
from limen.sip.addressing import Address, Transport, bracket
from limen.transport.addresses import (
    canonical_host,
    family_of,
    format_address,
    format_hostport,
    is_ip_literal,
    is_ipv6,
    is_keepalive_datagram,
    normalize_address,
    unbracket,
    via_sent_by,
)
from limen.transport.connections import ConnectionTable
from limen.transport.limits import Limits, header_line_count


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("192.0.2.1", 5060, "192.0.2.1:5060"),
        ("2001:db8::1", 5061, "[2001:db8::1]:5061"),
        ("[2001:db8::1]", 5061, "[2001:db8::1]:5061"),
        ("example.com", None, "example.com"),
        ("::1", None, "[::1]"),
    ],
)
def test_format_hostport(host: str, port: int | None, text: str) -> None:
    assert format_hostport(host, port) == text


def test_brackets_and_families() -> None:
    assert bracket("::1") == "[::1]"
    assert bracket("[::1]") == "[::1]"
    assert bracket("10.0.0.1") == "10.0.0.1"
    assert unbracket("[::1]") == "::1"
    assert unbracket("10.0.0.1") == "10.0.0.1"
    assert is_ipv6("[fe80::1%eth0]")
    assert not is_ipv6("10.0.0.1")
    assert not is_ipv6("example.com")
    assert is_ip_literal("[::1]") and is_ip_literal("10.0.0.1")
    assert not is_ip_literal("example.com")
    assert family_of("::") == socket.AF_INET6
    assert family_of("0.0.0.0") == socket.AF_INET
    assert format_address(("::1", 5060)) == "[::1]:5060"
    assert canonical_host("[2001:DB8:0::1]") == "2001:db8::1"
    assert canonical_host("Example.COM") == "example.com"


def test_normalize_address() -> None:
    assert normalize_address(("::1", 5060, 0, 0)) == ("::1", 5060)
    assert normalize_address(("::ffff:192.0.2.1", 5060, 0, 0)) == ("192.0.2.1", 5060)
    assert normalize_address(("192.0.2.1", 5060)) == ("192.0.2.1", 5060)


def test_via_sent_by() -> None:
    assert via_sent_by(Transport.TLS, "2001:db8::1", 5061) == "SIP/2.0/TLS [2001:db8::1]:5061"
    assert via_sent_by(Transport.UDP, "192.0.2.1", 5060) == "SIP/2.0/UDP 192.0.2.1:5060"


def test_keepalive_datagrams() -> None:
    assert is_keepalive_datagram(b"\r\n")
    assert is_keepalive_datagram(b"\r\n\r\n")
    assert is_keepalive_datagram(b"\n")
    assert not is_keepalive_datagram(b"")
    assert not is_keepalive_datagram(b"\r\nOPTIONS")
    assert not is_keepalive_datagram(b"\x00\x01\x00\x00")  # STUN: not SIP, not ours


def test_header_line_count() -> None:
    assert header_line_count(b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\nB: 2\r\n\r\nbody\r\nX: y") == 2
    assert header_line_count(b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nA: 1\r\n\r\n") == 1
    assert header_line_count(b"OPTIONS sip:a SIP/2.0\nA: 1\nB: 2\nC: 3\n\n") == 3
    assert header_line_count(b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\nB: 2") == 2  # no end: all
    assert header_line_count(b"") == 0


def test_limits_from_settings() -> None:
    sip = SipSettings(max_message_size=4096, max_headers=40, idle_timeout=7, handshake_timeout=2)
    limits = Limits.from_settings(sip)
    assert (limits.max_message_size, limits.max_headers) == (4096, 40)
    assert (limits.idle_timeout, limits.handshake_timeout) == (7, 2)
    assert limits.max_connections_per_source == sip.max_connections_per_source


@dataclass
class Entry:
    transport: Transport
    remote: Address
    inbound: bool = True
    usable: bool = True


def test_connection_table() -> None:
    table: ConnectionTable[Entry] = ConnectionTable()
    a = Entry(Transport.TCP, ("192.0.2.1", 40000))
    b = Entry(Transport.TCP, ("192.0.2.1", 40000))
    c = Entry(Transport.TLS, ("2001:db8::1", 5061), inbound=False)
    ida, idb, idc = table.add(a), table.add(b), table.add(c)
    assert len({ida, idb, idc}) == 3 and len(table) == 3
    assert table.get(ida) is a
    assert table.find(Transport.TCP, ("192.0.2.1", 40000)) is b  # newest first
    assert table.find(Transport.TLS, ("2001:DB8::1", 5061)) is c  # any IPv6 spelling
    assert table.find(Transport.TLS, ("192.0.2.1", 40000)) is None  # other transport
    assert table.inbound_from("192.0.2.1") == 2
    assert table.inbound_from("2001:db8::1") == 0  # outbound connections are not counted
    b.usable = False
    assert table.get(idb) is None
    assert table.find(Transport.TCP, ("192.0.2.1", 40000)) is a
    assert table.remove(idb) is b
    assert table.remove(idb) is None
    assert table.inbound_from("192.0.2.1") == 1
    table.remove(ida)
    assert table.inbound_from("192.0.2.1") == 0
    assert table.find(Transport.TCP, ("192.0.2.1", 40000)) is None
    assert list(table) == [c]
    assert table.add(a) > idc  # ids are never reused
