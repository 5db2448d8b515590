"""The transport layer: listeners, outbound connections, the connection table, one entry point.

Every message received on any socket reaches ``on_message(message, source)`` (after
kamailio's ``receive_msg``): UDP datagrams as they come, TCP/TLS streams framed first.
Nothing here interprets SIP beyond what moving bytes needs: parse errors are answered
with a best-effort error response (:mod:`limen.sip.rescue`) and counted, responses that
fail to parse are dropped, and an exception in ``on_message`` is logged, never raised
into the event loop.

``send(data, destination)`` reuses the connection named by ``destination.conn_id`` if it
is still open, else one to the same remote address, else dials a new TCP/TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from limen.sip.addressing import Address, Destination, Source, Transport
from limen.sip.errors import SipParseError
from limen.sip.message import Request, Response, parse_message, reason_phrase
from limen.sip.rescue import error_response, looks_like_request
from limen.transport.addresses import (
    family_of,
    format_address,
    format_hostport,
    is_ip_literal,
    normalize_address,
    unbracket,
)
from limen.transport.connections import ConnectionTable
from limen.transport.datagram import UdpEndpoint
from limen.transport.limits import Limits, header_line_count
from limen.transport.stream import StreamConnection
from limen.transport.tls import NO_VERIFY_WARNING, ClientTls, client_context

log = logging.getLogger("limen.transport")

MessageHandler = Callable[[Request | Response, Source], None]
SendErrorHandler = Callable[[Destination, Exception], None]


class TransportError(Exception):
    """A message could not be sent (no socket for it, connection refused, handshake failed)."""


@dataclass
class TransportCounters:
    """Monotonic counters for metrics (read them; only the transport layer writes them)."""

    messages_in: int = 0  # parsed and handed to on_message
    messages_out: int = 0  # SIP messages sent (error responses included, pongs not)
    bytes_in: int = 0
    bytes_out: int = 0
    parse_errors: int = 0  # requests (or garbage) that failed to parse
    responses_dropped: int = 0  # responses that failed to parse
    error_responses: int = 0  # answers built by limen.sip.rescue
    oversize_dropped: int = 0  # UDP datagrams over max_message_size
    keepalives_in: int = 0  # CRLF pings/pongs on streams, CRLF datagrams on UDP
    handler_errors: int = 0  # exceptions raised by on_message
    send_errors: int = 0
    connections_accepted: int = 0
    connections_refused: int = 0  # over a connection limit
    connections_outbound: int = 0
    connections_closed: int = 0
    connections_dropped: int = 0  # peer stopped reading
    idle_closed: int = 0
    handshake_failures: int = 0
    tls_refused: int = 0  # outbound: peer certificate refused (CA, name or pin)
    filtered: int = 0  # packets and connections dropped by source_filter (bans, ACLs, rates)
    read_timeouts: int = 0  # a message not complete within message_read_timeout
    handshakes_refused: int = 0  # over the per-source limit on TLS handshakes in progress
    handshakes_evicted: int = 0  # oldest pending handshake dropped at the total limit

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Listener:
    transport: Transport
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.transport.value} {format_hostport(self.host, self.port)}"


class TransportLayer:
    """Owns every SIP socket of one Limen process."""

    def __init__(
        self,
        on_message: MessageHandler | None = None,
        *,
        limits: Limits | None = None,
        server_header: str = "",
        tls_client_context: ssl.SSLContext | None = None,
        on_send_error: SendErrorHandler | None = None,
    ) -> None:
        self.on_message: MessageHandler | None = on_message
        # Per packet, before parsing, and per inbound connection at accept: False drops it
        # without an answer (bans, ACLs, rate limits: limen.gateway.guard).
        self.source_filter: Callable[[str], bool] | None = None
        self.limits = limits or Limits()
        self.server_header = server_header
        self.on_send_error = on_send_error
        self.counters = TransportCounters()
        self.listeners: list[Listener] = []
        self._tls_client_context = tls_client_context
        # Per-peer TLS trust (issue 15): (ip, port) → how that peer's certificate is
        # checked; maintained by the ICP links. Peers not listed get the default context.
        self.tls_peers: dict[Address, ClientTls] = {}
        # Called (destination, reason) when a peer's certificate is refused.
        self.on_tls_refused: Callable[[Destination, str], None] | None = None
        self._table: ConnectionTable[StreamConnection] = ConnectionTable()
        self._udp: list[UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._connecting: dict[tuple[Transport, Address], asyncio.Future[StreamConnection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        # Inbound TLS handshakes in progress, by source IP and in total.
        self._handshakes: dict[str, int] = {}
        self._in_handshake: dict[int, StreamConnection] = {}  # oldest first

    # -- listeners ----------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int) -> Listener:
        loop = asyncio.get_running_loop()
        sock = _bound_udp_socket(unbracket(host), port)
        try:
            _, endpoint = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._udp.append(endpoint)
        return self._add_listener(Transport.UDP, endpoint.local)

    async def listen_tcp(self, host: str, port: int) -> Listener:
        return await self._listen_stream(Transport.TCP, host, port, None)

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext) -> Listener:
        return await self._listen_stream(Transport.TLS, host, port, context)

    async def _listen_stream(
        self, kind: Transport, host: str, port: int, context: ssl.SSLContext | None
    ) -> Listener:
        loop = asyncio.get_running_loop()

        def factory() -> StreamConnection:
            return StreamConnection(self, kind, inbound=True, tls=context)

        server = await loop.create_server(
            factory, unbracket(host), port, reuse_address=True, backlog=1024
        )
        self._servers.append(server)
        return self._add_listener(kind, normalize_address(server.sockets[0].getsockname()))

    def _add_listener(self, kind: Transport, address: Address) -> Listener:
        listener = Listener(kind, address[0], address[1])
        self.listeners.append(listener)
        log.debug("listening on %s", listener)  # the app announces it
        return listener

    # -- the connection table ------------------------------------------------------------
    def connection(self, conn_id: int) -> StreamConnection | None:
        """The open connection with this id, or None."""
        return self._table.get(conn_id)

    def find_connection(self, transport: Transport, remote: Address) -> StreamConnection | None:
        return self._table.find(transport, remote)

    @property
    def connection_count(self) -> int:
        return len(self._table)

    def admit(self, remote: Address) -> bool:
        """May one more inbound connection from ``remote`` be accepted?"""
        limits = self.limits
        if self._closed:
            return False
        source_filter = self.source_filter
        if source_filter is not None and not source_filter(remote[0]):
            self.counters.filtered += 1
            return False
        if len(self._table) >= limits.max_connections:
            reason = "total"
        elif self._table.inbound_from(remote[0]) >= limits.max_connections_per_source:
            reason = "per-source"
        else:
            return True
        self.counters.connections_refused += 1
        # Debug only: a flood must not flood the log too (the counter shows it).
        log.debug("refused connection from %s: %s limit reached", format_address(remote), reason)
        return False

    def admit_handshake(self, conn: StreamConnection) -> bool:
        """May ``conn`` (inbound TLS) start its handshake? If so it is counted until
        :meth:`handshake_over`. Past the per-source limit the newcomer is refused; past
        the total, the oldest pending handshake is dropped to make room: a phone's
        handshake takes milliseconds, so the oldest are the stalled ones, and refusing
        newcomers instead would let a flood from many addresses lock every phone out."""
        limits = self.limits
        host = conn.remote[0]
        if self._handshakes.get(host, 0) >= limits.max_handshakes_per_source:
            self.counters.handshakes_refused += 1
            log.debug(
                "refused TLS from %s: per-source handshake limit", format_address(conn.remote)
            )
            return False
        while len(self._in_handshake) >= limits.max_handshakes:
            oldest = next(iter(self._in_handshake.values()))
            self.counters.handshakes_evicted += 1
            oldest.abort()  # its cleanup calls handshake_over
            self._in_handshake.pop(id(oldest), None)
        self._in_handshake[id(conn)] = conn
        self._handshakes[host] = self._handshakes.get(host, 0) + 1
        return True

    def handshake_over(self, conn: StreamConnection) -> None:
        """An admitted handshake finished, failed or was abandoned."""
        if self._in_handshake.pop(id(conn), None) is None:
            return
        host = conn.remote[0]
        left = self._handshakes.get(host, 0) - 1
        if left > 0:
            self._handshakes[host] = left
        else:
            self._handshakes.pop(host, None)

    @property
    def handshakes_in_progress(self) -> int:
        return len(self._in_handshake)

    def register(self, conn: StreamConnection) -> int:
        if conn.inbound:
            self.counters.connections_accepted += 1
        else:
            self.counters.connections_outbound += 1
        return self._table.add(conn)

    def unregister(self, conn: StreamConnection) -> None:
        if self._table.remove(conn.conn_id) is not None:
            self.counters.connections_closed += 1

    # -- receiving ------------------------------------------------------------------------
    def ingest(self, data: bytes, source: Source, reply: Callable[[bytes], None]) -> None:
        """One complete message (a datagram, or what the framer cut out) from ``source``."""
        source_filter = self.source_filter
        if source_filter is not None and not source_filter(source.remote[0]):
            self.counters.filtered += 1
            return
        if header_line_count(data) > self.limits.max_headers:
            self._refuse(data, 513, "too many header lines", source, reply)
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._refuse(data, exc.status, exc.reason, source, reply)
            return
        self.counters.messages_in += 1
        handler = self.on_message
        if handler is None:
            return
        try:
            handler(message, source)
        except Exception:
            self.counters.handler_errors += 1
            log.exception("error handling %r from %s", message, _describe(source))

    def framing_error(
        self, pending: bytes, exc: SipParseError, source: Source, reply: Callable[[bytes], None]
    ) -> None:
        """The stream framer failed; the caller closes the connection after this."""
        self._refuse(pending, exc.status, exc.reason, source, reply)

    def _refuse(
        self,
        data: bytes,
        status: int,
        why: str,
        source: Source,
        reply: Callable[[bytes], None],
    ) -> None:
        if not looks_like_request(data):
            if data.lstrip(b"\r\n")[:4].upper() == b"SIP/":
                self.counters.responses_dropped += 1
                log.debug("dropped unparseable response from %s: %s", _describe(source), why)
            else:
                self.counters.parse_errors += 1
                log.debug("dropped unparseable input from %s: %s", _describe(source), why)
            return
        self.counters.parse_errors += 1
        log.debug("refused request from %s with %d: %s", _describe(source), status, why)
        headers = [("Server", self.server_header)] if self.server_header else []
        answer = error_response(
            data, status, reason_phrase(status), to_tag=secrets.token_hex(6), headers=headers
        )
        if answer is not None:
            self.counters.error_responses += 1
            reply(answer)

    # -- sending --------------------------------------------------------------------------
    def send(self, data: bytes, dest: Destination) -> None:
        """Send one message, now if a socket or connection is ready, else once a new
        connection is up. Failures are counted, logged and passed to ``on_send_error``."""
        try:
            if dest.transport is Transport.UDP:
                self._send_udp(data, dest)
                return
            conn = self._ready_connection(dest)
        except TransportError as exc:
            self._send_failed(dest, exc)
            return
        if conn is not None:
            conn.write(data)
            return
        task = asyncio.get_running_loop().create_task(self._send_later(data, dest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send_async(self, data: bytes, dest: Destination) -> int | None:
        """Send one message; returns the connection id used (None for UDP).

        Raises :class:`TransportError` when it cannot be sent.
        """
        if dest.transport is Transport.UDP:
            self._send_udp(data, dest)
            return None
        conn = self._ready_connection(dest) or await self.connect(dest)
        conn.write(data)
        return conn.conn_id

    async def connect(self, dest: Destination) -> StreamConnection:
        """An open connection to ``dest`` (reused if there is one; dialled otherwise)."""
        if dest.transport is Transport.UDP:
            raise TransportError("UDP has no connections")
        conn = self._ready_connection(dest)
        if conn is not None:
            return conn
        key = (dest.transport, (unbracket(dest.host), dest.port))
        pending = self._connecting.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._dial(dest))
            self._connecting[key] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(pending)

    def _ready_connection(self, dest: Destination) -> StreamConnection | None:
        if self._closed:
            raise TransportError("transport layer closed")
        if dest.conn_id is not None:
            conn = self._table.get(dest.conn_id)
            if conn is not None and conn.transport is dest.transport:
                return conn
        return self._table.find(dest.transport, (unbracket(dest.host), dest.port))

    async def _dial(self, dest: Destination) -> StreamConnection:
        host = unbracket(dest.host)
        if not is_ip_literal(host):
            raise TransportError(f"not an IP address: {dest.host!r} (resolve names first)")
        if len(self._table) >= self.limits.max_connections:
            self.counters.connections_refused += 1
            raise TransportError("connection limit reached")
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        trust = self.tls_peers.get((host, dest.port)) if dest.transport is Transport.TLS else None
        server_hostname = host
        if trust is not None:
            context = trust.context
            server_hostname = trust.server_name or host
            if not trust.verifies:
                log.warning(
                    "%s (connecting to %s)",
                    NO_VERIFY_WARNING.format(name=trust.label),
                    format_hostport(host, dest.port),
                )
        elif dest.transport is Transport.TLS:
            if self._tls_client_context is None:
                self._tls_client_context = client_context()
            context = self._tls_client_context
        kind = dest.transport
        what = f"{kind.value} {format_hostport(host, dest.port)}"
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: StreamConnection(
                        self, kind, inbound=False, tls=context, server_hostname=server_hostname
                    ),
                    host,
                    dest.port,
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {what}: {exc!r}") from exc
        try:
            await conn.ready  # the handshake has its own timer (limits.handshake_timeout)
        except ssl.SSLCertVerificationError as exc:
            # OpenSSL refused the chain or the name during the handshake: nothing but
            # the handshake (and its alert) went out.
            reason = f"certificate refused: {exc.verify_message}"
            self._tls_refused(dest, reason)
            raise TransportError(f"TLS with {what} failed: {reason}") from exc
        except (OSError, ssl.SSLError, ssl.CertificateError, TimeoutError) as exc:
            raise TransportError(f"TLS with {what} failed: {exc!r}") from exc
        if not conn.usable:
            raise TransportError(f"connection to {what} closed")
        if trust is not None:
            # The pin is checked after the handshake and before the first write.
            refused = trust.check_peer(conn.peer_certificate())
            if refused is not None:
                conn.abort()
                self._tls_refused(dest, refused)
                raise TransportError(f"TLS with {what} refused: {refused}")
        log.debug("connected %r", conn)
        return conn

    async def _send_later(self, data: bytes, dest: Destination) -> None:
        try:
            conn = await self.connect(dest)
        except TransportError as exc:
            self._send_failed(dest, exc)
            return
        conn.write(data)

    def _send_udp(self, data: bytes, dest: Destination) -> None:
        if self._closed:
            raise TransportError("transport layer closed")
        host = unbracket(dest.host)
        if not is_ip_literal(host):
            raise TransportError(f"not an IP address: {dest.host!r} (resolve names first)")
        family = family_of(host)
        candidates = [e for e in self._udp if e.open and family_of(e.local[0]) == family]
        if dest.local is not None:
            # A response leaves from the socket the request came in on (§18.2.2).
            wanted = normalize_address(dest.local)
            candidates.sort(key=lambda e: e.local != wanted)
        if candidates:
            candidates[0].sendto(data, (host, dest.port))
            self.counters.messages_out += 1
            return
        raise TransportError(f"no UDP socket for {'IPv6' if family == socket.AF_INET6 else 'IPv4'}")

    def drop_outbound(self, transport: Transport, remote: Address) -> int:
        """Abort our connections to ``remote`` (its trust changed: the next request
        dials again and verifies the peer anew). Returns how many were dropped."""
        host = unbracket(remote[0])
        doomed = [
            c
            for c in self._table
            if not c.inbound and c.transport is transport and c.remote == (host, remote[1])
        ]
        for conn in doomed:
            conn.abort()
        return len(doomed)

    def _tls_refused(self, dest: Destination, reason: str) -> None:
        self.counters.tls_refused += 1
        log.warning("TLS peer %s refused: %s", format_hostport(dest.host, dest.port), reason)
        if self.on_tls_refused is not None:
            try:
                self.on_tls_refused(dest, reason)
            except Exception:
                log.exception("error in on_tls_refused")

    def _send_failed(self, dest: Destination, exc: Exception) -> None:
        self.counters.send_errors += 1
        log.warning("send to %s %s failed: %s", dest.transport.value, dest.host, exc)
        if self.on_send_error is not None:
            try:
                self.on_send_error(dest, exc)
            except Exception:
                log.exception("error in on_send_error")

    # -- shutdown --------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop listening, close every connection and socket."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            server.close()
        for conn in self._table:
            conn.abort()
        for endpoint in self._udp:
            endpoint.close()
        for task in list(self._tasks) + list(self._connecting.values()):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks


def _bound_udp_socket(host: str, port: int) -> socket.socket:
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # Separate IPv4 and IPv6 sockets may share a port number (bind + bind6).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        with contextlib.suppress(OSError):  # best effort: bursts of REGISTERs
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _describe(source: Source) -> str:
    conn = f" #{source.conn_id}" if source.conn_id is not None else ""
    return f"{source.transport.value} {format_address(source.remote)}{conn}"
