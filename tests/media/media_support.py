"""Helpers for the media relay tests: SDP bodies, UDP peers on 127.0.0.1, RTP packets,
SRTP with pylibsrtp, a tiny bencode / rtpengine ng client, and rtpengine itself."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pylibsrtp import Policy, Session

from limen.media import LegPolicy, LegSpec, MediaRelay, Security

SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def free_port_range(size: int = 200) -> tuple[int, int]:
    """A random even range outside the usual ephemeral range; the relay skips ports that
    happen to be taken anyway."""
    base = random.randrange(20000, 32000 - size, 2)
    return base, base + size - 1


def make_relay(
    size: int = 200,
    *,
    set_security: Security = Security.REQUIRE,
    icp_security: Security = Security.PREFER,
    media_timeout: float = 60.0,
    hold_timeout: float = 3600.0,
    port_range: tuple[int, int] | None = None,
) -> MediaRelay:
    low, high = port_range or free_port_range(size)
    return MediaRelay(
        [
            LegSpec("set", "127.0.0.1", "127.0.0.1", latch=True, policy=LegPolicy(set_security)),
            LegSpec("icp", "127.0.0.1", "127.0.0.1", latch=False, policy=LegPolicy(icp_security)),
        ],
        port_min=low,
        port_max=high,
        media_timeout=media_timeout,
        hold_timeout=hold_timeout,
    )


def sdp(
    port: int,
    *,
    address: str = "127.0.0.1",
    crypto: list[str] | None = None,
    codecs: str = "8 0 101",
    direction: str | None = None,
    mux: bool = False,
    version: int = 1,
    user: str = "phone",
    rtcp: int | None = None,
) -> bytes:
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    lines = [
        "v=0",
        f"o={user} 1234 {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} {proto} {codecs}",
    ]
    for pt in codecs.split():
        name = {"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000", "18": "G729/8000"}.get(pt)
        lines.append(f"a=rtpmap:{pt} {name or 'telephone-event/8000'}")
        if name is None:
            lines.append(f"a=fmtp:{pt} 0-16")
    lines += [f"a=crypto:{c}" for c in crypto or []]
    if mux:
        lines.append("a=rtcp-mux")
    if rtcp is not None:
        lines.append(f"a=rtcp:{rtcp}")
    lines.append("a=ptime:20")
    if direction:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def new_key(suite: str = SUITE) -> bytes:
    return os.urandom(44 if suite == "AEAD_AES_256_GCM" else 28 if "GCM" in suite else 30)


def crypto_line(key: bytes, tag: int = 1, suite: str = SUITE) -> str:
    return f"{tag} {suite} inline:{base64.b64encode(key).decode()}"


@dataclass
class Negotiated:
    port: int
    proto: str
    crypto: list[tuple[int, str, bytes]] = field(default_factory=list)
    mux: bool = False


def media_of(body: bytes, index: int = 0) -> Negotiated:
    text = body.decode()
    sections = text.split("m=")[1:]
    section = "m=" + sections[index]
    port = int(section.split()[1])
    proto = section.split()[2]
    crypto = [
        (int(tag), suite, base64.b64decode(key + "=" * (-len(key) % 4)))
        for tag, suite, key in re.findall(r"a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", section)
    ]
    return Negotiated(port, proto, crypto, "a=rtcp-mux" in section)


def g711(seq: int, ssrc: int = 0x11223344, pt: int = 8, payload: bytes | None = None) -> bytes:
    body = payload if payload is not None else bytes([seq & 0xFF]) * 160
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + body


def srtp_tx(key: bytes, suite: str = SUITE) -> Session:
    return Session(
        policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILES[suite])
    )


def srtp_rx(key: bytes, suite: str = SUITE) -> Session:
    return Session(
        policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILES[suite])
    )


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, port: int = 0) -> UdpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", port))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    async def receive(self, count: int, timeout: float = 2.0) -> list[bytes]:
        out = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                data, _ = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                break
            out.append(data)
        return out

    async def drain(self, wait: float = 0.1) -> list[bytes]:
        await asyncio.sleep(wait)
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait()[0])
        return out

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- bencode and the rtpengine ng protocol ---------------------------------------------------


def bencode(value: Any) -> bytes:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes) -> Any:
    value, end = _bdecode(data, 0)
    if end != len(data):
        raise ValueError("trailing data")
    return value


def _bdecode(data: bytes, pos: int) -> tuple[Any, int]:
    kind = data[pos : pos + 1]
    if kind == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if kind == b"l":
        pos += 1
        items = []
        while data[pos : pos + 1] != b"e":
            item, pos = _bdecode(data, pos)
            items.append(item)
        return items, pos + 1
    if kind == b"d":
        pos += 1
        out = {}
        while data[pos : pos + 1] != b"e":
            key, pos = _bdecode(data, pos)
            out[key.decode()] = None
            out[key.decode()], pos = _bdecode(data, pos)
        return out, pos + 1
    colon = data.index(b":", pos)
    length = int(data[pos:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


class NgClient:
    """rtpengine's control protocol: ``cookie bencoded-dict`` over UDP."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)

    def __call__(self, command: dict[str, Any]) -> dict[str, Any]:
        cookie = os.urandom(6).hex().encode()
        self.sock.sendto(cookie + b" " + bencode(command), self.address)
        while True:
            data, _ = self.sock.recvfrom(65535)
            got, _, body = data.partition(b" ")
            if got == cookie:
                reply: dict[str, Any] = bdecode(body)
                return reply

    def close(self) -> None:
        self.sock.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Rtpengine:
    process: subprocess.Popen[bytes]
    ng: NgClient
    port_min: int
    port_max: int


def require_rtpengine() -> str:
    path = shutil.which("rtpengine")
    if path is None:
        if os.environ.get("LIMEN_TEST_NO_PEERS") == "1":
            pytest.skip("rtpengine not installed (LIMEN_TEST_NO_PEERS=1)")
        pytest.fail("rtpengine not found (set LIMEN_TEST_NO_PEERS=1 to skip knowingly)")
    return path


def start_rtpengine(log_path: str, threads: int = 2) -> Iterator[Rtpengine]:
    path = require_rtpengine()
    ng_port = free_udp_port()
    low = random.randrange(40000, 58000, 2)
    high = low + 999
    process = subprocess.Popen(
        [
            path,
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{ng_port}",
            f"--port-min={low}",
            f"--port-max={high}",
            "--foreground",
            "--log-stderr",
            "--log-level=5",
            f"--num-threads={threads}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
    )
    ng = NgClient(ng_port)
    ng.sock.settimeout(0.3)
    deadline = time.monotonic() + 15
    while True:
        try:
            if ng({"command": "ping"}).get("result") == b"pong":
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            with open(log_path) as log:
                pytest.fail(f"rtpengine did not start: {log.read()[-2000:]}")
    ng.sock.settimeout(3)
    try:
        yield Rtpengine(process, ng, low, high)
    finally:
        ng.close()
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
