"""SIP over TCP and TLS: one asyncio protocol per connection (RFC 3261 §18.3, RFC 5626 §3.5.1).

The connection frames its byte stream with :class:`limen.sip.StreamFramer`, answers a
CRLF CRLF keepalive ping with a CRLF pong, hands each framed message to the transport
layer, and closes itself after a framing error (the stream cannot be resynchronised),
after ``idle_timeout`` seconds without traffic either way, or when a peer stops reading.

TLS runs inside the connection over memory BIOs (``ssl.SSLObject``) rather than through
the event loop's SSL transport. That way an inbound TLS connection is counted against the
per-source and total limits *before* its handshake, the handshake timeout, failures and
counters are ours, and asyncio and uvloop behave alike (uvloop starts reading only after
``connection_made`` returns, so ``start_tls`` could not be used without a race).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, cast

from limen.sip.addressing import Address, Source, Transport
from limen.sip.errors import SipParseError
from limen.sip.framer import KeepAlivePing, StreamFramer
from limen.transport.addresses import format_address, normalize_address

if TYPE_CHECKING:
    from limen.transport.layer import TransportLayer

log = logging.getLogger("limen.transport")

PING_BYTES = b"\r\n\r\n"
PONG_BYTES = b"\r\n"
_READ_CHUNK = 65536


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound (accepted) or outbound (dialled).

    ``ready`` completes when the connection can carry SIP (at once for TCP, after the
    handshake for TLS) or fails with the reason it never will.
    """

    def __init__(
        self,
        layer: TransportLayer,
        transport: Transport,
        *,
        inbound: bool,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._layer = layer
        self._kind = transport
        self._inbound = inbound
        self._tls_context = tls
        self._server_hostname = server_hostname
        self._tls: ssl.SSLObject | None = None
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._handshaken = tls is None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        # The framer's buffer is the only copy of a message being received: a framing
        # error is answered from it (StreamFramer.pending), so a connection holds at most
        # max_message_size octets of unfinished input.
        self._framer = StreamFramer(layer.limits.max_message_size)
        self._closing = False
        self._counted_handshake = False
        self._read_timer: asyncio.TimerHandle | None = None
        self._registered = False
        self._last_activity = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(_retrieve)
        self.conn_id = 0
        self.local: Address = ("", 0)
        self.remote: Address = ("", 0)
        self.source = Source(transport, self.local, self.remote)

    # -- TableEntry --------------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        return self._kind

    @property
    def inbound(self) -> bool:
        return self._inbound

    @property
    def usable(self) -> bool:
        return (
            self._handshaken
            and not self._closing
            and self._transport is not None
            and not self._transport.is_closing()
        )

    @property
    def tls_version(self) -> str | None:
        return self._tls.version() if self._tls is not None and self._handshaken else None

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) once the TLS handshake is done, else None."""
        if self._tls is None or not self._handshaken:
            return None
        return self._tls.getpeercert(binary_form=True)

    def __repr__(self) -> str:
        direction = "from" if self._inbound else "to"
        return f"<{self._kind.value} #{self.conn_id} {direction} {format_address(self.remote)}>"

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's and uvloop's transport classes do not all subclass the ABCs.
        self._transport = cast(asyncio.Transport, transport)
        layer = self._layer
        self.remote = normalize_address(transport.get_extra_info("peername"))
        self.local = normalize_address(transport.get_extra_info("sockname"))
        if self._inbound and not layer.admit(self.remote):
            self._closing = True
            self._fail_ready(ConnectionRefusedError("connection limit reached"))
            self._transport.abort()
            return
        self.conn_id = layer.register(self)
        self._registered = True
        self.source = Source(self._kind, self.local, self.remote, self.conn_id)
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._idle_timer = loop.call_later(layer.limits.idle_timeout, self._check_idle)
        if self._tls_context is None:
            self.ready.set_result(None)
            return
        if self._inbound:
            if not layer.admit_handshake(self):
                self._closing = True
                self._fail_ready(ConnectionRefusedError("TLS handshake limit reached"))
                self._transport.abort()
                self._cleanup()
                return
            self._counted_handshake = True
        self._tls = self._tls_context.wrap_bio(
            self._tls_in,
            self._tls_out,
            server_side=self._inbound,
            server_hostname=None if self._inbound else self._server_hostname,
        )
        self._handshake_timer = loop.call_later(
            layer.limits.handshake_timeout, self._handshake_expired
        )
        if not self._inbound:
            self._handshake()  # the client speaks first

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        layer = self._layer
        layer.counters.bytes_in += len(data)
        self._last_activity = asyncio.get_running_loop().time()
        eof = False
        if self._tls is not None:
            data, eof = self._decrypt(data)
        if data:
            self._frame(data)
        if eof:
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if not self._handshaken and self._tls is not None and self._registered:
            self._layer.counters.handshake_failures += 1
            log.debug("%r: closed during the TLS handshake", self)
        self._fail_ready(exc or ConnectionResetError("connection closed"))
        self._cleanup()

    # -- I/O -------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send one SIP message on this connection."""
        if self._write_raw(data):
            self._layer.counters.messages_out += 1

    def send_ping(self) -> bool:
        """Send a CRLF CRLF keepalive (RFC 5626 §3.5.1); the pong counts as traffic."""
        return self._write_raw(PING_BYTES)

    def close(self) -> None:
        """Close after flushing what was written (TLS: with a close_notify alert)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        self._closing = True
        if self._tls is not None and self._handshaken:
            # Sends our close_notify; SSLWantReadError means the peer's has not come, and
            # we do not wait for it.
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()
            self._flush_tls()
        transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
        self._fail_ready(ConnectionAbortedError("connection aborted"))
        self._cleanup()

    # -- internals --------------------------------------------------------------------------
    def _frame(self, data: bytes) -> None:
        layer = self._layer
        framer = self._framer
        completed = False
        try:
            framer.feed(data)
            while not self._closing and (event := framer.next_event()) is not None:
                completed = True
                if isinstance(event, bytes):
                    layer.ingest(event, self.source, self.write)
                elif isinstance(event, KeepAlivePing):
                    layer.counters.keepalives_in += 1
                    self._write_raw(PONG_BYTES)
                else:  # a pong to a ping of ours
                    layer.counters.keepalives_in += 1
        except SipParseError as exc:
            layer.framing_error(framer.pending(), exc, self.source, self.write)
            self.close()
            return
        # The read timer runs from the first octet of an unfinished message; finishing a
        # message (or a keepalive) restarts it for whatever follows.
        if completed and self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if framer.in_message and self._read_timer is None and not self._closing:
            self._read_timer = asyncio.get_running_loop().call_later(
                layer.limits.message_read_timeout, self._read_expired
            )

    def _read_expired(self) -> None:
        self._read_timer = None
        if self._closing or not self._framer.in_message:
            return
        self._layer.counters.read_timeouts += 1
        log.debug("%r: message not complete within the read timeout, closing", self)
        self.abort()

    def _write_raw(self, data: bytes) -> bool:
        transport = self._transport
        if transport is None or not self.usable:
            self._layer.counters.send_errors += 1
            return False
        tls = self._tls
        if tls is not None:
            try:
                tls.write(data)
            except ssl.SSLError as exc:
                log.debug("%r: TLS write failed: %s", self, exc)
                self._layer.counters.send_errors += 1
                self.abort()
                return False
            self._flush_tls()
        else:
            transport.write(data)
            self._layer.counters.bytes_out += len(data)
        self._last_activity = asyncio.get_running_loop().time()
        if transport.get_write_buffer_size() > self._layer.limits.max_write_buffer:
            log.warning("%r: peer is not reading, dropping the connection", self)
            self._layer.counters.connections_dropped += 1
            self.abort()
        return True

    def _decrypt(self, data: bytes) -> tuple[bytes, bool]:
        """Feed TLS records; returns (plaintext, peer closed the TLS session)."""
        tls = self._tls
        assert tls is not None
        self._tls_in.write(data)
        if not self._handshaken and not self._handshake():
            return b"", False
        chunks: list[bytes] = []
        eof = False
        while True:
            try:
                chunk = tls.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                log.debug("%r: TLS error: %s", self, exc)
                self._flush_tls()
                self.abort()
                return b"", False
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        self._flush_tls()  # post-handshake records (TLS 1.3 tickets, key updates)
        return b"".join(chunks), eof

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is complete."""
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return False
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._layer.counters.handshake_failures += 1
            log.debug("%r: TLS handshake failed: %s", self, exc)
            self._flush_tls()  # the alert tells the peer why
            self._fail_ready(exc)
            self._registered_close()
            return False
        self._handshaken = True
        self._handshake_counted_over()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._flush_tls()
        if not self.ready.done():
            self.ready.set_result(None)
        log.debug("%r: %s %s", self, tls.version(), (tls.cipher() or ("?",))[0])
        return True

    def _registered_close(self) -> None:
        # A failed handshake is counted once: connection_lost must not count it again.
        self._closing = True
        if self._transport is not None:
            self._transport.close()
        self._cleanup()

    def _flush_tls(self) -> None:
        data = self._tls_out.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._layer.counters.bytes_out += len(data)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self._handshaken or self._closing:
            return
        self._layer.counters.handshake_failures += 1
        log.debug("%r: TLS handshake timed out", self)
        self._fail_ready(TimeoutError("TLS handshake timed out"))
        self.abort()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        timeout = self._layer.limits.idle_timeout
        idle = loop.time() - self._last_activity
        if idle >= timeout:
            log.debug("%r: idle for %.1f s, closing", self, idle)
            self._layer.counters.idle_closed += 1
            self.close()
            return
        self._idle_timer = loop.call_later(timeout - idle, self._check_idle)

    def _fail_ready(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)

    def _handshake_counted_over(self) -> None:
        if self._counted_handshake:
            self._counted_handshake = False
            self._layer.handshake_over(self)

    def _cleanup(self) -> None:
        self._handshake_counted_over()
        for timer in (self._idle_timer, self._handshake_timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._handshake_timer = self._read_timer = None
        if self._registered:
            self._registered = False
            self._layer.unregister(self)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed ``ready`` as seen: nobody may be waiting for an inbound one."""
    if not future.cancelled():
        future.exception()
