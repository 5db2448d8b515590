"""Helpers for bench/media.py (copied from tests/media/media_support.py: the bench does not
import from tests/): SDP bodies, SDES crypto lines, a bencode / rtpengine ng client."""

from __future__ import annotations

import base64
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

SUITE = "AES_CM_128_HMAC_SHA1_80"


def sdp(port: int, *, crypto: list[str] | None = None, user: str = "phone") -> bytes:
    """A one-stream G.711 (PCMA) offer/answer on 127.0.0.1, RTP/SAVP when ``crypto``."""
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    lines = [
        "v=0",
        f"o={user} 1234 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} {proto} 8",
        "a=rtpmap:8 PCMA/8000",
        *[f"a=crypto:{c}" for c in crypto or []],
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def new_key() -> bytes:
    return os.urandom(30)  # AES_CM_128: 16-byte key + 14-byte salt


def crypto_line(key: bytes, tag: int = 1, suite: str = SUITE) -> str:
    return f"{tag} {suite} inline:{base64.b64encode(key).decode()}"


@dataclass
class Negotiated:
    port: int
    proto: str
    crypto: list[tuple[int, str, bytes]] = field(default_factory=list)


def media_of(body: bytes) -> Negotiated:
    """Port, transport and SDES keys of the first m= line."""
    section = "m=" + body.decode().split("m=")[1]
    words = section.split()
    crypto = [
        (int(tag), suite, base64.b64decode(key + "=" * (-len(key) % 4)))
        for tag, suite, key in re.findall(r"a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", section)
    ]
    return Negotiated(int(words[1]), words[2], crypto)


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
