"""RTP packets (RFC 3550 §5.1, §5.3.1; header extensions kept raw, RFC 8285).

Two readers:

- :func:`parse_rtp_fields` for the packet path: one ``struct`` call, no objects, no copies;
  returns ``(payload_type, marker, sequence_number, timestamp, ssrc, payload_offset)``.
  It checks only what is in clear text in SRTP too (version, CSRC list and extension fit),
  so it works on SRTP packets before decryption (RFC 3711 §3.1: the header is not
  encrypted). It does not look at padding, which SRTP encrypts.
- :meth:`RtpPacket.parse` for everything else: a frozen value with the payload and padding
  split off (RFC 3550 §5.1: the last padding octet counts the padding, itself included).

Both raise :class:`~limen.rtp.errors.RtpParseError` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from limen.rtp.errors import RtpParseError

RTP_VERSION: Final = 2
RTP_HEADER_LENGTH: Final = 12

_HEADER = struct.Struct("!BBHII")
_unpack_header = _HEADER.unpack_from
_EXTENSION = struct.Struct("!HH")

#: (payload_type, marker, sequence_number, timestamp, ssrc, payload_offset)
RtpFields = tuple[int, int, int, int, int, int]


def parse_rtp_fields(packet: bytes) -> RtpFields:
    """The fixed header fields and where the payload starts (RFC 3550 §5.1).

    Hot path: a valid packet without CSRCs or extension costs one ``unpack_from``. The
    payload is ``packet[payload_offset:]`` (minus padding for plain RTP, minus the auth tag
    for SRTP).
    """
    if len(packet) < 12:
        raise RtpParseError("RTP packet length is less than 12 bytes")
    first, second, sequence, timestamp, ssrc = _unpack_header(packet)
    if first & 0xC0 != 0x80:
        raise RtpParseError("RTP packet has invalid version")
    if first & 0x1F == 0:  # no CSRC, no extension: the common case
        return second & 0x7F, second >> 7, sequence, timestamp, ssrc, 12
    offset = 12 + ((first & 0x0F) << 2)
    if offset > len(packet):
        raise RtpParseError("RTP packet has truncated CSRC")
    if first & 0x10:
        if offset + 4 > len(packet):
            raise RtpParseError("RTP packet has truncated extension profile / length")
        offset += 4 + ((packet[offset + 2] << 8 | packet[offset + 3]) << 2)
        if offset > len(packet):
            raise RtpParseError("RTP packet has truncated extension value")
    return second & 0x7F, second >> 7, sequence, timestamp, ssrc, offset


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The RTP header (RFC 3550 §5.1) with CSRCs and the raw header extension (§5.3.1).

    ``extension_profile`` is None when the X bit is clear; ``extension`` holds the extension
    words after the 4-byte profile/length word. ``padding`` is the P bit as received.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: bool = False

    @property
    def length(self) -> int:
        """Header length in bytes: where the payload starts."""
        length = 12 + 4 * len(self.csrcs)
        if self.extension_profile is not None:
            length += 4 + len(self.extension)
        return length

    @classmethod
    def parse(cls, packet: bytes) -> RtpHeader:
        """The header of an RTP or SRTP packet (padding is not checked here)."""
        payload_type, marker, sequence, timestamp, ssrc, offset = parse_rtp_fields(packet)
        first = packet[0]
        count = first & 0x0F
        csrcs = struct.unpack_from(f"!{count}I", packet, 12) if count else ()
        profile: int | None = None
        extension = b""
        if first & 0x10:
            start = 12 + 4 * count
            profile = _EXTENSION.unpack_from(packet, start)[0]
            extension = bytes(packet[start + 4 : offset])
        return cls(
            payload_type,
            sequence,
            timestamp,
            ssrc,
            bool(marker),
            csrcs,
            profile,
            extension,
            bool(first & 0x20),
        )

    def __bytes__(self) -> bytes:
        return self.serialize(padding=self.padding)

    def serialize(self, *, padding: bool) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type out of range: {self.payload_type}")
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs")
        if len(self.extension) % 4:
            raise ValueError("header extension length must be a multiple of 4")
        first = 0x80 | (0x20 if padding else 0) | len(self.csrcs)
        if self.extension_profile is not None:
            first |= 0x10
        data = _HEADER.pack(
            first,
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence_number,
            self.timestamp,
            self.ssrc,
        )
        if self.csrcs:
            data += struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        if self.extension_profile is not None:
            data += _EXTENSION.pack(self.extension_profile, len(self.extension) // 4)
            data += self.extension
        return data


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """A plain RTP packet: header, payload, and the padding length (0 if none)."""

    header: RtpHeader
    payload: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, packet: bytes) -> RtpPacket:
        header = RtpHeader.parse(packet)
        end = len(packet)
        padding = 0
        if header.padding:
            padding = packet[-1]
            # §5.1: the count includes itself, so 0 is invalid, and it cannot eat the header.
            if padding == 0 or header.length + padding > end:
                raise RtpParseError("RTP packet padding length is invalid")
            end -= padding
        return cls(header, bytes(packet[header.length : end]), padding)

    def __bytes__(self) -> bytes:
        if not 0 <= self.padding_size <= 255:
            raise ValueError(f"padding size out of range: {self.padding_size}")
        data = self.header.serialize(padding=self.padding_size > 0) + self.payload
        if self.padding_size:
            data += bytes(self.padding_size - 1) + bytes((self.padding_size,))
        return data
