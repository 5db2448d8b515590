"""RTCP packets, minimal (RFC 3550 §6.4.1 SR, §6.4.2 RR, §6.5 SDES, §6.6 BYE, §6.1 compound).

:func:`parse_rtcp` splits a compound packet (after SRTCP decryption) into typed packets:
sender and receiver reports with their report blocks, source descriptions, BYE; any other
type (APP, RTPFB/PSFB of RFC 4585, XR of RFC 3611 ...) is kept as :class:`RtcpOther` with its
raw body. Each type writes itself back with ``bytes()``.

Deliberately lenient on compound structure: RFC 3550 §6.1 wants an SR or RR first, but
RFC 5506 reduced-size RTCP allows a lone feedback packet, and the relay forwards what it
cannot understand anyway. Per packet, lengths, version and padding are checked; errors
raise :class:`~limen.rtp.errors.RtpParseError` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from limen.rtp.errors import RtpParseError

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packets, octets
_REPORT_BLOCK = struct.Struct("!IBBHIIII")  # lost count split: high byte + low 16 bits
_SSRC = struct.Struct("!I")


def _signed24(value: int) -> int:
    return value - (1 << 24) if value & 0x800000 else value


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (RFC 3550 §6.4.1).

    ``fraction_lost`` is the 8-bit fixed-point fraction (lost/expected x 256) since the
    previous report; ``packets_lost`` the signed 24-bit cumulative count (negative with
    duplicates); ``jitter`` in timestamp units; ``lsr``/``dlsr`` NTP-compact (1/65536 s).
    """

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost_high, lost_low, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, offset
        )
        lost = _signed24(lost_high << 16 | lost_low)
        return cls(ssrc, fraction, lost, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost >> 16,
            lost & 0xFFFF,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


def _header(packet_type: int, count: int, body_length: int, padding: bool = False) -> bytes:
    return _HEADER.pack(0x80 | (0x20 if padding else 0) | count, packet_type, body_length // 4)


@dataclass(frozen=True, slots=True)
class RtcpSenderReport:
    """SR (PT 200, RFC 3550 §6.4.1). ``ntp_timestamp`` is the full 64-bit NTP time."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        body += b"".join(map(bytes, self.reports)) + self.extension
        return _header(RTCP_SR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpReceiverReport:
    """RR (PT 201, RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + b"".join(map(bytes, self.reports)) + self.extension
        return _header(RTCP_RR, len(self.reports), len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: an SSRC and its (item type, value) pairs (RFC 3550 §6.5)."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> bytes | None:
        return next((value for kind, value in self.items if kind == 1), None)


@dataclass(frozen=True, slots=True)
class RtcpSourceDescription:
    """SDES (PT 202, RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...] = ()

    def __bytes__(self) -> bytes:
        body = b""
        for chunk in self.chunks:
            data = _SSRC.pack(chunk.ssrc)
            for kind, value in chunk.items:
                data += bytes((kind, len(value))) + value
            # A null item ends the chunk, then zeros to the next 32-bit boundary.
            data += bytes(4 - len(data) % 4)
            body += data
        return _header(RTCP_SDES, len(self.chunks), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpBye:
    """BYE (PT 203, RFC 3550 §6.6) with the sources leaving and an optional reason."""

    sources: tuple[int, ...] = ()
    reason: bytes | None = None

    def __bytes__(self) -> bytes:
        body = b"".join(_SSRC.pack(ssrc) for ssrc in self.sources)
        if self.reason is not None:
            body += bytes((len(self.reason),)) + self.reason
            body += bytes(-len(body) % 4)
        return _header(RTCP_BYE, len(self.sources), len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpOther:
    """Any other RTCP packet, kept raw: type, the 5-bit count/subtype field and body."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.packet_type, self.count, len(self.body)) + self.body


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpOther


def _reports(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> RtcpSourceDescription:
    chunks: list[SdesChunk] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RtpParseError("RTCP SDES chunk is truncated")
        ssrc = _SSRC.unpack_from(body, pos)[0]
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= len(body):
                raise RtpParseError("RTCP SDES chunk is truncated")
            kind = body[pos]
            if kind == 0:  # end of list; skip to the next 32-bit boundary
                pos = (pos + 4) & ~3
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtpParseError("RTCP SDES item is truncated")
            length = body[pos + 1]
            items.append((kind, bytes(body[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return RtcpSourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> RtcpBye:
    if len(body) < 4 * count:
        raise RtpParseError("RTCP bye length is invalid")
    sources = struct.unpack_from(f"!{count}I", body)
    reason: bytes | None = None
    pos = 4 * count
    if pos < len(body):
        length = body[pos]
        if pos + 1 + length > len(body):
            raise RtpParseError("RTCP bye reason is truncated")
        reason = bytes(body[pos + 1 : pos + 1 + length])
    return RtcpBye(sources, reason)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split and parse a (compound) RTCP packet (RFC 3550 §6.1, §6.4-§6.6)."""
    packets: list[RtcpPacket] = []
    pos = 0
    end = len(data)
    if end < 4:
        raise RtpParseError("RTCP packet length is less than 4 bytes")
    while pos < end:
        if end - pos < 4:
            raise RtpParseError("RTCP packet length is less than 4 bytes")
        first, packet_type, length = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtpParseError("RTCP packet has invalid version")
        packet_end = pos + 4 + 4 * length
        if packet_end > end:
            raise RtpParseError("RTCP packet is truncated")
        body_end = packet_end
        if first & 0x20:
            padding = data[packet_end - 1]
            if padding == 0 or padding > 4 * length:
                raise RtpParseError("RTCP packet padding length is invalid")
            body_end -= padding
        body = data[pos + 4 : body_end]
        count = first & 0x1F
        if packet_type == RTCP_SR:
            if len(body) < 24 + 24 * count:
                raise RtpParseError("RTCP sender report length is invalid")
            ssrc, ntp, rtp_ts, packet_count, octet_count = _SENDER_INFO.unpack_from(body)
            packets.append(
                RtcpSenderReport(
                    ssrc,
                    ntp,
                    rtp_ts,
                    packet_count,
                    octet_count,
                    _reports(body, 24, count),
                    bytes(body[24 + 24 * count :]),
                )
            )
        elif packet_type == RTCP_RR:
            if len(body) < 4 + 24 * count:
                raise RtpParseError("RTCP receiver report length is invalid")
            packets.append(
                RtcpReceiverReport(
                    _SSRC.unpack_from(body)[0],
                    _reports(body, 4, count),
                    bytes(body[4 + 24 * count :]),
                )
            )
        elif packet_type == RTCP_SDES:
            packets.append(_parse_sdes(body, count))
        elif packet_type == RTCP_BYE:
            packets.append(_parse_bye(body, count))
        else:
            packets.append(RtcpOther(packet_type, count, bytes(body)))
        pos = packet_end
    return packets


def rtcp_report_blocks(packets: list[RtcpPacket]) -> list[tuple[int, ReportBlock]]:
    """(reporter SSRC, block) for every report block in SRs and RRs of a compound packet."""
    return [
        (packet.ssrc, block)
        for packet in packets
        if isinstance(packet, RtcpSenderReport | RtcpReceiverReport)
        for block in packet.reports
    ]
