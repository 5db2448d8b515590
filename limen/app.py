"""Composition root: builds Limen's parts from the settings and runs them on one event loop.

``prepare(settings)`` does the one-time setup (data folder, generated certificates) and
says what it did. ``start(settings)`` starts everything and returns a handle (tests use it
in-process, with port 0 for ephemeral ports). ``run(settings, announce)`` is what
``limen serve`` calls: start, announce, wait for SIGINT/SIGTERM, close.

Wiring only: policy lives in ``limen.gateway``, mechanisms below it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from limen.api.server import ApiServer
from limen.certs import ensure_certificates, watch_certificates
from limen.config import Settings
from limen.control import ControlServer, bans_path, load_bans, save_bans
from limen.core import Core, MetricsProvider, MetricsSample
from limen.core import GatewayView as GatewayReader
from limen.gateway.auth import SetSideAuth
from limen.gateway.calls import CALL_EXTENSIONS, CallController
from limen.gateway.context import (
    Directory,
    GatewayContext,
    local_addresses,
)
from limen.gateway.gateway import Gateway
from limen.gateway.guard import Guard, ban_line
from limen.gateway.history import GatewayView, RecentCalls, SipHistory
from limen.gateway.icplink import IcpLinks
from limen.gateway.keepalive import Keepalive
from limen.gateway.media import PassthroughMedia, RelayMedia
from limen.gateway.media_setup import create_relay_media
from limen.gateway.metrics import GatewayMetrics, Readings
from limen.gateway.registrar import Registrar
from limen.gateway.stack import SipStack
from limen.gateway.upstream import UpstreamRegistrar
from limen.ops.listeners import api_host
from limen.provisioning import ProvisioningServer
from limen.rlimits import raise_open_files_limit
from limen.security import Ban
from limen.sip.addressing import Source, Transport
from limen.sip.message import Request, Response
from limen.sip.transaction import TimerConfig, TransactionLayer, response_destination
from limen.store import Change, init_data, open_store
from limen.store.bindings import BindingRepository
from limen.store.realm import resolve_realm, with_realm
from limen.transport import Limits, Listener, TransportLayer
from limen.transport.addresses import family_of, format_hostport
from limen.transport.tls import ensure_sip_certificate, server_context

log = logging.getLogger("limen")

Announce = Callable[[str], Any]


def prepare(settings: Settings) -> list[str]:
    """Create the data folder, the store (key file, database, first admin) and the SIP
    TLS certificate if needed; describe what was done. Safe to run again."""
    lines: list[str] = []
    data = settings.data_path
    if not data.exists():
        data.mkdir(parents=True, exist_ok=True)
        lines.append(f"created data folder {data}")
    made = init_data(settings)
    lines.extend(made)
    # init_data makes a provisional self-signed API pair that Limen's CA replaces just
    # below: on a fresh install say "first issue", not "replacing a self-signed one".
    fresh_api = any(line.startswith("created admin API certificate") for line in made)
    # Limen's own CA and the certificates of the SIP, provisioning and admin listeners,
    # with the SANs of the configuration and of MBG-style overrides rows (issue 6).
    store = open_store(settings)
    try:
        resolve_realm(store, settings)
        for line in ensure_certificates(settings, store):
            if fresh_api and line.startswith("issued admin API certificate"):
                line = line.replace(
                    "now signed by Limen's CA, replacing a self-signed one", "first issue"
                )
            lines.append(line)
        if fresh_api:
            lines = [line for line in lines if not line.startswith("created admin API certificate")]
    finally:
        store.close()
    if settings.sip.tls:
        cert, key, generated = ensure_sip_certificate(settings)
        if generated:
            names = ", ".join(n for n in (settings.public_fqdn, settings.public_ip) if n)
            lines.append(
                f"generated self-signed SIP TLS certificate {cert} (key {key})"
                + (f" for {names}" if names else "")
            )
    return lines


@dataclass
class RunningApp:
    """What ``start`` returns: the running parts, the bound listeners, and ``close()``."""

    settings: Settings
    transport: TransportLayer
    stack: SipStack
    core: Core
    listeners: list[Listener] = field(default_factory=list)
    api: ApiServer | None = None
    provisioning: ProvisioningServer | None = None
    metrics: GatewayMetrics | None = None
    config_watch: asyncio.Task[None] | None = None
    cert_watch: asyncio.Task[None] | None = None
    media: RelayMedia | None = None
    registrar: Registrar | None = None
    keepalive: Keepalive | None = None
    calls: CallController | None = None
    unsubscribe: Callable[[], None] | None = None
    guard: Guard | None = None
    control: ControlServer | None = None
    guard_task: asyncio.Task[None] | None = None
    links: IcpLinks | None = None
    services: ServiceLoop | None = None

    def port(self, transport: Transport, family: socket.AddressFamily = socket.AF_INET) -> int:
        """The port actually bound for ``transport`` (useful with port 0)."""
        for listener in self.listeners:
            if listener.transport is transport and family_of(listener.host) == family:
                return listener.port
        raise LookupError(f"no {transport.value} listener for {family.name}")

    def describe(self) -> list[str]:
        lines = [f"listening on {listener}" for listener in self.listeners]
        if self.api is not None:
            host = format_hostport(self.api.host, self.api.port)
            lines.append(f"admin API on https://{host}/mslrest/")
            lines.append(f"admin console on https://{host}/console/")
        if self.provisioning is not None:
            lines.append(
                f"provisioning on https://{self.settings.provisioning.bind}:"
                f"{self.provisioning.port}/<hash>/"
            )
        return lines

    async def close(self) -> None:
        try:
            if self.unsubscribe is not None:
                self.unsubscribe()
            if self.keepalive is not None:
                await self.keepalive.close()
            if self.registrar is not None:
                await self.registrar.close()
            if self.links is not None:
                self.links.close()
            if self.control is not None:
                await self.control.stop()
            if self.guard is not None:
                _save_bans(self.settings, self.guard)
            for task in (self.config_watch, self.guard_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.metrics is not None:
                await self.metrics.close()
            if self.cert_watch is not None:
                self.cert_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.cert_watch
            if self.provisioning is not None:
                await self._on_services(self.provisioning.stop())
            if self.api is not None:
                await self._on_services(self.api.stop())
            if self.services is not None:
                self.services.close()
            if self.media is not None:
                await self.media.close()
            if self.calls is not None:
                self.calls.close()
            self.stack.close()
            await self.transport.close()
        finally:
            self.core.close()

    async def _on_services(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self.services is None:
            return await coro
        return await self.services.run(coro)

    async def __aenter__(self) -> RunningApp:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start(settings: Settings) -> RunningApp:
    """Start the SIP listeners of every enabled transport on ``bind`` (and ``bind6``)."""
    sip = settings.sip
    transport = TransportLayer(limits=Limits.from_settings(sip), server_header=sip.server_header)
    # Over UDP, answer the packet's source port even without rport (kamailio's
    # force_rport()): phones behind NAT cannot be reached on the port their Via names.
    layer = TransactionLayer(
        TimerConfig(t1=sip.t1, t2=sip.t2, t4=sip.t4),
        auto_trying=False,  # the stack says Trying after the gateway, unless it answered
        response_destination=functools.partial(response_destination, force_rport=True),
    )
    stack = SipStack(transport, layer)
    transport.on_send_error = stack.send_error
    core = Core.open(settings)
    # One stable digest realm (limen.store.realm): never derived from public_fqdn anew.
    settings = with_realm(settings, resolve_realm(core.store, settings))
    core.settings = settings
    directory = Directory.load(core.store)
    guard = _guard(settings, core, directory)
    transport.source_filter = guard.allow_sip_packet  # bans, ACL, rate: before parsing

    def receive(message: Request | Response, source: Source) -> None:
        if guard.screen(message, source):  # scanners' User-Agents
            stack.receive(message, source)

    transport.on_message = receive
    addresses = local_addresses(settings, directory)
    relay = create_relay_media(settings, addresses, directory) if settings.media.relay else None
    ctx = GatewayContext(
        settings=settings,
        stack=stack,
        directory=directory,
        addresses=addresses,
        media=relay if relay is not None else PassthroughMedia(),
        store=core.store,
    )
    links = IcpLinks(ctx, on_event=_event_recorder(core, "icp-link"))
    ctx.links = links
    core.icp_links = links
    transport.on_tls_refused = links.tls_refused
    registrar = Registrar(
        ctx,
        SetSideAuth(ctx, on_failure=guard.auth_failure),
        upstream=UpstreamRegistrar(ctx),
        repository=BindingRepository(core.store),
    )
    keepalive = Keepalive(ctx, registrar, max_misses=sip.keepalive_misses)
    calls = CallController(ctx, auth=registrar.auth, registrar=registrar)
    if relay is not None:
        relay.on_timeout = calls.media_timeout  # no media, or its worker lost: BYE both legs
        relay.engine.on_alarm = _alarm_recorder(core)
    stack.tu = Gateway(ctx, registrar=registrar, calls=calls, supported=CALL_EXTENSIONS)
    app = RunningApp(
        settings,
        transport,
        stack,
        core,
        registrar=registrar,
        keepalive=keepalive,
        calls=calls,
        guard=guard,
    )
    app.links = links
    app.metrics = _gateway_metrics(transport, stack, registrar, calls, relay, guard, links)
    core.metrics = app.metrics
    # The console's view: registrations, recent calls, each call's SIP messages (bounded).
    stack.history = SipHistory()
    recent = RecentCalls()
    calls.on_end = recent.add
    core.gateway = GatewayView(registrar, calls, stack.history, recent)
    reload_directory = _directory_reloader(ctx, registrar, guard, links)
    app.unsubscribe = core.bus.subscribe(reload_directory, asyncio.get_running_loop())
    app.config_watch = asyncio.create_task(
        _watch_config_version(core, reload_directory, settings.config_poll),
        name="limen-config-watch",
    )
    try:
        app.control = ControlServer(settings, guard)
        app.control.links = links.snapshot
        await app.control.start()
        app.guard_task = asyncio.create_task(_guard_upkeep(settings, guard), name="limen-guard")
        if relay is not None:
            await relay.start()
            app.media = relay
        if settings.api.enabled or settings.provisioning.enabled:
            # The admin API and the provisioning proxy get an event loop and a thread of
            # their own: a slow request there (argon2 logins, a big TMA export, a stalled
            # PBX) cannot hold the SIP loop, and the interpreter switches threads every
            # few milliseconds even under CPU-bound work. What they share with SIP: the
            # store (thread-safe, a session per operation), the change bus (it hands each
            # change to its subscriber's own loop) and the gateway's metrics, which are
            # read on the SIP loop (LoopBoundMetrics).
            app.services = ServiceLoop()
            app.services.start()
            core.metrics = LoopBoundMetrics(app.metrics, asyncio.get_running_loop())
            core.gateway = LoopBoundGateway(core.gateway, asyncio.get_running_loop())
        if settings.api.enabled:
            app.api = ApiServer(core, host=api_bind(settings, directory))
            await app._on_services(app.api.start())
        if settings.provisioning.enabled:
            app.provisioning = ProvisioningServer(core, on_auth_failure=core.auth_failure)
            await app._on_services(app.provisioning.start())
            core.provisioning_log = app.provisioning.recent
        app.metrics.start()
        app.cert_watch = asyncio.create_task(watch_certificates(core), name="limen-certs")
        tls_context = None
        if sip.tls:
            cert, key, _ = ensure_sip_certificate(settings)
            tls_context = server_context(cert, key)
        for host in [h for h in (sip.bind, sip.bind6) if h]:
            if sip.udp:
                app.listeners.append(await transport.listen_udp(host, sip.udp_port))
            if sip.tcp:
                app.listeners.append(await transport.listen_tcp(host, sip.tcp_port))
            if tls_context is not None:
                app.listeners.append(await transport.listen_tls(host, sip.tls_port, tls_context))
        for listener in app.listeners:
            ctx.addresses.ports.setdefault(listener.transport, listener.port)
        # After the listeners (pings name the bound ports), before the registrations:
        # IP literals are targets at once; names resolve in the background (bounded wait
        # here so the first REGISTERs find them).
        links.load(directory.icps.values())
        await asyncio.gather(
            *(links.wait_resolved(icp, timeout=3.0) for icp in directory.icps.values())
        )
        # After the listeners: upstream Contacts name the bound ports.
        await registrar.start()
        keepalive.start()
    except BaseException:
        await app.close()
        raise
    return app


def _guard(settings: Settings, core: Core, directory: Directory) -> Guard:
    """The guard of every listener, with the bans saved by the last run restored."""
    loop = asyncio.get_running_loop()

    def record(ban: Ban) -> None:  # an alarm per ban, written off the loop
        def write() -> None:
            try:
                core.store.events.add(
                    ban_line(ban), kind="alarm", severity="major", source="security"
                )
            except Exception:
                log.exception("could not record the ban event")

        loop.call_soon_threadsafe(lambda: loop.run_in_executor(None, write))

    guard = Guard(settings.security, on_ban=record)
    restored = guard.bans.restore(load_bans(bans_path(settings)), time.time())
    if restored:
        log.info("restored %d ban(s) in force", restored)
    guard.set_icp_addresses(icp.address for icp in directory.icps.values())
    core.security = guard
    return guard


def api_bind(settings: Settings, directory: Directory) -> str:
    """Where the admin API listens (:func:`limen.ops.listeners.api_host`)."""
    host = api_host(settings, [(icp.address, icp.port) for icp in directory.icps.values()])
    if host == "127.0.0.1" and not settings.api.bind:
        log.warning(
            "admin API on 127.0.0.1 only: no LAN address known yet (set sip.lan_ip, add an "
            "ICP, or set api.bind)"
        )
    return host


def _save_bans(settings: Settings, guard: Guard) -> None:
    try:
        save_bans(bans_path(settings), guard.list_bans())
    except OSError:
        log.warning("could not save the bans to %s", bans_path(settings), exc_info=True)


async def _guard_upkeep(settings: Settings, guard: Guard, interval: float = 2.0) -> None:
    """Save the bans when they change (so a restart keeps them) and expire old state."""
    saved = guard.changes
    ticks = 0
    while True:
        await asyncio.sleep(interval)
        ticks += 1
        if ticks % 30 == 0:
            guard.expire()
        if guard.changes != saved:
            saved = guard.changes
            await asyncio.to_thread(_save_bans, settings, guard)


_T = TypeVar("_T")


class ServiceLoop:
    """An event loop running in its own thread (for the admin API and provisioning)."""

    def __init__(self) -> None:
        factory = _loop_factory()
        self.loop = factory() if factory is not None else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="limen-services", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on this loop and wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class _OnOwnerLoop:
    """Runs reads on the loop that owns the state they read (the SIP loop): dicts of calls
    and bindings that loop mutates cannot be iterated from another thread. Calls from that
    loop's own thread go straight through."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._owner = threading.get_ident()

    def _on_owner(self, call: Callable[[], _T]) -> _T:
        if threading.get_ident() == self._owner:
            return call()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=5.0)


class LoopBoundMetrics(_OnOwnerLoop):
    """A :class:`MetricsProvider` read on the SIP loop."""

    def __init__(self, inner: MetricsProvider, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._inner = inner

    def current(self) -> MetricsSample:
        return self._on_owner(self._inner.current)

    def history(self, start: float, end: float) -> list[MetricsSample]:
        return self._on_owner(lambda: self._inner.history(start, end))

    def counters(self) -> dict[str, dict[str, int]]:
        return self._on_owner(self._inner.counters)

    def calls(self) -> list[dict[str, Any]]:
        return self._on_owner(self._inner.calls)


class LoopBoundGateway(_OnOwnerLoop):
    """The console's :class:`~limen.core.GatewayView`, read on the SIP loop like the
    metrics (registrations, recent calls and the SIP history are that loop's dicts)."""

    def __init__(self, inner: GatewayReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._view = inner

    def registrations(self) -> dict[str, dict[str, Any]]:
        return self._on_owner(self._view.registrations)

    def icp_links(self) -> dict[str, dict[str, int]]:
        return self._on_owner(self._view.icp_links)

    def recent_calls(self) -> list[dict[str, Any]]:
        return self._on_owner(self._view.recent_calls)

    def messages(self, call_ids: Iterable[str]) -> list[Any]:
        wanted = list(call_ids)
        return self._on_owner(lambda: self._view.messages(wanted))


def _gateway_metrics(
    transport: TransportLayer,
    stack: SipStack,
    registrar: Registrar,
    calls: CallController,
    relay: RelayMedia | None,
    guard: Guard | None = None,
    links: IcpLinks | None = None,
) -> GatewayMetrics:
    """MBG's metrics read from the running parts (``/mslrest/mbg/v1/metrics/``)."""

    def read() -> Readings:
        c = transport.counters
        media_bytes: dict[str, int] = {}
        drops: dict[str, int] = {}
        if relay is not None:
            media_bytes = relay.engine.bytes_received()
            drops = relay.engine.drops()
        return Readings(
            active_calls=calls.active_calls,
            active_connections=transport.connection_count,
            registrations=len(registrar.bindings()),
            calls_started=calls.calls_started,
            media_bytes=media_bytes,
            counters={
                "sip_messages_total": {"in": c.messages_in, "out": c.messages_out},
                "sip_errors_total": {
                    "parse": c.parse_errors,
                    "handler": c.handler_errors + stack.handler_errors,
                    "send": c.send_errors,
                },
                "calls_total": {"started": calls.calls_started},
                "media_packets_dropped_total": drops,
                **(guard.counters() if guard is not None else {}),
                **(links.counters if links is not None else {}),
            },
        )

    return GatewayMetrics(read, calls=calls.snapshot)


_CONFIG_RESOURCES = frozenset({"icp", "device", "options"})


async def _watch_config_version(
    core: Core, notify: Callable[[Change], None], interval: float
) -> None:
    """Reload when another process (the CLI, another node) changed the configuration:
    the change bus only reaches this process's own API changes; the store counts every
    committed change (``Store.config_version``)."""
    loop = asyncio.get_running_loop()
    store = core.store
    own = store.own_commits
    seen = await loop.run_in_executor(None, store.config_version)
    while True:
        await asyncio.sleep(interval)
        # Our own commits first, then the version: a commit of ours landing in between
        # then looks foreign (one harmless extra sync) rather than hiding a foreign one.
        own_now = store.own_commits
        try:
            version = await loop.run_in_executor(None, store.config_version)
        except Exception:
            log.warning("cannot read the configuration version", exc_info=True)
            continue
        foreign = (version - seen) - (own_now - own)
        seen, own = version, own_now
        if foreign != 0:
            # Another process committed: sync (its changes never reached our bus).
            notify(Change("device", "updated", "*"))


def _event_recorder(core: Core, source: str) -> Callable[[str, str, str], None]:
    """(message, severity, kind) → an event in the store, written off the loop."""
    loop = asyncio.get_running_loop()

    def record(message: str, severity: str, kind: str) -> None:
        def write() -> None:
            try:
                core.store.events.add(message, kind=kind, severity=severity, source=source)
            except Exception:
                log.exception("could not record the event")

        loop.run_in_executor(None, write)

    return record


def _alarm_recorder(core: Core) -> Callable[[str, str], None]:
    """The media engine's alarms (a worker stalled, died, restarted) as events."""
    record = _event_recorder(core, "media")

    def alarm(message: str, severity: str) -> None:
        record(message, severity, "alarm" if severity == "error" else "event")

    return alarm


def _directory_reloader(
    ctx: GatewayContext,
    registrar: Registrar,
    guard: Guard | None = None,
    links: IcpLinks | None = None,
) -> Callable[[Change], None]:
    """A bus subscriber: update the gateway's Directory when ICPs, devices or options
    change — only the entries the changes name (issue 13), read off the loop and coalesced
    (CSV imports) — then let the registrar follow added and removed devices."""
    queued: list[Change] = []
    running: list[asyncio.Task[None]] = []

    async def update() -> None:
        loop = asyncio.get_running_loop()
        try:
            while queued:
                await asyncio.sleep(0.05)  # coalesce bursts (CSV imports)
                changes = list(queued)
                queued.clear()
                store = ctx.store
                if store is None:
                    return
                directory = ctx.directory
                patch = await loop.run_in_executor(None, directory.fetch, store, changes)
                delta = directory.apply(patch)
                if delta.icps_changed:
                    if guard is not None:
                        guard.set_icp_addresses(icp.address for icp in directory.icps.values())
                    if links is not None:
                        links.load(directory.icps.values())
                registrar.directory_changed(None if delta.full else delta.added, delta.removed)
        except Exception:
            log.exception("could not update the gateway's configuration cache")
        finally:
            running.clear()

    def on_change(change: Change) -> None:
        if change.resource not in _CONFIG_RESOURCES:
            return
        queued.append(change)
        if not running:
            running.append(asyncio.get_running_loop().create_task(update()))

    return on_change


def _descriptors_needed(settings: Settings) -> int:
    """File descriptors the configured connection limits can take, plus room for the
    listeners, media sockets and the database."""
    needed = settings.sip.max_connections + 1024
    if settings.provisioning.enabled:
        needed += settings.provisioning.max_connections
    return needed


def run(settings: Settings, announce: Announce = print) -> None:
    """Run Limen in the foreground until SIGINT or SIGTERM (uvloop when available)."""
    warning = raise_open_files_limit(settings.max_open_files, _descriptors_needed(settings))
    if warning is not None:
        log.warning("%s", warning)
        announce(f"warning: {warning}")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings, announce))


async def _serve(settings: Settings, announce: Announce) -> None:
    app = await start(settings)
    # Latency: what start() built lives as long as the process; keep the cyclic collector
    # from rescanning it, and collect the young generation less often (SIP messages die
    # young and are freed by reference counting anyway). Gen-2 pauses with thousands of
    # bindings were the main source of retransmission-sized setup delays. Calls end
    # without reference cycles (Call.dispose); the oldest generation still runs every
    # 50,000 x 20 x 10 allocations (~10,000 calls) so that any cycle left elsewhere is
    # bounded: with (50_000, 50, 100) it waited ~250,000 calls and RSS grew ~20 KB a call.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for line in app.describe():
            announce(line)
        await stop.wait()
        announce("stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await app.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional in spirit
        return None
    return uvloop.new_event_loop
