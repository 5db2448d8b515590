"""Sans-IO RTP: packets, RTCP, SRTP contexts, demultiplexing, statistics, call quality.

RFC 3550 (RTP/RTCP, appendices A.1, A.3, A.8), RFC 3711 and RFC 7714 (SRTP via pylibsrtp),
RFC 7983 and RFC 5761 §4 (demultiplexing), RFC 4733 (telephone-event), ITU-T G.107
(E-model, simplified). Nothing here opens a socket or reads a clock: times are arguments.

The relay's packet path, per datagram::

    kind = classify(data[0])                      # RFC 7983
    if kind is PacketKind.RTP_RTCP:
        if is_rtcp(data):                         # RFC 5761 §4
            rtcp = inbound.unprotect_rtcp(data)   # SrtpAuthError / SrtpReplayError: count, drop
        else:
            rtp = inbound.unprotect(data)
            pt, marker, seq, ts, ssrc, offset = parse_rtp_fields(rtp)
            stats.update(seq, ts, now, len(data), clock_rates.get(pt, 0))
            send(outbound.protect(rtp) if outbound else rtp)
"""

from limen.rtp.demux import PacketKind, classify, demux, is_rtcp
from limen.rtp.dtmf import TelephoneEvent
from limen.rtp.emodel import (
    CODEC_IMPAIRMENTS,
    CodecImpairment,
    estimate_mos,
    mos_from_r,
    r_factor,
)
from limen.rtp.errors import RtpParseError, SrtpAuthError, SrtpError, SrtpReplayError
from limen.rtp.packet import RtpFields, RtpHeader, RtpPacket, parse_rtp_fields
from limen.rtp.rtcp import (
    ReportBlock,
    RtcpBye,
    RtcpOther,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    SdesChunk,
    parse_rtcp,
    rtcp_report_blocks,
)
from limen.rtp.srtp import SUITES, SrtpContext, SrtpDirection
from limen.rtp.stats import (
    ReceiverStats,
    RttTracker,
    StreamStats,
    ntp_compact,
    ntp_timestamp,
    ntp_to_unix,
    rtt_from_report,
)

__all__ = [
    "CODEC_IMPAIRMENTS",
    "SUITES",
    "CodecImpairment",
    "PacketKind",
    "ReceiverStats",
    "ReportBlock",
    "RtcpBye",
    "RtcpOther",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSenderReport",
    "RtcpSourceDescription",
    "RtpFields",
    "RtpHeader",
    "RtpPacket",
    "RtpParseError",
    "RttTracker",
    "SdesChunk",
    "SrtpAuthError",
    "SrtpContext",
    "SrtpDirection",
    "SrtpError",
    "SrtpReplayError",
    "StreamStats",
    "TelephoneEvent",
    "classify",
    "demux",
    "estimate_mos",
    "is_rtcp",
    "mos_from_r",
    "ntp_compact",
    "ntp_timestamp",
    "ntp_to_unix",
    "parse_rtcp",
    "parse_rtp_fields",
    "r_factor",
    "rtcp_report_blocks",
    "rtt_from_report",
]
