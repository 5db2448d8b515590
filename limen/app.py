"""Composition root: builds Limen's parts from the settings and runs them on one event loop.

``prepare(settings)`` does the one-time setup (data folder, generated certificates) and
says what it did. ``start(settings)`` starts everything and returns a handle (tests use it
in-process, with port 0 for ephemeral ports). ``run(settings, announce)`` is what
``limen serve`` calls: start, announce, wait for SIGINT/SIGTERM, close.

Wiring only: policy lives in ``limen.gateway``, mechanisms below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from limen.api.server import ApiServer
from limen.config import Settings
from limen.core import Core
from limen.gateway.context import Directory, GatewayContext, local_addresses
from limen.gateway.gateway import Gateway
from limen.gateway.media import PassthroughMedia
from limen.gateway.stack import SipStack
from limen.sip.addressing import Transport
from limen.sip.transaction import TimerConfig, TransactionLayer, response_destination
from limen.store import init_data
from limen.transport import Limits, Listener, TransportLayer
from limen.transport.addresses import family_of
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
    lines.extend(init_data(settings))
    if settings.sip.tls:
        cert, key, generated = ensure_sip_certificate(settings)
        if generated:
            names = ", ".join(n for n in (settings.public_fqdn, settings.public_ip) if n)
            lines.append(
                f"generated self-signed SIP TLS certificate {cert} (key {key})"
                + (f" for {names}" if names else "")
            )
        else:
            lines.append(f"SIP TLS certificate {cert}")
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

    def port(self, transport: Transport, family: socket.AddressFamily = socket.AF_INET) -> int:
        """The port actually bound for ``transport`` (useful with port 0)."""
        for listener in self.listeners:
            if listener.transport is transport and family_of(listener.host) == family:
                return listener.port
        raise LookupError(f"no {transport.value} listener for {family.name}")

    def describe(self) -> list[str]:
        lines = [f"listening on {listener}" for listener in self.listeners]
        if self.api is not None:
            lines.append(f"admin API on https://{self.settings.api.bind}:{self.api.port}/mslrest/")
        return lines

    async def close(self) -> None:
        try:
            if self.api is not None:
                await self.api.stop()
            self.stack.close()
            await self.transport.close()
        finally:
            self.core.close()

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
        response_destination=functools.partial(response_destination, force_rport=True),
    )
    stack = SipStack(transport, layer)
    transport.on_message = stack.receive
    transport.on_send_error = stack.send_error
    core = Core.open(settings)
    directory = Directory.load(core.store)
    ctx = GatewayContext(
        settings=settings,
        stack=stack,
        directory=directory,
        addresses=local_addresses(settings, directory),
        media=PassthroughMedia(),
        store=core.store,
    )
    stack.tu = Gateway(ctx)
    app = RunningApp(settings, transport, stack, core)
    try:
        if settings.api.enabled:
            app.api = ApiServer(core)
            await app.api.start()
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
    except BaseException:
        await app.close()
        raise
    return app


def run(settings: Settings, announce: Announce = print) -> None:
    """Run Limen in the foreground until SIGINT or SIGTERM (uvloop when available)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings, announce))


async def _serve(settings: Settings, announce: Announce) -> None:
    app = await start(settings)
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
