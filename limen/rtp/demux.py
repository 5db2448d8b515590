"""What arrived on a media port: demultiplexing by first byte (RFC 7983 §7, RFC 5764 §5.1.2)
and RTP vs RTCP on a muxed port (RFC 5761 §4).

RFC 7983 §7 ranges of the first byte:

====== =========================
0-3    STUN (RFC 8489)
16-19  ZRTP (RFC 6189)
20-63  DTLS (RFC 6347)
64-79  TURN channel (RFC 8656)
128-191 RTP or RTCP (RFC 3550)
else   drop
====== =========================

RFC 5761 §4: on a port carrying both, the second byte of RTCP (packet type 192-223 when
read with the marker bit) cannot be an RTP payload type of the 64-95 range that RFC 5761
forbids for RTP; so second byte 192-223 means RTCP. Both lookups are a tuple index, cheap
enough for every packet.
"""

from __future__ import annotations

import enum


class PacketKind(enum.Enum):
    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    TURN_CHANNEL = "turn-channel"
    #: From :func:`classify`: RTP or RTCP, the first byte cannot tell.
    RTP_RTCP = "rtp-rtcp"
    #: From :func:`demux` only.
    RTP = "rtp"
    #: From :func:`demux` only.
    RTCP = "rtcp"
    #: Outside every range (or empty): discard (RFC 7983 §7).
    DROP = "drop"


def _kind(byte: int) -> PacketKind:
    if byte <= 3:
        return PacketKind.STUN
    if 16 <= byte <= 19:
        return PacketKind.ZRTP
    if 20 <= byte <= 63:
        return PacketKind.DTLS
    if 64 <= byte <= 79:
        return PacketKind.TURN_CHANNEL
    if 128 <= byte <= 191:
        return PacketKind.RTP_RTCP
    return PacketKind.DROP


_BY_FIRST_BYTE: tuple[PacketKind, ...] = tuple(_kind(b) for b in range(256))


def classify(first_byte: int) -> PacketKind:
    """RFC 7983 §7 class of a packet from its first byte (0-255)."""
    return _BY_FIRST_BYTE[first_byte]


def is_rtcp(packet: bytes) -> bool:
    """RTCP rather than RTP on a muxed port (RFC 5761 §4): second byte in 192-223.

    Assumes the first byte already said RTP/RTCP.
    """
    return len(packet) > 1 and 192 <= packet[1] <= 223


def demux(packet: bytes) -> PacketKind:
    """Full demultiplexing of one datagram: like :func:`classify`, but RTP_RTCP is split
    into RTP and RTCP, and a packet too short to hold either is dropped."""
    if not packet:
        return PacketKind.DROP
    kind = _BY_FIRST_BYTE[packet[0]]
    if kind is PacketKind.RTP_RTCP:
        if len(packet) < 4:
            return PacketKind.DROP  # no RTCP header (4 bytes) fits, let alone RTP (12)
        return PacketKind.RTCP if 192 <= packet[1] <= 223 else PacketKind.RTP
    return kind
