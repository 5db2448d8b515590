"""Message boundaries in a SIP byte stream (TCP, TLS): RFC 3261 §18.3, RFC 5626 §3.5.1.

The framer only finds where each message ends (headers up to the empty line, then
Content-Length octets of body) and recognises the CRLF keepalives of RFC 5626 §3.5.1:
a double CRLF "ping" between messages and a single CRLF "pong". It never parses
headers beyond Content-Length; the framed bytes go to :func:`parse_message`.

After a framing error (oversize message, bad or duplicate Content-Length) the stream
cannot be resynchronised: the caller must close the connection (RFC 4475 §3.1.2.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from limen.sip.errors import SipParseError

# Possessive runs: linear on any input (see limen.sip.grammar).
_CONTENT_LENGTH_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*+:[ \t]*+([^\r\n]*+)", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A double CRLF between messages: the peer asks for a pong (RFC 5626 §3.5.1)."""


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """A single CRLF between messages: the answer to our ping."""


PING = KeepAlivePing()
PONG = KeepAlivePong()

FramerEvent = bytes | KeepAlivePing | KeepAlivePong


class StreamFramer:
    """Incremental framer: ``feed(data)``, then call ``next_event()`` until it returns None.

    ``max_message_size`` bounds headers plus body; ``max_header_size`` bounds the header
    section alone (so a peer cannot make us buffer forever without an empty line).
    """

    __slots__ = ("_buf", "_failed", "_need", "_scan_from", "max_header_size", "max_message_size")

    def __init__(self, max_message_size: int = 65536, max_header_size: int | None = None) -> None:
        self.max_message_size = max_message_size
        self.max_header_size = max_header_size if max_header_size is not None else max_message_size
        self._buf = bytearray()
        self._scan_from = 0
        self._need = 0  # total length of the message being received, once known
        self._failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """True while part of a message is buffered. A lone CR LF (a pong, or the start of
        a ping) is not a message: it waits for its next octets without a deadline."""
        return bool(self._buf) and self._buf[0] != 0x0D

    def pending(self) -> bytes:
        """The octets received and not yet returned as an event (the message being framed)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> None:
        if self._failed:
            raise SipParseError("stream already failed framing")
        self._buf += data

    def next_event(self) -> FramerEvent | None:
        buf = self._buf
        if self._failed or not buf:
            return None
        if self._need:
            return self._take(self._need)
        if buf[0] == 0x0D:  # CR: keepalive, or a CRLF left before a message
            if buf.startswith(b"\r\n\r\n"):
                del buf[:4]
                self._scan_from = 0
                return PING
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return None  # could still become a ping: wait for more
            if buf.startswith(b"\r\n"):
                del buf[:2]
                self._scan_from = 0
                return PONG
            raise self._fail("stray CR in stream")
        if buf[0] == 0x0A:
            raise self._fail("stray LF in stream")
        end = buf.find(b"\r\n\r\n", max(0, self._scan_from - 3))
        if end < 0:
            if len(buf) > self.max_header_size:
                raise self._fail("header section too large", 513)
            self._scan_from = len(buf)
            return None
        header_len = end + 4
        if header_len > self.max_header_size:
            raise self._fail("header section too large", 513)
        lengths = _CONTENT_LENGTH_RE.findall(buf, 0, end)
        if len(lengths) > 1:
            raise self._fail("more than one Content-Length")  # RFC 4475 §3.3.9
        if lengths:
            text = lengths[0].strip()
            if not text.isdigit() or len(text) > 10:
                raise self._fail("malformed Content-Length")  # RFC 4475 §3.1.2.3
            body_len = int(text)
        else:
            # RFC 3261 §18.3 makes Content-Length mandatory on streams; a message
            # without one is taken to have no body rather than stall the connection.
            body_len = 0
        total = header_len + body_len
        if total > self.max_message_size:
            raise self._fail("message too large", 513)
        self._need = total
        return self._take(total)

    def _take(self, total: int) -> bytes | None:
        buf = self._buf
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        self._scan_from = 0
        self._need = 0
        return message

    def _fail(self, reason: str, status: int = 400) -> SipParseError:
        self._failed = True
        return SipParseError(reason, status)
