"""One leg's end of one ``m=`` line: two sockets (RTP, RTCP), the remote, SRTP contexts,
latching, statistics, and the packet pipeline (DESIGN.md: call → leg → stream → socket).

The pipeline for a datagram arriving on an endpoint (rtpengine's ``stream_packet``
stages, aiortc's drop-with-counter), always in this order:

1. **demux** by first byte (RFC 7983 §7): only 128-191 (RTP/RTCP) goes on; STUN, DTLS,
   ZRTP, TURN channel and garbage are dropped and counted (we do not do ICE or DTLS-SRTP:
   the relay strips those attributes from the SDP). RTP vs RTCP on a muxed port by the
   second byte (RFC 5761 §4); everything on the RTCP port is RTCP.
2. **unprotect** with the inbound SRTP context when the leg uses SRTP. Authentication
   failure, replay and malformed packets are dropped and counted, never forwarded. After a
   re-key the previous inbound context is tried once on authentication failure, so packets
   in flight across an offer/answer are not lost.
3. **source check** (RTP-bleed protection). A leg with ``latch`` learns its remote from the
   first packet (plain) or first *authenticated* packet (SRTP), and afterwards moves only
   for an authenticated SRTP packet; a plain packet from another address is dropped. A
   fixed leg accepts packets only from its SDP address (any port: some PBXs send from
   another port than they receive on) and always sends to the SDP address and port.
4. **account**: RTP → per-SSRC :class:`limen.rtp.ReceiverStats` (RFC 3550 A.1/A.3/A.8);
   RTCP → RTT through :class:`limen.rtp.RttTracker`.
5. **protect** for the other leg with *its* outbound context (independent keys) and
   **send** from the other leg's socket to the other leg's remote.

Per packet the path allocates only what it must: the decrypted and re-encrypted packets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from limen.rtp import (
    PacketKind,
    ReceiverStats,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtpParseError,
    RttTracker,
    SrtpAuthError,
    SrtpContext,
    SrtpError,
    SrtpReplayError,
    classify,
    estimate_mos,
    parse_rtcp,
    parse_rtp_fields,
)
from limen.sdp import CryptoAttribute

log = logging.getLogger("limen.media")

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)

MAX_SSRCS = 16  # per endpoint: a flood of random SSRCs cannot grow the table


class Activity:
    """Shared by every endpoint of a call: the time of the last packet (for timeouts)."""

    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now


class Endpoint:
    """See the module docstring. ``peer`` is the other leg's endpoint of the same m= line."""

    __slots__ = (
        "activity",
        "bytes_in",
        "clock_rates",
        "codec",
        "crypto_in",
        "crypto_offered",
        "crypto_out",
        "dropped",
        "forwarded",
        "index",
        "latch",
        "latched",
        "leg",
        "packets_in",
        "peer",
        "peer_host",
        "port",
        "ptime",
        "rejected",
        "relatched",
        "remote",
        "rtcp_in",
        "rtcp_mux",
        "rtcp_remote",
        "rtcp_source",
        "rtcp_transport",
        "rtt",
        "sdp_host",
        "source",
        "srtp_in",
        "srtp_in_previous",
        "srtp_out",
        "ssrcs",
        "time",
        "transport",
    )

    def __init__(
        self, leg: str, index: int, port: int, *, latch: bool, activity: Activity, time: Any
    ) -> None:
        self.leg = leg
        self.index = index
        self.port = port  # local RTP port; RTCP is port + 1
        self.latch = latch
        self.activity = activity
        self.time: Callable[[], float] = time
        self.peer: Endpoint | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        # Where to send (remote) and what we accept from (source), per socket.
        self.sdp_host: str | None = None
        self.peer_host: str | None = None  # the UA's signalling address (LegPolicy.peer)
        self.remote: Address | None = None
        self.rtcp_remote: Address | None = None
        self.source: Address | None = None
        self.rtcp_source: Address | None = None
        self.latched = False
        self.rtcp_mux = False
        self.rejected = False
        # SRTP: the peer's key decrypts what it sends, ours encrypts what we send it.
        self.srtp_in: SrtpContext | None = None
        self.srtp_in_previous: SrtpContext | None = None
        self.srtp_out: SrtpContext | None = None
        self.crypto_in: CryptoAttribute | None = None
        self.crypto_out: CryptoAttribute | None = None
        self.crypto_offered: list[CryptoAttribute] = []
        # Codec information from the negotiated SDP (stats and MOS).
        self.clock_rates: dict[int, int] = {}
        self.codec = "PCMU"
        self.ptime = 20
        # Counters.
        self.packets_in = 0
        self.bytes_in = 0
        self.rtcp_in = 0
        self.forwarded = 0
        self.relatched = 0
        self.dropped: dict[str, int] = {}
        self.ssrcs: dict[int, ReceiverStats] = {}
        self.rtt = RttTracker()

    def __repr__(self) -> str:
        return f"<Endpoint {self.leg}#{self.index} :{self.port} -> {self.remote}>"

    # -- configuration ---------------------------------------------------------------------

    def set_remote(self, host: str | None, port: int, rtcp_port: int | None) -> None:
        """The remote from SDP. A changed address unlatches (the next packet latches again,
        authenticated if SRTP), which is how a re-INVITE after NAT rebinding works."""
        if host is None or port == 0 or host in ("0.0.0.0", "::"):
            if host != self.sdp_host:
                self.sdp_host = None
                if not self.latched:
                    self.remote = self.rtcp_remote = None
            return
        new = (host, port)
        if host == self.sdp_host and self.latch and self.latched:
            return  # same SDP address, keep what was learnt
        self.sdp_host = host
        self.remote = new
        self.rtcp_remote = (host, rtcp_port or port + 1)
        self.source = self.rtcp_source = None
        self.latched = False

    def set_srtp_in(self, crypto: CryptoAttribute | None) -> None:
        """Key for what the remote sends (None: plain). The old context stays as fallback."""
        if crypto is None:
            self.srtp_in = self.srtp_in_previous = None
            self.crypto_in = None
            return
        current = self.crypto_in
        if current is not None and (current.key_salt, current.suite) == (
            crypto.key_salt,
            crypto.suite,
        ):
            self.crypto_in = crypto
            return
        self.srtp_in_previous = self.srtp_in
        self.srtp_in = SrtpContext.inbound(crypto.suite, crypto.key_salt)
        self.crypto_in = crypto

    def set_srtp_out(self, crypto: CryptoAttribute | None) -> None:
        """Our key for what we send the remote (None: plain)."""
        if crypto is None:
            self.srtp_out = None
            self.crypto_out = None
            return
        current = self.crypto_out
        if current is not None and (current.key_salt, current.suite) == (
            crypto.key_salt,
            crypto.suite,
        ):
            self.crypto_out = crypto
            return
        self.srtp_out = SrtpContext.outbound(crypto.suite, crypto.key_salt, allow_repeat_tx=True)
        self.crypto_out = crypto

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    # -- the pipeline ----------------------------------------------------------------------

    def receive_rtp(self, data: bytes, addr: Address) -> None:
        """A datagram on the RTP socket (RTP, or RTCP when muxed)."""
        self._receive(data, addr, False)

    def receive_rtcp(self, data: bytes, addr: Address) -> None:
        """A datagram on the RTCP socket."""
        self._receive(data, addr, True)

    def _receive(self, data: bytes, addr: Address, rtcp_port: bool) -> None:
        size = len(data)
        # 1. demux (RFC 7983, RFC 5761 §4)
        if size < 4 or not 128 <= data[0] <= 191:
            self._drop(classify(data[0]).value if data else PacketKind.DROP.value)
            return
        now = self.time()
        rtcp = rtcp_port or 192 <= data[1] <= 223
        # 2. unprotect
        srtp = self.srtp_in
        if srtp is not None:
            try:
                data = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
            except SrtpAuthError:
                previous = self.srtp_in_previous
                try:
                    if previous is None:
                        raise
                    data = previous.unprotect_rtcp(data) if rtcp else previous.unprotect(data)
                except SrtpError:
                    self._drop("srtp-auth")
                    return
            except SrtpReplayError:
                self._drop("srtp-replay")
                return
            except SrtpError:
                self._drop("srtp-error")
                return
        # 3. source check / latching
        if rtcp_port:
            if addr != self.rtcp_source and not self._accept_rtcp_source(addr, srtp is not None):
                return
        elif addr != self.source and not self._accept_source(addr, srtp is not None):
            return
        # Only packets that passed authentication and the source check keep the call alive
        # (an injector must not hold a dead call's ports open).
        self.activity.last = now
        peer = self.peer
        # 4. account, 5. protect + send
        if rtcp:
            self.rtcp_in += 1
            self._account_rtcp(data, now)
            if peer is not None:
                peer.send_rtcp(data)
            return
        try:
            pt, _marker, seq, ts, ssrc, _offset = parse_rtp_fields(data)
        except RtpParseError:
            self._drop("malformed")
            return
        self.packets_in += 1
        self.bytes_in += size
        stats = self.ssrcs.get(ssrc)
        if stats is None:
            if len(self.ssrcs) >= MAX_SSRCS:
                stats = None
            else:
                stats = self.ssrcs[ssrc] = ReceiverStats(
                    ssrc, seq, probation=1 if srtp is not None else 2
                )
        if stats is not None:
            stats.update(seq, ts, now, size, self.clock_rates.get(pt, 0))
        if peer is not None:
            peer.send_rtp(data)

    def _accept_source(self, addr: Address, authenticated: bool) -> bool:
        if not self.latch:
            if self.sdp_host is not None and addr[0] == self.sdp_host:
                self.source = addr
                return True
            self._drop("source")
            return False
        if self.latched and not authenticated:
            self._drop("source")  # RTP bleed: a plain packet may not move a latched stream
            return False
        if not authenticated and not self._expected_source(addr[0]):
            # RTP bleed before latching (rtpengine's strict source): a plain packet latches
            # only from the SDP address or the address the UA signals from, so a stranger
            # racing the callee's first packet never takes the stream.
            self._drop("source")
            return False
        if self.latched:
            self.relatched += 1
            log.info("%r: authenticated SRTP moved the remote to %s", self, addr)
        self.source = addr
        self.remote = addr
        self.latched = True
        if self.rtcp_mux:
            self.rtcp_remote = addr
        return True

    def _expected_source(self, host: str) -> bool:
        if self.sdp_host is None and self.peer_host is None:
            return True  # nothing known yet (no SDP address): the first packet decides
        return host == self.sdp_host or host == self.peer_host

    def _accept_rtcp_source(self, addr: Address, authenticated: bool) -> bool:
        if not self.latch:
            if self.sdp_host is not None and addr[0] == self.sdp_host:
                self.rtcp_source = addr
                return True
            self._drop("source")
            return False
        if not authenticated and (
            self.rtcp_source is not None or not self._expected_source(addr[0])
        ):
            self._drop("source")
            return False
        self.rtcp_source = addr
        self.rtcp_remote = addr
        return True

    def _account_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtpParseError:
            return
        peer = self.peer
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                if peer is not None:  # forwarded to the peer's remote: it will echo it
                    peer.rtt.sender_report_sent(packet.ntp_timestamp, now)
            elif not isinstance(packet, RtcpReceiverReport):
                continue
            for block in packet.reports:
                self.rtt.report_received(block.lsr, block.dlsr, now)

    def send_rtp(self, data: bytes) -> None:
        """Protect (if this leg is SRTP) and send to this leg's remote."""
        remote = self.remote
        transport = self.transport
        if remote is None or transport is None or self.rejected:
            self._drop("no-destination")
            return
        srtp = self.srtp_out
        if srtp is not None:
            try:
                data = srtp.protect(data)
            except SrtpError:
                self._drop("srtp-protect")
                return
        transport.sendto(data, remote)
        self.forwarded += 1

    def send_rtcp(self, data: bytes) -> None:
        if self.rtcp_mux:
            remote, transport = self.remote, self.transport
        else:
            remote, transport = self.rtcp_remote, self.rtcp_transport
        if remote is None or transport is None or self.rejected:
            self._drop("no-destination")
            return
        srtp = self.srtp_out
        if srtp is not None:
            try:
                data = srtp.protect_rtcp(data)
            except SrtpError:
                self._drop("srtp-protect")
                return
        transport.sendto(data, remote)

    # -- statistics ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What this endpoint received from its remote (and what it sent there)."""
        main = max(self.ssrcs.values(), key=lambda s: s.packets, default=None)
        snap = main.snapshot() if main is not None else None
        rtt = self.rtt.rtt
        jitter = snap.jitter_ms if snap is not None else 0.0
        loss = snap.loss_percent if snap is not None else 0.0
        delay = (rtt * 500.0 if rtt is not None else 0.0) + 2 * jitter + self.ptime
        return {
            "index": self.index,
            "local_port": self.port,
            "remote": f"{self.remote[0]}:{self.remote[1]}" if self.remote else None,
            "latched": self.latched,
            "srtp": self.crypto_in.suite if self.crypto_in else None,
            "srtp_out": self.crypto_out.suite if self.crypto_out else None,
            "rtcp_mux": self.rtcp_mux,
            "codec": self.codec,
            "packets": self.packets_in,
            "bytes": self.bytes_in,
            "rtcp_packets": self.rtcp_in,
            "ssrcs": len(self.ssrcs),
            "ssrc": main.ssrc if main is not None else None,
            "expected": snap.expected if snap else 0,
            "lost": snap.lost if snap else 0,
            "loss_percent": round(loss, 3),
            "out_of_order": snap.out_of_order if snap else 0,
            "duplicates": snap.duplicates if snap else 0,
            "jitter_ms": round(jitter, 3),
            "rtt_ms": round(rtt * 1000.0, 3) if rtt is not None else None,
            "mos": round(estimate_mos(self.codec, loss, delay), 2) if snap else None,
            "forwarded": self.forwarded,
            "relatched": self.relatched,
            "dropped": dict(self.dropped),
        }
