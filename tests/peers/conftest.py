"""Fixtures for tests against real SIP peers: ``limen serve`` as a subprocess, tool lookup.

A peer tool that is missing makes its test FAIL (the test command installs them); set
``LIMEN_TEST_NO_PEERS=1`` to skip those tests knowingly.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from peer_support import LIMEN, LimenServer, free_port


@pytest.fixture(scope="module")
def limen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimenServer]:
    """``limen serve`` on 127.0.0.1 with its own config, stopped with SIGTERM afterwards."""
    folder = tmp_path_factory.mktemp("limen-serve")
    sip_port = free_port(both=True)
    tls_port = free_port()
    (folder / "limen.toml").write_text(
        f"""\
data_dir = "data"
public_fqdn = "limen.test"
public_ip = "127.0.0.1"
log_level = "DEBUG"

[sip]
bind = "127.0.0.1"
udp_port = {sip_port}
tcp_port = {sip_port}
tls_port = {tls_port}

[api]
enabled = false

[provisioning]
enabled = false
"""
    )
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    process = subprocess.Popen(
        [str(LIMEN), "serve", "-c", str(folder / "limen.toml")],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(folder / "stderr.log").open("w"),
        text=True,
    )
    output: list[str] = []
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    # A thread reads stdout: select() cannot see lines already in the pipe's text buffer.
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
    reader.start()
    wanted = {
        f"listening on {t} 127.0.0.1:{p}"
        for t, p in (("udp", sip_port), ("tcp", sip_port), ("tls", tls_port))
    }
    deadline = time.monotonic() + 30
    while wanted - {line.strip() for line in output}:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log = (folder / "stderr.log").read_text()
            pytest.fail(f"limen serve did not start: {output}\n{log}")
        try:
            output.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
    server = LimenServer(process, folder, sip_port, tls_port, output)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        reader.join(timeout=5)
        while not lines.empty():
            output.append(lines.get())
    stderr = (folder / "stderr.log").read_text()
    assert process.returncode == 0, f"limen serve exited with {process.returncode}\n{stderr}"
    assert "stopping" in "".join(output)
    assert "Traceback" not in stderr, stderr
