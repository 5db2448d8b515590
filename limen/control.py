"""The local control socket of ``limen serve``: what the CLI asks of the running process.

Live state that is not in the store (bans, today) is read and changed through a Unix
socket in the data folder (``limen.ctl``, mode 0600, so only the service's own user and
root can use it), as ``kamcmd`` and ``rtpengine-ctl`` do. One JSON object per line each
way: ``{"op": "bans"}``, ``{"op": "ban", "address": ..., "seconds": ...}``,
``{"op": "unban", "address": ...}``.

When no ``limen serve`` runs, the CLI edits the saved bans file instead, which serve
reads when it starts (:func:`load_bans` / :func:`save_bans`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from limen.security.bans import Ban, BanReason, bans_from_json, bans_to_json

if TYPE_CHECKING:
    from limen.config import Settings
    from limen.gateway.guard import Guard

log = logging.getLogger("limen.control")

MAX_LINE = 64 * 1024


def control_path(settings: Settings) -> Path:
    return settings.data_path / "limen.ctl"


def bans_path(settings: Settings) -> Path:
    return settings.data_path / "bans.json"


def load_bans(path: Path) -> list[Ban]:
    try:
        return bans_from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []


def save_bans(path: Path, bans: list[Ban]) -> None:
    """Write atomically (a crash never leaves half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(bans_to_json(bans), indent=1))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def check_address(address: str) -> str:
    """An IP address (IPv6 without brackets), or ValueError naming the problem."""
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"not an IP address: {address!r}") from None


def handle(guard: Guard, request: dict[str, Any]) -> dict[str, Any]:
    """One control request → its answer (``{"ok": false, "error": ...}`` on bad input)."""
    op = request.get("op")
    try:
        if op == "bans":
            return {"ok": True, "bans": bans_to_json(guard.list_bans())}
        if op == "ban":
            seconds = request.get("seconds")
            if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
                raise ValueError("seconds must be a positive number")
            address = check_address(str(request.get("address", "")))
            ban = guard.ban(address, seconds, str(request.get("detail", "") or "manual"))
            return {"ok": True, "bans": bans_to_json([ban])}
        if op == "unban":
            address = check_address(str(request.get("address", "")))
            return {"ok": True, "lifted": guard.unban(address)}
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown op {op!r}"}


class ControlServer:
    """The Unix socket server inside ``limen serve``."""

    def __init__(self, settings: Settings, guard: Guard) -> None:
        self.path = control_path(settings)
        self.guard = guard
        # The ICP links' snapshot (issue 15): {"op": "icp_links"}.
        self.links: Callable[[], list[dict[str, Any]]] | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            try:
                request = json.loads(line[:MAX_LINE])
                if isinstance(request, dict) and request.get("op") == "icp_links":
                    links = self.links() if self.links is not None else []
                    answer: dict[str, Any] | None = {"ok": True, "links": links}
                else:
                    answer = handle(self.guard, request) if isinstance(request, dict) else None
            except ValueError:
                answer = None
            if answer is None:
                answer = {"ok": False, "error": "one JSON object per line"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def ask(settings: Settings, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
    """Send one request to the running serve; None when none is listening."""
    path = control_path(settings)
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


def offline(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The same requests against the saved bans file, when no serve runs."""
    path = bans_path(settings)
    now = time.time()
    bans = [b for b in load_bans(path) if b.until > now]
    op = request.get("op")
    try:
        if op == "bans":
            return {"ok": True, "bans": bans_to_json(bans)}
        address = check_address(str(request.get("address", "")))
        if op == "ban":
            seconds = float(request.get("seconds") or 600.0)
            if seconds <= 0:
                raise ValueError("seconds must be a positive number")
            ban = Ban(address, BanReason.MANUAL, now, now + seconds, 1, "manual")
            save_bans(path, [b for b in bans if b.address != address] + [ban])
            return {"ok": True, "bans": bans_to_json([ban])}
        if op == "unban":
            kept = [b for b in bans if b.address != address]
            save_bans(path, kept)
            return {"ok": True, "lifted": len(kept) != len(bans)}
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown op {op!r}"}
