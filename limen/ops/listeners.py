"""The sockets a configuration asks for, and whether each one is free to bind.

One table (``planned_listeners``) serves ``limen serve`` (a one-line "port in use" error
before anything starts), ``limen doctor`` (listeners bound / ports free) and ``limen
firewall`` (which ports to open).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from limen.certs import api_host
from limen.config import Settings

Proto = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True)
class PlannedListener:
    what: str  # "SIP/UDP", "admin API", ...
    proto: Proto
    host: str
    port: int
    setting: str  # the configuration key that sets the port
    faces: Literal["phones", "pbx", "admin", "both"]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.what} {self.proto.upper()} {host}:{self.port}"


def planned_listeners(
    settings: Settings, icps: Iterable[tuple[str, int]] = ()
) -> list[PlannedListener]:
    """Every listening socket ``limen serve`` opens with these settings (not the media
    ports, which are a range: see :func:`media_range`); ``icps`` (address, port) decide
    where an admin API without ``api.bind`` listens."""
    sip = settings.sip
    out: list[PlannedListener] = []
    for host in [h for h in (sip.bind, sip.bind6) if h]:
        if sip.udp:
            out.append(
                PlannedListener("SIP/UDP", "udp", host, sip.udp_port, "sip.udp_port", "both")
            )
        if sip.tcp:
            out.append(
                PlannedListener("SIP/TCP", "tcp", host, sip.tcp_port, "sip.tcp_port", "both")
            )
        if sip.tls:
            out.append(
                PlannedListener("SIP/TLS", "tcp", host, sip.tls_port, "sip.tls_port", "both")
            )
    if settings.provisioning.enabled:
        prov = settings.provisioning
        out.append(
            PlannedListener(
                "provisioning HTTPS", "tcp", prov.bind, prov.port, "provisioning.port", "phones"
            )
        )
    if settings.api.enabled:
        api = settings.api
        host = api_host(settings, icps)
        out.append(PlannedListener("admin API", "tcp", host, api.port, "api.port", "admin"))
    return out


def bind_error(listener: PlannedListener) -> OSError | None:
    """Try to bind the listener's address as the server would (SO_REUSEADDR for TCP,
    as asyncio does); None when it is free, else the error. Port 0 is always free."""
    if listener.port == 0:
        return None
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if listener.proto == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as sock:
            if listener.proto == "tcp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((listener.host.strip("[]"), listener.port))
            if listener.proto == "tcp":
                sock.listen(1)
    except OSError as exc:
        return exc
    return None


def describe_bind_error(listener: PlannedListener, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port in use: {listener} is already taken by another process "
            f"(stop it, or change {listener.setting} in the configuration file)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"permission denied binding {listener} (ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE; or change {listener.setting})"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot bind {listener}: {listener.host} is not an address of this machine "
            "(check the bind settings)"
        )
    return f"cannot bind {listener}: {exc.strerror or exc}"


def busy_listeners(settings: Settings) -> list[tuple[PlannedListener, OSError]]:
    out = []
    for listener in planned_listeners(settings):
        exc = bind_error(listener)
        if exc is not None:
            out.append((listener, exc))
    return out
