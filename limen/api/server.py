"""Serving the admin API over HTTPS inside Limen's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from limen.api.app import create_app
from limen.certs import ensure_self_signed
from limen.core import Core
from limen.store import api_tls_paths

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host process owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def guarded_protocol(core: Core) -> type[H11Protocol]:
    """uvicorn's HTTP protocol, closing connections from banned or ACL-refused sources
    before they are read (no answer at all, issue 10)."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            guard = core.security
            peer = transport.get_extra_info("peername")
            if guard is not None and peer and not guard.allow_http(str(peer[0]), "api"):
                transport.abort()

    return GuardedH11Protocol


class ApiServer:
    """The HTTPS admin API as a start/stop object (``serve_api`` wraps it)."""

    def __init__(self, core: Core, host: str | None = None, port: int | None = None) -> None:
        settings = core.settings
        cert, key = api_tls_paths(settings)
        ensure_self_signed(
            Path(cert), Path(key), settings.public_fqdn or "limen.local", settings.public_ip
        )
        app = create_app(core)
        # The administrator's console beside the API (issue 12); ``console.on_auth_failure``
        # is where failed console logins are reported (the gateway's ban registry).
        from limen.web import mount_console

        self.console = mount_console(app, core)
        config = uvicorn.Config(
            app,
            host=host if host is not None else settings.api.bind,
            port=port if port is not None else settings.api.port,
            ssl_certfile=cert,
            ssl_keyfile=key,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            http=guarded_protocol(core),
        )
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def host(self) -> str:
        return str(self.server.config.host)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the API server is not listening")

    async def start(self) -> None:
        async def run() -> None:
            try:
                await self.server.serve()
            except SystemExit as exc:  # uvicorn exits when it cannot bind
                raise RuntimeError(
                    f"admin API could not listen on {self.server.config.host}:"
                    f"{self.server.config.port}"
                ) from exc

        self._task = asyncio.create_task(run(), name="limen-api")
        while not self.server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("admin API stopped while starting")
            await asyncio.sleep(0.01)
        log.info("admin API listening on https://%s:%d", self.server.config.host, self.port)

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        await self._task
        self._task = None

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)


async def serve_api(core: Core, host: str | None = None, port: int | None = None) -> None:
    """Run the HTTPS admin API until cancelled, on the running event loop.

    Call it from Limen's composition root as a task next to the SIP listeners::

        api_task = asyncio.create_task(serve_api(core))
        ...
        api_task.cancel()          # graceful: closes listeners and open connections

    ``core`` is a :class:`limen.core.Core` (``Core.open(settings)``). Host and port default
    to ``settings.api.bind`` / ``settings.api.port`` (8443). The certificate and key are
    ``settings.api.tls_cert`` / ``tls_key``, or a self-signed pair made on first use in
    the data directory (``api.crt``, ``api.key``) by ``limen.certs.ensure_self_signed``.
    """
    server = ApiServer(core, host, port)
    await server.start()
    try:
        await server.wait()
    except asyncio.CancelledError:
        await server.stop()
        raise
