"""SIP over UDP: one asyncio datagram endpoint per bound socket (RFC 3261 §18.1, §18.2).

A datagram is one message (RFC 3261 §18.3: the Content-Length bounds the body and
trailing octets are ignored, RFC 4475 §3.1.1.8). Datagrams over the size limit are
dropped unanswered; datagrams of only CR/LF are NAT keepalives and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from limen.sip.addressing import Address, Source, Transport
from limen.transport.addresses import format_address, is_keepalive_datagram, normalize_address

if TYPE_CHECKING:
    from limen.transport.layer import TransportLayer

log = logging.getLogger("limen.transport")


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self._layer = layer
        self._transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's and uvloop's transport classes do not all subclass the ABCs.
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local = normalize_address(transport.get_extra_info("sockname"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        layer = self._layer
        counters = layer.counters
        counters.bytes_in += len(data)
        remote = normalize_address(addr)
        if len(data) > layer.limits.max_message_size:
            counters.oversize_dropped += 1
            log.debug("udp: dropped %d-octet datagram from %s", len(data), format_address(remote))
            return
        if is_keepalive_datagram(data):
            counters.keepalives_in += 1
            return
        source = Source(Transport.UDP, self.local, remote)

        def reply(payload: bytes) -> None:
            self.sendto(payload, remote)
            counters.messages_out += 1

        layer.ingest(data, source, reply)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable ...) arrive here for earlier sends; never fatal.
        self._layer.counters.send_errors += 1
        log.debug("udp %s: %s", format_address(self.local), exc)

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def sendto(self, data: bytes, remote: Address) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._layer.counters.send_errors += 1
            return
        transport.sendto(data, remote)
        self._layer.counters.bytes_out += len(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
