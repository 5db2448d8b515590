"""Small SIP test clients over real sockets (UDP, TCP, TLS) and settings for the
transport tests (imported by name: test folders have no __init__.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from limen.app import RunningApp
from limen.config import ApiSettings, ProvisioningSettings, Settings, SipSettings
from limen.sip import Response, parse_message

StartLimen = Callable[..., Awaitable[RunningApp]]


def make_settings(tmp_path: Path, **sip: Any) -> Settings:
    """Settings for an in-process Limen on 127.0.0.1, ephemeral ports, data in tmp_path."""
    values: dict[str, Any] = {"bind": "127.0.0.1", "udp_port": 0, "tcp_port": 0, "tls_port": 0}
    values.update(sip)
    return Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        sip=SipSettings(**values),
        # The SIP tests do not need the admin API; test_app_start starts it on purpose.
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
    )


_counter = itertools.count(1)


def request(
    method: str = "OPTIONS",
    *,
    transport: str = "UDP",
    via_host: str = "127.0.0.1",
    via_port: int | None = 5099,
    rport: bool = True,
    extra: str = "",
    body: bytes = b"",
    ruri: str = "sip:127.0.0.1",  # a ping: OPTIONS to a user goes through the gate
) -> bytes:
    """A well-formed request with a fresh branch and Call-ID."""
    n = next(_counter)
    host = f"[{via_host}]" if ":" in via_host else via_host
    sent_by = host if via_port is None else f"{host}:{via_port}"
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {sent_by};branch=z9hG4bK-test-{n}{';rport' if rport else ''}",
        "Max-Forwards: 70",
        f"From: <sip:tester@example.com>;tag=t{n}",
        "To: <sip:limen@example.com>",
        f"Call-ID: call-{n}@test",
        f"CSeq: {n} {method}",
    ]
    if extra:
        lines.extend(extra.rstrip("\r\n").split("\r\n"))
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response), data
    return message


def status_of(data: bytes) -> int:
    """The status code of a raw response (which may copy broken header lines)."""
    version, code, _ = data.split(b" ", 2)
    assert version == b"SIP/2.0", data
    return int(code)


class UdpClient:
    """A UDP socket on the loopback of ``family`` driven through the running loop."""

    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    async def send(self, data: bytes, address: tuple[str, int]) -> None:
        # A datagram to the loopback never blocks (and uvloop has no sock_sendto).
        self.sock.sendto(data, address)

    async def recv(self, timeout: float = 2.0) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 70000), timeout)

    async def exchange(self, data: bytes, address: tuple[str, int]) -> Response:
        """Send a request and return its final response (100 Trying is skipped)."""
        await self.send(data, address)
        while True:
            response = parse_response(await self.recv())
            if response.status >= 200:
                return response

    def close(self) -> None:
        self.sock.close()


class StreamClient:
    """A TCP or TLS client that reads whole SIP messages back (Content-Length framed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> StreamClient:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        return cls(reader, writer)

    @property
    def local(self) -> tuple[str, int]:
        sockname = self.writer.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_message(self, timeout: float = 2.0) -> bytes:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() in (b"content-length", b"l"):
                    length = int(value.strip())
            body = await self.reader.readexactly(length) if length else b""
        return head + body

    async def response(self, timeout: float = 2.0) -> Response:
        return parse_response(await self.read_message(timeout))

    async def exchange(self, data: bytes) -> Response:
        """Send a request and return its final response (100 Trying is skipped)."""
        await self.send(data)
        while True:
            response = await self.response()
            if response.status >= 200:
                return response

    async def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True once the peer closed (EOF or reset) within ``timeout``; data is discarded."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def insecure_client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
