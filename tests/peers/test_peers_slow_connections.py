"""Slow and half-open connections against a real ``limen serve`` (issue 10).

- TCP slowloris: 1,200 connections from 60 loopback addresses, each starting a SIP
  message and then trickling one octet a second. ``message_read_timeout`` is 3 s here.
- TLS connections that never handshake: 600 on the SIP/TLS port and 600 on the
  provisioning port (4445's role), from 60 addresses. ``handshake_timeout`` is 3 s.

Each attack must see >= 99 % of its connections closed by Limen within the timeout (plus
scheduling slack), Limen's RSS must grow by less than ``RSS_BOUND``, and a legitimate
client keeps getting answers throughout: OPTIONS over TCP and over TLS on its persistent
connections, new TLS handshakes on both TLS ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import resource
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from peer_support import LIMEN, free_port

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 3.0  # message_read_timeout and handshake_timeout of the Limen under test
SLACK = 3.0  # scheduling on a busy 2-core CI machine
SOURCES = [f"127.0.0.{n}" for n in range(2, 62)]
LEGIT = "127.0.0.1"
# RSS growth allowed during and after the attacks: 1,200 connections at one framer
# buffer (a few hundred bytes here) and one protocol object each, 1,200 pending
# handshakes at one SSLObject each (~30 KB with OpenSSL 3's buffers).
RSS_BOUND = 80 * 1024 * 1024


@dataclass
class Served:
    process: subprocess.Popen[str]
    folder: Path
    sip_port: int
    tls_port: int
    prov_port: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    folder = tmp_path_factory.mktemp("limen-slow")
    sip_port = free_port(both=True)
    tls_port = free_port()
    prov_port = free_port()
    (folder / "limen.toml").write_text(
        f"""\
data_dir = "data"
public_fqdn = "limen.test"
public_ip = "127.0.0.1"
log_level = "INFO"

[sip]
bind = "127.0.0.1"
udp_port = {sip_port}
tcp_port = {sip_port}
tls_port = {tls_port}
message_read_timeout = {TIMEOUT}
handshake_timeout = {TIMEOUT}
# Below the attack's 480 admitted handshakes (60 sources x 8), so that the oldest-first
# eviction at the total limit is what keeps the phone's handshakes going.
max_handshakes = 200

[api]
enabled = false

[provisioning]
enabled = true
bind = "127.0.0.1"
port = {prov_port}
handshake_timeout = {TIMEOUT}
max_handshakes = 200

[media]
relay = false
"""
    )
    process = subprocess.Popen(
        [str(LIMEN), "serve", "-c", str(folder / "limen.toml")],
        cwd=folder,
        env=dict(os.environ, COLUMNS="200", NO_COLOR="1"),
        stdout=subprocess.PIPE,
        stderr=(folder / "stderr.log").open("w"),
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 40
    while not any("provisioning on https://" in line for line in seen):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"limen serve did not start: {seen}\n{(folder / 'stderr.log').read_text()}")
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=0.5))
    try:
        yield Served(process, folder, sip_port, tls_port, prov_port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    stderr = (folder / "stderr.log").read_text()
    assert "Traceback" not in stderr, stderr[-5000:]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def options(n: int, port: int, transport: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {LEGIT}:5099;branch=z9hG4bK-legit-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:legit@{LEGIT}>;tag=l{n}\r\n"
        "To: <sip:127.0.0.1>\r\n"
        f"Call-ID: legit-{n}-{transport}@{LEGIT}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Legit:
    """A phone that keeps asking: OPTIONS on a TCP and a TLS connection, and fresh TLS
    handshakes on the SIP/TLS and provisioning ports."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.asked = 0
        self.answered = 0
        self.failures: list[str] = []

    async def _ask(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> None:
        self.asked += 1
        try:
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
            assert head.startswith(b"SIP/2.0 200"), head[:40]
            self.answered += 1
        except Exception as exc:  # counted; the test asserts the ratio
            self.failures.append(f"{type(exc).__name__}: {exc}")

    async def _handshake(self, port: int) -> None:
        self.asked += 1
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=client_context(), local_addr=(LEGIT, 0)
                ),
                2.0,
            )
            writer.close()
            self.answered += 1
        except Exception as exc:
            self.failures.append(f"handshake {port}: {type(exc).__name__}: {exc}")

    async def run(self, stop: asyncio.Event) -> None:
        s = self.served
        tcp = await asyncio.open_connection("127.0.0.1", s.sip_port, local_addr=(LEGIT, 0))
        tls = await asyncio.open_connection(
            "127.0.0.1", s.tls_port, ssl=client_context(), local_addr=(LEGIT, 0)
        )
        n = 0
        while not stop.is_set():
            n += 1
            await self._ask(*tcp, options(n, s.sip_port, "TCP"))
            await self._ask(*tls, options(n, s.tls_port, "TLS"))
            if n % 2 == 0:
                await self._handshake(s.tls_port)
                await self._handshake(s.prov_port)
            await asyncio.sleep(0.25)
        for _, writer in (tcp, tls):
            writer.close()


async def slowloris(port: int, source: str, started: float, closed: list[float]) -> None:
    """Start a message, then one octet a second; record when Limen closes the connection."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        closed.append(time.monotonic() - started)  # refused counts as closed at once
        return
    begin = time.monotonic()
    writer.write(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bKslow\r\n")
    try:
        for _ in range(int(TIMEOUT + SLACK + 4)):
            try:
                data = await asyncio.wait_for(reader.read(1024), 1.0)
            except TimeoutError:
                writer.write(b"X")
                continue
            if not data:
                break
        else:
            return  # never closed: not appended
    except (ConnectionError, OSError):
        pass
    closed.append(time.monotonic() - begin)
    writer.close()


async def silent_tls(port: int, source: str, closed: list[float]) -> None:
    """Connect and never send a ClientHello; record when Limen closes the connection."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        closed.append(0.0)
        return
    begin = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(1024), TIMEOUT + SLACK + 4)
        if data:
            return  # the server spoke first: not what TLS does
    except TimeoutError:
        writer.close()
        return
    except (ConnectionError, OSError):
        pass
    closed.append(time.monotonic() - begin)
    writer.close()


async def run_attack(served: Served, attack: str) -> tuple[list[float], int, Legit, int]:
    legit = Legit(served)
    stop = asyncio.Event()
    legit_task = asyncio.create_task(legit.run(stop))
    await asyncio.sleep(0.5)
    closed: list[float] = []
    started = time.monotonic()
    if attack == "slowloris":
        jobs = [
            slowloris(served.sip_port, src, started, closed) for src in SOURCES for _ in range(20)
        ]
    else:
        port = served.tls_port if attack == "tls" else served.prov_port
        jobs = [silent_tls(port, src, closed) for src in SOURCES for _ in range(10)]
    total = len(jobs)
    peak = 0
    pid = served.process.pid

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*jobs)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(legit_task, sampler)
    return closed, total, legit, peak


@pytest.mark.parametrize("attack", ["slowloris", "tls", "provisioning-tls"])
def test_slow_and_silent_connections_are_closed_and_phones_served(
    served: Served, attack: str
) -> None:
    before = rss(served.process.pid)
    closed, total, legit, peak = asyncio.run(run_attack(served, attack))
    after = rss(served.process.pid)
    in_time = [t for t in closed if t <= TIMEOUT + SLACK]
    print(
        f"{attack}: {len(in_time)}/{total} closed within {TIMEOUT + SLACK:.0f} s "
        f"(max {max(closed, default=0):.2f} s); legit {legit.answered}/{legit.asked}; "
        f"RSS {before / 2**20:.0f} -> peak {peak / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )
    assert len(in_time) >= 0.99 * total, (len(in_time), total, sorted(closed)[-5:])
    assert legit.asked >= 20
    assert legit.answered >= 0.99 * legit.asked, legit.failures[:5]
    assert peak - before < RSS_BOUND, (before, peak)
    assert after - before < RSS_BOUND, (before, after)
