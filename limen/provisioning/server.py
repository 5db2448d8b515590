"""The HTTPS provisioning port (4445): phones fetch ``/<hash>/<path>`` through Limen.

A request whose first path segment is an ICP's provisioning hash is forwarded to that
ICP's config server, ``https://<icp address>:<XML destination port>/<hash>/<path>``, with
the bodies streamed both ways (never buffered whole), connect and read timeouts and size
caps; or, for an ICP marked "Limen serves configs", answered by Limen itself
(``aastra.cfg``, ``<MAC>.cfg``, ``limen-ca.pem``; see :mod:`limen.provisioning.phoneconfig`).

Everything else is refused **without contacting the PBX**, checked in this order:

====  ====================================================================================
403   the source is blocked for hash guessing (too many unknown hashes / bad paths)
429   the source exceeded its request rate (token bucket per address)
405   a method other than GET, HEAD, POST (``Allow`` says which)
400   not an origin-form target (absolute URL...), traversal in any encoding, malformed
      request or oversize request line / headers (see :mod:`limen.provisioning.paths`)
404   unknown hash (compared in constant time, see :class:`IcpDirectory`)
413   a request body above ``max_request_body``
503   the ICP's link is disabled
====  ====================================================================================

Answers about the PBX: 502 when it cannot be reached or trusted, or its answer is
malformed or above ``max_response_bytes``; 504 when it does not connect or answer within
the timeouts. Once a response has started, a failure can only cut the connection.

Each request writes one access-log line (logger ``limen.provisioning.access``): time,
source, method, path with the hash replaced by ``{hash}``, MAC (from the file name, e.g.
``00085D4330B8.cfg``, else from a Mitel User-Agent), ICP, status, bytes sent and
received, duration, outcome. Per-ICP counters are in :meth:`ProvisioningServer.counters`.

HTTP/1.1 is spoken with h11 (sans-IO) over asyncio streams on both sides, so every refusal
is decided by this module before anything is opened toward the PBX, and the PBX's
certificate is checked (CA or pin) before the phone's request is written to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import h11

from limen.certs import ca_paths, ensure_certificates, slot
from limen.provisioning.limits import GuessGuard, RateLimiter
from limen.provisioning.paths import (
    HashTarget,
    Refusal,
    mac_from_filename,
    mac_from_user_agent,
    parse_target,
)
from limen.provisioning.phoneconfig import (
    CA_FILE,
    SHARED_FILE,
    ConfigValueError,
    line_for,
    profile_for,
    render_phone,
    render_shared,
)
from limen.provisioning.upstream import (
    NO_VERIFY_WARNING,
    ClientTls,
    UpstreamError,
    UpstreamTls,
    connect,
    upstream_tls,
)
from limen.store.errors import NotFound

if TYPE_CHECKING:
    from limen.core import Core
    from limen.store import Change, Store
    from limen.store.schemas import DeviceCredentials, DeviceRecord, IcpRecord

log = logging.getLogger(__name__)
access_log = logging.getLogger("limen.provisioning.access")

METHODS = (b"GET", b"HEAD", b"POST")
UPSTREAM_HEADER_LIMIT = 64 * 1024
READ_SIZE = 64 * 1024
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"host",
    }
)
# Headers by which a client could tell a server behind us what URL or address to act
# for (request routing and ACL bypasses of the X-Original-URL family). A phone never
# sends them; a request that does is refused, not cleaned (issue 10).
_CLIENT_FORWARDING = frozenset(
    {
        b"forwarded",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-original-uri",
        b"x-real-ip",
        b"x-client-ip",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-host",
        b"true-client-ip",
        b"client-ip",
        b"x-cluster-client-ip",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)
_MAC_FILE = re.compile(r"^([0-9A-Fa-f]{12})\.cfg$")
_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


# -- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One request on the provisioning port, as logged."""

    time: dt.datetime
    source: str
    method: str
    path: str
    mac: str | None
    icp: str | None
    status: int
    bytes_sent: int
    bytes_received: int
    duration: float
    outcome: str

    def line(self) -> str:
        return (
            f"{self.time.isoformat(timespec='milliseconds')} source={self.source} "
            f"method={self.method} path={self.path} mac={self.mac or '-'} "
            f"icp={self.icp or '-'} status={self.status} bytes={self.bytes_sent} "
            f"received={self.bytes_received} duration={self.duration:.3f}s "
            f'outcome="{self.outcome}"'
        )


@dataclass
class _Exchange:
    """What is known about the request being handled (filled as checks pass)."""

    source: str
    started: float
    method: str = "-"
    path: str = "-"
    mac: str | None = None
    icp: str | None = None
    status: int = 0
    sent: int = 0
    received: int = 0
    outcome: str = ""


@dataclass
class ProvisioningMetrics:
    """Counters per ICP (requests, status classes, bytes, upstream failures) and refusals
    before any ICP was known (by reason)."""

    per_icp: dict[str, Counter[str]] = field(default_factory=dict)
    refusals: Counter[str] = field(default_factory=Counter)

    def record(self, exchange: _Exchange) -> None:
        if exchange.icp is None:
            self.refusals[exchange.outcome.split(":", 1)[0]] += 1
            return
        counters = self.per_icp.setdefault(exchange.icp, Counter())
        counters["requests"] += 1
        counters[f"status_{exchange.status // 100}xx"] += 1
        counters["bytes_sent"] += exchange.sent
        counters["bytes_received"] += exchange.received
        kind = exchange.outcome.split(":", 1)[0]
        counters[kind] += 1

    def counters(self) -> dict[str, dict[str, int]]:
        """``{counter name: {label: value}}``, the shape of ``MetricsProvider.counters``."""
        out: dict[str, dict[str, int]] = {
            "provisioning_refusals_total": dict(self.refusals),
        }
        for icp, counters in sorted(self.per_icp.items()):
            for name, value in counters.items():
                out.setdefault(f"provisioning_{name}_total", {})[icp] = value
        return out


# -- hash → ICP --------------------------------------------------------------------------------


class IcpDirectory:
    """Provisioning hash → ICP, cached from the store.

    Lookups compare the SHA-256 of the requested hash with the SHA-256 of every known hash
    with :func:`hmac.compare_digest`, walking the whole table each time: the time taken
    does not depend on how much of a hash matched, nor on its length. The cache is
    reloaded when older than ``max_age`` seconds (changes made by another process, e.g.
    the CLI) and at once when the core's change bus reports an ICP change.
    """

    def __init__(self, store: Store, max_age: float = 5.0) -> None:
        self._store = store
        self.max_age = max_age
        self._entries: list[tuple[bytes, IcpRecord]] = []
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._loaded_at = None

    def _load(self) -> list[tuple[bytes, IcpRecord]]:
        return [
            (hashlib.sha256(h.encode()).digest(), icp)
            for icp in self._store.icps.list()
            for h in icp.hashes
        ]

    async def lookup(self, provisioning_hash: str) -> IcpRecord | None:
        now = time.monotonic()
        if self._loaded_at is None or now - self._loaded_at > self.max_age:
            async with self._lock:
                if self._loaded_at is None or time.monotonic() - self._loaded_at > self.max_age:
                    self._entries = await asyncio.to_thread(self._load)
                    self._loaded_at = time.monotonic()
        wanted = hashlib.sha256(provisioning_hash.lower().encode()).digest()
        found: IcpRecord | None = None
        for digest, icp in self._entries:
            if hmac.compare_digest(digest, wanted):
                found = icp
        return found


# -- errors while talking to one side ------------------------------------------------------------


class _SideError(Exception):
    def __init__(self, side: Literal["phone", "upstream"], reason: str, timeout: bool = False):
        super().__init__(reason)
        self.side = side
        self.reason = reason
        self.timeout = timeout


async def _next_event(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    timeout: float,
    side: Literal["phone", "upstream"],
) -> h11.Event:
    """The next h11 event, reading as needed; each read waits at most ``timeout``."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _SideError(side, f"protocol error: {exc}") from None
        if event is h11.PAUSED:
            # Only after a complete message, which callers never read past.
            raise _SideError(side, "pipelined data before the response")
        if event is not h11.NEED_DATA:
            assert isinstance(event, h11.Event)
            return event
        try:
            async with asyncio.timeout(timeout):
                data = await reader.read(READ_SIZE)
        except TimeoutError:
            raise _SideError(side, "timeout", timeout=True) from None
        except (ConnectionError, OSError) as exc:
            raise _SideError(side, f"connection lost: {exc}") from None
        conn.receive_data(data)


async def _drain(
    writer: asyncio.StreamWriter, timeout: float, side: Literal["phone", "upstream"]
) -> None:
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        raise _SideError(side, "write timeout", timeout=True) from None
    except (ConnectionError, OSError) as exc:
        raise _SideError(side, f"connection lost: {exc}") from None


def _forwarded_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    named = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(n, v) for n, v in headers if n not in _HOP_BY_HOP and n not in named]


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(str(cert), str(key))
    return context


# -- the server ----------------------------------------------------------------------------------


class ProvisioningServer:
    """The HTTPS provisioning proxy as a start/stop object (``serve_provisioning`` wraps it).

    ``host``/``port`` default to ``settings.provisioning.bind``/``port`` (4445; 0 picks a
    free port, read it back from :attr:`port`). The certificate is
    ``provisioning.tls_cert``/``tls_key``, else ``<data_dir>/tls/provisioning.pem`` issued
    by Limen's CA (made here if missing). ``clock`` (monotonic seconds) drives the rate
    limit and the hash-guessing block; ``on_access`` receives every :class:`AccessRecord`.
    """

    def __init__(
        self,
        core: Core,
        host: str | None = None,
        port: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_access: Callable[[AccessRecord], None] | None = None,
        on_auth_failure: Callable[[str, str | None, str], None] | None = None,
    ) -> None:
        self.core = core
        self.settings = core.settings
        self.options = core.settings.provisioning
        self.host = host if host is not None else self.options.bind
        self._port = port if port is not None else self.options.port
        self.clock = clock
        self.on_access = on_access
        # Called with (source IP, user or None, "provisioning") for every request for an
        # unknown hash or a malformed path: the hook for a process-wide ban registry.
        self.on_auth_failure = on_auth_failure
        self.directory = IcpDirectory(core.store)
        self.metrics = ProvisioningMetrics()
        self.recent: deque[AccessRecord] = deque(maxlen=256)
        opts = self.options
        self.rate = RateLimiter(opts.rate_limit_per_minute / 60.0, opts.rate_limit_burst)
        self.guard = GuessGuard(opts.guess_limit, opts.guess_window, opts.guess_block)
        self.upstream: UpstreamTls | ClientTls = upstream_tls(self.settings)
        self._per_icp_tls: dict[str, tuple[object, UpstreamTls | ClientTls]] = {}
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_source: Counter[str] = Counter()
        self._handshaking: Counter[str] = Counter()
        # Connections in their TLS handshake, oldest first (dicts keep insertion order).
        self._in_handshake: dict[asyncio.Task[None], str] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def _upstream_for(self, icp: IcpRecord) -> UpstreamTls | ClientTls:
        """The ICP's own trust when it sets any ``tls_*`` field (issue 15), else the
        global one; built once per ICP configuration."""
        if not (icp.tls_ca_file or icp.tls_pin_sha256 or not icp.tls_verify):
            return self.upstream
        key = (
            icp.guid,
            icp.tls_verify,
            icp.tls_ca_file,
            icp.tls_pin_sha256,
            icp.tls_server_name,
            icp.tls_client_cert,
            icp.tls_client_key,
            icp.address,
        )
        cached = self._per_icp_tls.get(icp.guid)
        if cached is None or cached[0] != key:
            cached = (key, upstream_tls(self.settings, icp))
            self._per_icp_tls[icp.guid] = cached
        return cached[1]

    def _trust_event(self, icp: IcpRecord, reason: str) -> None:
        """A refused PBX certificate is an alarm (written off the loop)."""
        store = self.core.store

        def write() -> None:
            try:
                store.events.add(
                    f"provisioning link to ICP {icp.name} refused: {reason}",
                    kind="alarm",
                    severity="major",
                    source="icp-link",
                )
            except Exception:
                log.exception("could not record the event")

        asyncio.get_running_loop().run_in_executor(None, write)

    # -- lifecycle -------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        item = slot(self.settings, "provisioning")
        if not item.operator and not (item.cert_path.exists() and item.key_path.exists()):
            ensure_certificates(self.settings, self.core, only=["provisioning"])
        return server_tls_context(item.cert_path, item.key_path)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._listener is None:
            raise RuntimeError("the provisioning server is not listening")
        return int(self._listener.getsockname()[1])

    @property
    def handshakes_in_progress(self) -> int:
        return len(self._in_handshake)

    @property
    def connections(self) -> int:
        return sum(self._per_source.values())

    async def start(self) -> None:
        context = await asyncio.to_thread(self._tls_context)
        if not self.upstream.verifies:
            log.warning("%s", NO_VERIFY_WARNING)
        loop = asyncio.get_running_loop()
        self._unsubscribe = self.core.bus.subscribe(self._on_change, loop)
        try:
            # Our own accept loop rather than asyncio.start_server(ssl=...): there, a
            # connection reaches us only once its handshake is over, so handshakes in
            # progress escaped every limit (issue 10: 6,000 pending, +500 MB). Here each
            # is counted from accept() on, per source and in total.
            self._listener = _listening_socket(self.host, self._port)
            self._accepting = loop.create_task(
                self._accept_loop(self._listener, context), name="limen-provisioning-accept"
            )
        except BaseException:
            self._unsubscribe()
            self._unsubscribe = None
            raise
        log.info(
            "provisioning proxy listening on https://%s:%d (upstream TLS: %s)",
            self.host,
            self.port,
            self.upstream.mode,
        )

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._listener is None:
            return
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._listener = None

    async def wait(self) -> None:
        if self._accepting is not None:
            await asyncio.shield(self._accepting)

    def counters(self) -> dict[str, dict[str, int]]:
        return self.metrics.counters()

    def _on_change(self, change: Change) -> None:
        if change.resource == "icp":
            self.directory.invalidate()

    # -- connections -----------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as exc:
                # Out of descriptors (EMFILE) and the like: wait, do not spin.
                log.warning("provisioning: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            source = str(peer[0])
            refused = self._refusal(source)
            if refused is not None:
                self.metrics.refusals[refused] += 1
                sock.close()
                continue
            if self.handshakes_in_progress >= self.options.max_handshakes:
                # Full: the oldest pending handshake makes room. A phone's handshake takes
                # milliseconds, so the oldest ones are the stalled ones; refusing the new
                # one instead would let a flood from many addresses lock phones out.
                oldest = next(iter(self._in_handshake))
                del self._in_handshake[oldest]
                oldest.cancel()
                self.metrics.refusals["handshake_evicted"] += 1
            self._per_source[source] += 1
            self._handshaking[source] += 1
            task = loop.create_task(self._accept(sock, source, context))
            self._in_handshake[task] = source
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _refusal(self, source: str) -> str | None:
        """Why a new connection from ``source`` is refused, or None."""
        opts = self.options
        if (
            self.connections >= opts.max_connections
            or self._per_source[source] >= opts.max_connections_per_source
        ):
            return "connection_limit"
        if self._handshaking[source] >= opts.max_handshakes_per_source:
            return "handshake_limit"
        return None

    def _handshake_over(self, source: str) -> None:
        self._handshaking[source] -= 1
        if self._handshaking[source] <= 0:
            del self._handshaking[source]

    async def _accept(self, sock: socket.socket, source: str, context: ssl.SSLContext) -> None:
        """One connection, counted from accept(): the TLS handshake, then HTTP."""
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            reader = asyncio.StreamReader(limit=READ_SIZE)
            protocol = asyncio.StreamReaderProtocol(reader)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    sock,
                    ssl=context,
                    ssl_handshake_timeout=self.options.handshake_timeout,
                )
            except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
                self.metrics.refusals["handshake_failed"] += 1
                log.debug("provisioning: TLS handshake with %s failed: %s", source, exc)
                with contextlib.suppress(OSError):
                    sock.close()
                return
            except BaseException:  # cancelled: evicted, or the server stops
                with contextlib.suppress(OSError):
                    sock.close()
                raise
            finally:
                self._handshake_over(source)
                task = asyncio.current_task()
                if task is not None:
                    self._in_handshake.pop(task, None)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve_connection(reader, writer, source)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("provisioning connection from %s failed", source)
        finally:
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        opts = self.options
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=opts.max_header_bytes)
        first = True
        while True:
            exchange = _Exchange(source=source, started=time.monotonic())
            try:
                async with asyncio.timeout(opts.header_timeout if first else opts.idle_timeout):
                    event = await _next_event(conn, reader, opts.idle_timeout, "phone")
            except TimeoutError:
                return
            except _SideError as exc:
                if exc.timeout or not exc.reason.startswith("protocol error"):
                    return
                exchange.outcome = f"bad_request: {exc.reason}"
                await self._refuse(conn, writer, exchange, 400)
                return
            if not isinstance(event, h11.Request):
                return
            try:
                keep = await self._handle(conn, reader, writer, event, exchange)
            except _SideError as exc:
                exchange.outcome = exchange.outcome or f"error: {exc.side} {exc.reason}"
                keep = False
            if keep and conn.their_state is h11.SEND_BODY:
                # Answered without needing the body (GET, HEAD): read its end to reuse the
                # connection; a body of more than a few bytes ends it instead.
                keep = await self._discard_body(conn, reader)
            self._log(exchange)
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            first = False

    async def _discard_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bool:
        left = 4096
        try:
            while True:
                event = await _next_event(conn, reader, self.options.idle_timeout, "phone")
                if isinstance(event, h11.EndOfMessage):
                    return True
                if not isinstance(event, h11.Data) or len(event.data) > left:
                    return False
                left -= len(event.data)
        except _SideError:
            return False

    def _log(self, exchange: _Exchange) -> None:
        record = AccessRecord(
            time=dt.datetime.now(dt.UTC),
            source=exchange.source,
            method=exchange.method,
            path=exchange.path,
            mac=exchange.mac,
            icp=exchange.icp,
            status=exchange.status,
            bytes_sent=exchange.sent,
            bytes_received=exchange.received,
            duration=time.monotonic() - exchange.started,
            outcome=exchange.outcome or "ok",
        )
        self.metrics.record(exchange)
        self.recent.append(record)
        access_log.info("%s", record.line())
        if self.on_access is not None:
            self.on_access(record)

    async def _respond(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
        status: int,
        body: bytes,
        *,
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: list[tuple[bytes, bytes]] | None = None,
        close: bool = False,
    ) -> None:
        """A complete response made by Limen (not the PBX's)."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        all_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *(headers or []),
        ]
        if close:
            all_headers.append((b"connection", b"close"))
        exchange.status = status
        head = conn.send(
            h11.Response(status_code=status, headers=all_headers, reason=_REASONS.get(status, b""))
        )
        writer.write(head or b"")
        if body and exchange.method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
            exchange.sent += len(body)
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await _drain(writer, self.options.idle_timeout, "phone")

    async def _refuse(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
        status: int,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A refusal: a short fixed body, and the connection is closed."""
        body = f"{status} {_REASONS.get(status, b'').decode()}\n".encode()
        with contextlib.suppress(_SideError):
            await self._respond(conn, writer, exchange, status, body, headers=headers, close=True)
        if exchange.method == "-":
            self._log(exchange)

    async def _rate_allows(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        exchange: _Exchange,
        key: str,
        now: float,
    ) -> bool:
        if self.rate.allow(key, now):
            return True
        wait = self.rate.retry_after(key, now)
        exchange.outcome = "rate_limited"
        await self._refuse(conn, writer, exchange, 429, [(b"retry-after", b"%d" % (wait + 1))])
        return False

    def _strike(self, source: str, now: float) -> None:
        if self.on_auth_failure is not None:
            try:
                self.on_auth_failure(source, None, "provisioning")
            except Exception:
                log.exception("on_auth_failure hook failed")
        if self.guard.strike(source, now):
            opts = self.options
            message = (
                f"provisioning: {source} blocked for {opts.guess_block:.0f} s after "
                f"{opts.guess_limit} requests for unknown hashes or malformed paths"
            )
            log.warning("%s", message)
            task = asyncio.create_task(self._event(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _event(self, message: str) -> None:
        try:
            await asyncio.to_thread(
                self.core.store.events.add,
                message,
                kind="alarm",
                severity="minor",
                source="provisioning",
            )
        except Exception:
            log.exception("could not record the event %r", message)

    # -- one request -----------------------------------------------------------------

    async def _handle(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        exchange: _Exchange,
    ) -> bool:
        """Answer one request; returns whether the connection may be kept alive."""
        source = exchange.source
        exchange.method = request.method.decode("ascii", "replace")[:16]
        headers = {name: value for name, value in request.headers}
        agent = headers.get(b"user-agent", b"").decode("latin-1")
        exchange.mac = mac_from_user_agent(agent)
        now = self.clock()

        head_size = len(request.method) + len(request.target) + 12
        head_size += sum(len(name) + len(value) + 4 for name, value in request.headers)
        if head_size > self.options.max_header_bytes:
            # h11 only bounds a head still incomplete; one read may bring a whole big one.
            exchange.outcome = "bad_request: request line and headers too large"
            await self._refuse(conn, writer, exchange, 400)
            return False
        if request.method not in METHODS:
            exchange.outcome = "method_not_allowed"
            await self._refuse(conn, writer, exchange, 405, [(b"allow", b"GET, HEAD, POST")])
            return False
        forwarding = next(
            (
                name
                for name, _ in request.headers
                if name in _CLIENT_FORWARDING or name.startswith(b"x-forwarded")
            ),
            None,
        )
        if forwarding is not None:
            exchange.outcome = f"bad_request: client forwarding header {forwarding.decode()}"
            await self._refuse(conn, writer, exchange, 400)
            return False
        if request.method in (b"GET", b"HEAD") and (
            b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"
        ):
            # A body on a GET is how a second request is smuggled past us to a server
            # that reads it; nothing a phone fetches has one (RFC 9110 §9.3.1).
            exchange.outcome = "bad_request: body on GET or HEAD"
            await self._refuse(conn, writer, exchange, 400)
            return False
        target: HashTarget | None = None
        icp: IcpRecord | None = None
        refusal: Refusal | None = None
        try:
            target = parse_target(request.target)
        except Refusal as refused:
            refusal = refused
        else:
            icp = await self.directory.lookup(target.hash)
        if icp is None or target is None:
            # Hash guessing and malformed paths. The block is keyed on the source address,
            # but it only ever refuses requests that fail anyway: a phone behind the same
            # NAT, asking for a hash that exists, is not held by it (docs/security.md).
            left = self.guard.blocked(source, now)
            if left is not None:
                exchange.outcome = "blocked: hash guessing"
                await self._refuse(
                    conn, writer, exchange, 403, [(b"retry-after", b"%d" % (left + 1))]
                )
                return False
            if not await self._rate_allows(conn, writer, exchange, source, now):
                return False
            self._strike(source, now)
            if refusal is None:
                refusal = Refusal(404, "unknown hash")
            exchange.outcome = (
                "unknown_hash" if refusal.status == 404 else f"bad_request: {refusal.reason}"
            )
            await self._refuse(conn, writer, exchange, refusal.status)
            return False
        exchange.path = target.redacted_path
        exchange.mac = mac_from_filename(target.filename) or exchange.mac
        # Requests for a real hash have a token bucket of their own per source, so a
        # guesser draining its address's bucket does not starve the phones behind it.
        if not await self._rate_allows(conn, writer, exchange, f"{source} {target.hash}", now):
            return False
        exchange.icp = icp.name
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.options.max_request_body:
            exchange.outcome = "request_too_large"
            await self._refuse(conn, writer, exchange, 413)
            return False
        if icp.serves_configs:
            return await self._serve_local(conn, writer, request, target, icp, exchange)
        if not icp.link_enabled:
            exchange.outcome = "link_disabled"
            await self._refuse(conn, writer, exchange, 503)
            return False
        return await self._proxy(conn, reader, writer, request, target, icp, exchange)

    # -- Limen serves the files --------------------------------------------------------

    async def _serve_local(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        target: HashTarget,
        icp: IcpRecord,
        exchange: _Exchange,
    ) -> bool:
        if request.method == b"POST":
            exchange.outcome = "method_not_allowed"
            await self._refuse(conn, writer, exchange, 405, [(b"allow", b"GET, HEAD")])
            return False
        try:
            body = await asyncio.to_thread(self._render_file, target.filename, icp)
        except ConfigValueError as exc:
            log.error("cannot render %s for ICP %s: %s", exchange.path, icp.name, exc)
            exchange.outcome = f"error: {exc.field} cannot be rendered"
            await self._refuse(conn, writer, exchange, 500)
            return False
        except ValueError as exc:
            log.error("cannot render %s for ICP %s: %s", exchange.path, icp.name, exc)
            exchange.outcome = "error: cannot render"
            await self._refuse(conn, writer, exchange, 500)
            return False
        if body is None:
            exchange.outcome = "no_such_file"
            await self._respond(conn, writer, exchange, 404, b"404 Not Found\n")
            return True
        content_type = (
            b"application/x-pem-file"
            if target.filename == CA_FILE
            else b"text/plain; charset=utf-8"
        )
        exchange.outcome = "served"
        await self._respond(conn, writer, exchange, 200, body, content_type=content_type)
        return True

    def _render_file(self, filename: str, icp: IcpRecord) -> bytes | None:
        """The file Limen serves for ``filename`` (None: no such file). Runs in a thread."""
        settings = self.settings
        ca_file = ca_paths(settings)[0]
        lowered = filename.lower()
        if lowered == SHARED_FILE:
            profile = profile_for(settings, icp, with_ca=ca_file.exists())
            return render_shared(profile).encode()
        if filename == CA_FILE:
            return ca_file.read_bytes() if ca_file.exists() else None
        found = _MAC_FILE.match(filename)
        if found is None:
            return None
        device = _device_by_mac(self.core.store, icp, found.group(1).upper())
        if device is None:
            return None
        return render_phone(line_for(*device)).encode()

    # -- forwarding to the PBX ---------------------------------------------------------

    def _upstream_request_headers(
        self, request: h11.Request, icp: IcpRecord, source: str
    ) -> list[tuple[bytes, bytes]]:
        address = icp.address if ":" not in icp.address else f"[{icp.address}]"
        forwarded = _forwarded_headers(list(request.headers))
        chunked = any(
            n == b"transfer-encoding" and b"chunked" in v.lower() for n, v in request.headers
        )
        if chunked:
            # Never both framings toward the PBX (request smuggling, RFC 9112 §6.3).
            forwarded = [(n, v) for n, v in forwarded if n != b"content-length"]
            forwarded.append((b"transfer-encoding", b"chunked"))
        return [
            (b"host", f"{address}:{icp.xml_destination_port}".encode()),
            *forwarded,
            (b"x-forwarded-for", source.encode()),
            (b"connection", b"close"),
        ]

    async def _proxy(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        target: HashTarget,
        icp: IcpRecord,
        exchange: _Exchange,
    ) -> bool:
        opts = self.options
        tls = self._upstream_for(icp) if icp.tls else None
        try:
            up_reader, up_writer = await connect(
                icp.address, icp.xml_destination_port, tls, opts.connect_timeout
            )
        except UpstreamError as exc:
            log.warning("provisioning: ICP %s: %s", icp.name, exc.reason)
            if "certificate" in exc.reason:
                self._trust_event(icp, exc.reason)
            exchange.outcome = f"upstream_error: {exc.reason}"
            await self._refuse(conn, writer, exchange, exc.status)
            return False
        client = h11.Connection(h11.CLIENT, max_incomplete_event_size=UPSTREAM_HEADER_LIMIT)
        started = clean = False
        try:
            headers = self._upstream_request_headers(request, icp, exchange.source)
            up_writer.write(
                client.send(h11.Request(method=request.method, target=target.raw, headers=headers))
                or b""
            )
            if conn.their_state is h11.SEND_BODY:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                    )
                while True:
                    event = await _next_event(conn, reader, opts.idle_timeout, "phone")
                    if isinstance(event, h11.Data):
                        exchange.received += len(event.data)
                        if exchange.received > opts.max_request_body:
                            exchange.outcome = "request_too_large"
                            await self._refuse(conn, writer, exchange, 413)
                            return False
                        up_writer.write(client.send(h11.Data(data=event.data)) or b"")
                        await _drain(up_writer, opts.read_timeout, "upstream")
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        raise _SideError("phone", "unexpected event in request body")
            up_writer.write(client.send(h11.EndOfMessage()) or b"")
            await _drain(up_writer, opts.read_timeout, "upstream")

            while True:
                event = await _next_event(client, up_reader, opts.read_timeout, "upstream")
                if isinstance(event, h11.Response):
                    response = event
                    break
                if not isinstance(event, h11.InformationalResponse):
                    raise _SideError("upstream", "no response")
            declared = dict(response.headers).get(b"content-length")
            if declared is not None and int(declared) > opts.max_response_bytes:
                exchange.outcome = f"upstream_error: response of {int(declared)} bytes is too large"
                await self._refuse(conn, writer, exchange, 502)
                return False
            exchange.status = response.status_code
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=response.status_code,
                        headers=_forwarded_headers(list(response.headers)),
                        reason=response.reason,
                    )
                )
                or b""
            )
            started = True
            while True:
                event = await _next_event(client, up_reader, opts.read_timeout, "upstream")
                if isinstance(event, h11.Data):
                    if exchange.sent + len(event.data) > opts.max_response_bytes:
                        exchange.outcome = "upstream_error: response above the size cap, cut"
                        return False
                    writer.write(conn.send(h11.Data(data=event.data)) or b"")
                    exchange.sent += len(event.data)
                    await _drain(writer, opts.idle_timeout, "phone")
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise _SideError("upstream", "unexpected event in response body")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await _drain(writer, opts.idle_timeout, "phone")
            exchange.outcome = "proxied"
            clean = True
            return True
        except _SideError as exc:
            if exc.side == "phone":
                exchange.outcome = f"error: phone {exc.reason}"
                return False
            reason = "timeout" if exc.timeout else exc.reason
            log.warning("provisioning: ICP %s: upstream %s", icp.name, reason)
            if started:
                exchange.outcome = f"upstream_error: {reason} (response cut)"
                return False
            exchange.outcome = f"upstream_{'timeout' if exc.timeout else 'error'}: {reason}"
            await self._refuse(conn, writer, exchange, 504 if exc.timeout else 502)
            return False
        except (h11.LocalProtocolError, ValueError) as exc:
            # e.g. the PBX sent more or fewer bytes than its Content-Length announced.
            exchange.outcome = f"upstream_error: {exc}"
            if not started:
                await self._refuse(conn, writer, exchange, 502)
            return False
        finally:
            if clean:
                up_writer.close()
            else:
                # A PBX that failed us gets no graceful TLS shutdown to wait for.
                up_writer.transport.abort()


def _device_by_mac(
    store: Store, icp: IcpRecord, mac: str
) -> tuple[DeviceRecord, DeviceCredentials] | None:
    """The device of ``icp`` whose MAC is ``mac`` (another ICP's device is not found)."""
    try:
        device = store.devices.get(mac)
    except NotFound:
        return None
    if device.clientid != mac:
        # The key matched a set-side username first: look for the MAC itself.
        matches = [d for d in store.devices.list(icp=icp.guid) if d.clientid == mac]
        if not matches:
            return None
        device = matches[0]
    if device.icp_guid != icp.guid:
        return None
    return device, store.devices.credentials(device.guid)


async def serve_provisioning(core: Core, host: str | None = None, port: int | None = None) -> None:
    """Run the HTTPS provisioning proxy until cancelled, on the running event loop.

    Call it from Limen's composition root as a task next to the SIP listeners and the
    admin API::

        if settings.provisioning.enabled:
            prov_task = asyncio.create_task(serve_provisioning(core))
        ...
        prov_task.cancel()          # graceful: closes the listener and open connections

    ``core`` is a :class:`limen.core.Core` (``Core.open(settings)``). Host and port default
    to ``settings.provisioning.bind`` / ``port`` (4445). Run
    :func:`limen.certs.ensure_certificates` first (``limen init`` / ``serve``); if the
    provisioning certificate is still missing it is issued here. For tests or when the
    bound port is needed, use :class:`ProvisioningServer` (``start``/``port``/``stop``).
    """
    server = ProvisioningServer(core, host, port)
    await server.start()
    try:
        await server.wait()
    except asyncio.CancelledError:
        await server.stop()
        raise


__all__ = [
    "AccessRecord",
    "IcpDirectory",
    "ProvisioningMetrics",
    "ProvisioningServer",
    "serve_provisioning",
]


def _listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket for ``host`` (IPv4 or IPv6 literal or name)."""
    family = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0][0]
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock
