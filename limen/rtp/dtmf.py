"""RFC 4733 telephone-event payloads (§2.3): DTMF digits carried as RTP events.

The relay passes these through untouched; this reader is for logging, statistics and tests.
Payload layout: event (8 bits), E (end) bit, R bit, volume (6 bits, -dBm0), duration
(16 bits, timestamp units since the event's RTP timestamp). Events 0-15 are the DTMF keys
0-9, ``*``, ``#``, A-D (§3.2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from limen.rtp.errors import RtpParseError

DTMF_KEYS: Final = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """The first event of a telephone-event payload (later 4-byte blocks are redundant
        copies of earlier events, §2.5.1.5, and are ignored)."""
        if len(payload) < 4:
            raise RtpParseError("telephone-event payload is shorter than 4 bytes")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    @property
    def key(self) -> str | None:
        """The DTMF key ("0"-"9", "*", "#", "A"-"D") or None for other events."""
        return DTMF_KEYS[self.event] if self.event < 16 else None

    def __bytes__(self) -> bytes:
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume out of range: {self.volume}")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)
