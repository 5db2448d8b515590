"""Helpers of the provisioning tests: a fake PBX config server over real TLS (``http.server``
+ ``ssl`` in a thread, certificate from its own CA) that records every TCP connection it
accepts and every request it reads, so a test can prove a refused request never reached
it; a raw HTTPS client for requests httpx would not send; settings for a temp folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from limen.certs import (
    SanEntry,
    create_ca,
    fingerprint_sha256,
    issue_certificate,
    load_certificates,
    write_pair,
)
from limen.config import Settings

if TYPE_CHECKING:
    from typer.testing import Result

    from limen.provisioning import ProvisioningServer

HASH = "9a48085c1b816fd1b512e8b186686a6"
OTHER_HASH = "16a78df75f29020a19fb5fd14bfac940"
MAC = "00085D4330B8"
LARGE_SIZE = 4 * 1024 * 1024
DATA = Path(__file__).with_name("data")

# make_proxy(**provisioning settings) -> a started ProvisioningServer
MakeProxy = Callable[..., Awaitable["ProvisioningServer"]]
# limen(*args, code=0) -> the CliRunner result of `limen ARGS --config <tmp>`
Limen = Callable[..., "Result"]


def make_settings(folder: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "config_path": str(folder / "limen.toml"),
        "data_dir": str(folder / "data"),
        "public_fqdn": "localhost",
        "public_ip": "127.0.0.1",
        "fqdn_for_phones": True,
    }
    return Settings(**(base | values))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakePbx:
    port: int
    ca_file: Path
    fingerprint: str
    files: dict[str, bytes]
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def untouched(self) -> bool:
        return self.requests == [] and self.connections == 0


def _handler(pbx: FakePbx) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _record(self, body: bytes = b"") -> None:
            pbx.requests.append(
                Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )

        def _serve(self, with_body: bool) -> None:
            self._record()
            if self.path.endswith("/slow"):
                pbx.release.wait(10)
                self.close_connection = True
                return
            if self.path.endswith("/chunked"):
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if with_body:
                    for _ in range(4):
                        piece = b"x" * 4096
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                return
            data = pbx.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Pbx", "fake")
            self.end_headers()
            if with_body:
                for start in range(0, len(data), 65536):
                    self.wfile.write(data[start : start + 65536])

        def do_GET(self) -> None:
            self._serve(True)

        def do_HEAD(self) -> None:
            self._serve(False)

        def _read_chunked(self) -> bytes:
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()

        def do_POST(self) -> None:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                body = self._read_chunked()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._record(body)
            answer = b"got " + body
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    pbx: FakePbx

    def get_request(self) -> tuple[socket.socket, Any]:
        request, address = super().get_request()
        self.pbx.connections += 1
        return request, address


def pbx_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of its own and a certificate for 127.0.0.1 / localhost: (ca, cert, key)."""
    ca = create_ca(make_settings(folder, public_fqdn="pbx.test"))
    chain, key = issue_certificate(
        ca, [SanEntry("IP", "127.0.0.1"), SanEntry("DNS", "localhost")], 30
    )
    cert_path, key_path = folder / "pbx.pem", folder / "pbx.key"
    write_pair(cert_path, key_path, chain, key)
    return ca.cert_path, cert_path, key_path


@contextmanager
def running_pbx(folder: Path) -> Iterator[FakePbx]:
    ca_file, cert, key = pbx_certificate(folder)
    files = {
        f"/{HASH}/ftp_67xxi/{MAC}.cfg": b"sip line1 auth name: 7000\n",
        f"/{HASH}/ftp_67xxi/aastra.cfg": b"sip proxy ip: limen.test\n",
        f"/{HASH}/ftp_67xxi/6867i.st": os.urandom(LARGE_SIZE),
    }
    state = FakePbx(0, ca_file, fingerprint_sha256(load_certificates(cert)[0]), files)
    server = _Server(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    server.pbx = state
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def limen_ca_context(settings: Settings) -> ssl.SSLContext:
    """What a phone does after importing `limen cert ca` into its trust list."""
    return ssl.create_default_context(cafile=str(settings.data_path / "tls" / "ca.pem"))


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(
    port: int,
    context: ssl.SSLContext,
    head: bytes,
    body: bytes = b"",
    server_hostname: str = "localhost",
) -> RawResponse:
    """Send ``head`` (request line + headers, without the blank line) as is, with
    ``Connection: close``, and read the response to the end."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_hostname
    )
    try:
        writer.write(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
    header_block, _, rest = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, rest)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
