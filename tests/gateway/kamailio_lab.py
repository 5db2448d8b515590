"""Kamailio as the stand-in PBX of the gateway tests (imported by name: test folders have
no __init__.py): a throwaway SQLite subscriber table, a config rendered from a template,
the daemon started by hand and stopped by PID, and what the tests ask of it (its log,
``kamcmd ul.dump``). The registration and call helpers differ only in their config."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("LIMEN_TEST_NO_PEERS") == "1":
            pytest.skip(f"{name} not installed (LIMEN_TEST_NO_PEERS=1)")
        pytest.fail(f"{name} not installed: apt-get install it, or set LIMEN_TEST_NO_PEERS=1")
    return path


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Kamailio:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ctl(self) -> str:
        return f"unix:{self.folder / 'run' / 'kamailio_ctl'}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def registers(self, user: str | None = None) -> int:
        """REGISTER requests Kamailio received (challenged ones included)."""
        pattern = "LIMENTEST-REGISTER " + (re.escape(user) + " " if user else "")
        return len(re.findall(pattern, self.log()))

    def _ul_dump(self) -> str:
        return subprocess.run(
            ["kamcmd", "-s", self.ctl, "ul.dump"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout

    def contacts(self, user: str) -> list[str]:
        """Contacts bound to ``user`` in Kamailio's location table (kamcmd ul.dump)."""
        found: list[str] = []
        current = None
        for line in self._ul_dump().splitlines():
            stripped = line.strip()
            if stripped.lower().startswith("aor:"):
                current = stripped.split(":", 1)[1].strip()
            elif (
                stripped.startswith("Address:")
                and current is not None
                and (current == user or current.startswith(user + "@"))
            ):
                found.append(stripped.split(":", 1)[1].strip())
        return found

    def all_aors(self) -> list[str]:
        return [
            line.split(":", 1)[1].strip()
            for line in self._ul_dump().splitlines()
            if line.strip().lower().startswith("aor:")
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def launch_kamailio(
    folder: Path,
    template: str,
    subscribers: dict[str, str],
    *,
    host: str,
    domain: str,
    tcp: bool = False,
) -> Kamailio:
    """Render ``template`` (fields host, port, run, db) on a free UDP port of ``host``
    (``tcp``: a TCP listener on the same port too), start it, wait until it answers."""
    kamailio = require_tool("kamailio")
    require_tool("kamcmd")
    sqlite3 = require_tool("sqlite3")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run").mkdir(exist_ok=True)
    db = folder / "kamailio.sqlite"
    schema = "".join(
        Path(f"/usr/share/kamailio/db_sqlite/{name}-create.sql").read_text()
        for name in ("standard", "auth_db")
    )
    rows = "".join(
        f"INSERT INTO subscriber(username,domain,password,ha1) VALUES('{user}','{domain}',"
        f"'{pw}','{hashlib.md5(f'{user}:{domain}:{pw}'.encode()).hexdigest()}');\n"
        for user, pw in subscribers.items()
    )
    subprocess.run([sqlite3, str(db)], input=schema + rows, text=True, check=True)
    port = free_udp_port(host)
    text = template.format(host=host, port=port, run=folder / "run", db=db)
    if tcp:
        text = text.replace(
            f"listen=udp:{host}:{port}\n", f"listen=udp:{host}:{port}\nlisten=tcp:{host}:{port}\n"
        )
    cfg = folder / "kamailio.cfg"
    cfg.write_text(text)
    log_path = folder / "kamailio.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [kamailio, "-f", str(cfg), "-DD", "-E", "-Y", str(folder / "run")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    kam = Kamailio(folder, port, process, log_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kamailio exited: {kam.log()}")
        if (folder / "run" / "kamailio_ctl").exists():
            try:
                kam.all_aors()
                return kam
            except subprocess.CalledProcessError:
                pass
        time.sleep(0.1)
    kam.stop()
    raise RuntimeError(f"kamailio did not start: {kam.log()}")
