"""Helpers for the peer tests (imported by name: test folders have no __init__.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

LIMEN = Path(sys.executable).with_name("limen")


def require_tool(name: str) -> str:
    """The path of a peer tool; fails (or skips with LIMEN_TEST_NO_PEERS=1) without it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("LIMEN_TEST_NO_PEERS") == "1":
            pytest.skip(f"{name} not installed (LIMEN_TEST_NO_PEERS=1)")
        pytest.fail(f"{name} not installed: apt-get install it, or set LIMEN_TEST_NO_PEERS=1")
    return path


def free_port(kind: int = socket.SOCK_STREAM, both: bool = False) -> int:
    """A port free on 127.0.0.1 now (for ``kind``, or for UDP and TCP with ``both``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not both:
            return port
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


@dataclass
class LimenServer:
    process: subprocess.Popen[str]
    folder: Path
    sip_port: int  # UDP and TCP
    tls_port: int
    output: list[str]
