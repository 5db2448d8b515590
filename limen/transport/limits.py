"""Limits against abuse on the SIP transports (issue 2), as one immutable record.

The values come from ``[sip]`` in the settings; tests build their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from limen.config import SipSettings


@dataclass(frozen=True, slots=True)
class Limits:
    # Header section plus body, octets. A bigger UDP datagram is dropped unanswered; on a
    # stream the framer fails (513) and the connection is closed.
    max_message_size: int = 65536
    # Header lines (folded continuation lines count); beyond it: 513, message discarded.
    max_headers: int = 256
    # Simultaneous inbound TCP/TLS connections from one IP address, and in total.
    max_connections_per_source: int = 32
    max_connections: int = 10000
    # Seconds without traffic in either direction before a connection is closed.
    idle_timeout: float = 300.0
    # Seconds a TLS handshake (inbound or outbound) may take.
    handshake_timeout: float = 10.0
    # Seconds from the first octet of a message on a stream to its last: a message that
    # trickles in slower is dropped with its connection (Kamailio's tcp_msg_read_timeout).
    # Every octet resets the idle timer, so without this a byte every few seconds would
    # hold a connection and its buffer for ever (issue 10, slowloris).
    message_read_timeout: float = 10.0
    # Inbound TLS handshakes in progress, from one IP address and in total. They are
    # counted apart from connections: a flood of never-finished handshakes must not take
    # the places of phones that complete theirs.
    max_handshakes_per_source: int = 8
    max_handshakes: int = 1000
    # Seconds an outbound TCP connect may take (handshake not included).
    connect_timeout: float = 10.0
    # Octets queued for a peer that does not read; beyond it the connection is dropped.
    max_write_buffer: int = 1024 * 1024

    @classmethod
    def from_settings(cls, sip: SipSettings) -> Limits:
        return cls(
            max_message_size=sip.max_message_size,
            max_headers=sip.max_headers,
            max_connections_per_source=sip.max_connections_per_source,
            max_connections=sip.max_connections,
            idle_timeout=sip.idle_timeout,
            handshake_timeout=sip.handshake_timeout,
            message_read_timeout=sip.message_read_timeout,
            max_handshakes_per_source=sip.max_handshakes_per_source,
            max_handshakes=sip.max_handshakes,
        )


def header_line_count(data: bytes) -> int:
    """Header lines in a message's header section (continuation lines included).

    Cheap enough to run before parsing: it only counts LF octets up to the empty line.
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        end = data.find(b"\n\n", start)
        if end < 0:
            end = len(data)
    return data.count(b"\n", start, end)
