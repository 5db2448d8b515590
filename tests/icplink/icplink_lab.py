"""dnsmasq serving NAPTR/SRV/A records for the ICP link tests, on a loopback address."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dnsmasq(folder: Path, records: list[str], host: str = "127.0.0.1") -> Iterator[str]:
    """Run dnsmasq with ``records`` (dnsmasq.conf lines) on a free port of ``host``;
    yields ``host:port`` for ``sip.dns_servers``. Stopped by its PID."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(binary).exists():
        pytest.fail("dnsmasq is not installed (Debian package dnsmasq-base)")
    port = free_udp_port(host)
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "dnsmasq.conf"
    lines = ["no-resolv", "no-hosts", "bind-interfaces", f"listen-address={host}", f"port={port}"]
    lines.append("local=/test/")  # authoritative for .test: NXDOMAIN / no data, not REFUSED
    conf.write_text("\n".join(lines + records) + "\n")
    log = (folder / "dnsmasq.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-k", f"--conf-file={conf}", "--pid-file=", "--log-facility=-", "--log-queries"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            # Bound once the port is taken.
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((host, port))
            except OSError:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError((folder / "dnsmasq.log").read_text())
        yield f"{host}:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        log.close()
