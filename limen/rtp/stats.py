"""Per-stream receiver statistics and round-trip time (RFC 3550 §6.4.1, appendices A.1,
A.3, A.8), with NTP timestamp helpers (RFC 3550 §4).

:class:`ReceiverStats` follows the RFC's reference code for one SSRC:

- A.1 sequence validation: a new source is on probation until ``probation`` packets
  (``MIN_SEQUENTIAL`` = 2) arrive in sequence; 16-bit wraparound counts cycles; a jump of
  ``MAX_DROPOUT`` (3000) or more is accepted only when the next packet confirms it (the
  sender restarted); packets up to ``MAX_MISORDER`` (100) behind are late, not a restart.
- A.3 loss: expected = extended highest - base + 1, lost = expected - received; the
  fraction lost per reporting interval from the prior counts.
- A.8 interarrival jitter: J += (|D| - J)/16 in RTP timestamp units, D computed with the
  clock rate of the packet's payload type. Arrival times are seconds passed in (``now``),
  never read from a clock.

One deliberate deviation: duplicates. A.1 counts a duplicate as received, so ``lost`` can
go negative and hides real loss. We remember which of the last 128 sequence numbers arrived
(A.1 rejects anything older as misordered anyway), count duplicates apart and leave them
out of ``received`` and of the jitter. ``packets``/``bytes`` count everything that arrived.

RTT (§6.4.1): a receiver report carries LSR (middle 32 bits of the NTP timestamp of the
last SR it received) and DLSR (how long it held it); RTT = A - LSR - DLSR where A is the
report's arrival time. A relay forwards SRs it did not write, so its clock and the SR's
differ; :class:`RttTracker` instead remembers when *it* forwarded each SR and computes
RTT = now - forwarded - DLSR: the round trip between the relay and the reporter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from limen.rtp.rtcp import ReportBlock

RTP_SEQ_MOD: Final = 1 << 16
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
MIN_SEQUENTIAL: Final = 2
_WINDOW: Final = 128  # > MAX_MISORDER: every late packet A.1 accepts is in the window
_WINDOW_MASK: Final = (1 << _WINDOW) - 1

_COUNTED: Final = 1
_PROBATION: Final = 0
_IGNORED: Final = -1

NTP_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01 (§4)


def ntp_timestamp(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900, RFC 3550 §4) of a Unix time."""
    return round((unix_seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_to_unix(ntp: int) -> float:
    """Inverse of :func:`ntp_timestamp` (era 0, i.e. until 2036)."""
    return ntp / (1 << 32) - NTP_EPOCH_OFFSET


def ntp_compact(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (16.16 seconds): the LSR format (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_from_report(arrival: int, lsr: int, dlsr: int) -> float | None:
    """RTT in seconds from a report block that arrived at NTP-compact time ``arrival``
    (§6.4.1: A - LSR - DLSR). None if no SR was received (LSR 0) or the result is negative
    (clock trouble)."""
    if lsr == 0:
        return None
    delta = (arrival - lsr - dlsr) & 0xFFFFFFFF
    if delta & 0x80000000:
        return None
    return delta / 65536.0


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of one received stream, for ``query`` and call-end logs."""

    packets: int
    bytes: int
    received: int
    expected: int
    lost: int
    loss_percent: float
    out_of_order: int
    duplicates: int
    jitter_ms: float
    max_jitter_ms: float
    highest_sequence: int


class ReceiverStats:
    """Reception statistics for one SSRC (see the module docstring)."""

    __slots__ = (
        "_clock_rate",
        "_last_arrival",
        "_last_timestamp",
        "_seen",
        "bad_seq",
        "base_seq",
        "bytes",
        "cycles",
        "duplicates",
        "expected_prior",
        "jitter",
        "max_jitter_ms",
        "max_seq",
        "out_of_order",
        "packets",
        "probation",
        "received",
        "received_prior",
        "ssrc",
    )

    def __init__(self, ssrc: int, sequence: int, *, probation: int = MIN_SEQUENTIAL) -> None:
        """Start tracking ``ssrc`` whose first packet has ``sequence`` (A.1 ``init_seq``;
        feed that packet to :meth:`update` too). ``probation=1`` counts the first packet at
        once (for a source SRTP has already authenticated)."""
        if probation < 1:
            raise ValueError("probation must be at least 1")
        self.ssrc = ssrc
        self.packets = 0
        self.bytes = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.jitter = 0.0
        self.max_jitter_ms = 0.0
        self._clock_rate = 0
        self._last_arrival = 0.0
        self._last_timestamp = 0
        self._init_seq(sequence)
        # A.1: the source starts on probation, expecting ``sequence`` next.
        self.max_seq = (sequence - 1) & 0xFFFF
        self.probation = probation

    def _init_seq(self, sequence: int) -> None:
        self.base_seq = sequence
        self.max_seq = sequence
        self.bad_seq = RTP_SEQ_MOD + 1  # so that sequence == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._seen = 1  # bit 0: max_seq itself arrived

    # -- A.1 ---------------------------------------------------------------------------

    def _update_seq(self, seq: int) -> int:
        """A.1 ``update_seq`` plus duplicate detection.

        Returns _COUNTED, _PROBATION (valid but not yet counted) or _IGNORED (duplicate or
        unconfirmed jump).
        """
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return _COUNTED
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return _PROBATION
        if udelta == 0:
            self.duplicates += 1
            return _IGNORED
        if udelta < MAX_DROPOUT:
            # In order, possibly with a gap.
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & _WINDOW_MASK
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump: believe it only if the next packet follows it (A.1).
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) & 0xFFFF
                return _IGNORED
            self._init_seq(seq)
        else:
            # Late (reordered) or duplicate, at most MAX_MISORDER behind.
            behind = RTP_SEQ_MOD - udelta
            bit = 1 << behind
            if self._seen & bit:
                self.duplicates += 1
                return _IGNORED
            self._seen |= bit
            self.out_of_order += 1
        self.received += 1
        return _COUNTED

    def update(
        self, sequence: int, timestamp: int, arrival: float, size: int, clock_rate: int
    ) -> bool:
        """Account one packet: RTP sequence number and timestamp, arrival time in seconds,
        size in bytes (as received), RTP clock rate of its payload type.

        ``clock_rate=0`` leaves the packet out of the jitter: for RFC 4733 events, whose
        timestamp stays at the start of the event (§2.5.1.2) and would fake jitter.
        Returns whether the packet was counted as received (False during probation, for
        duplicates and for an unconfirmed jump).
        """
        self.packets += 1
        self.bytes += size
        outcome = self._update_seq(sequence)
        if outcome == _IGNORED:
            return False  # duplicates and unconfirmed jumps stay out of the jitter too
        if clock_rate:
            if clock_rate == self._clock_rate:
                # A.8: D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}), in timestamp units;
                # the RTP timestamp difference taken modulo 2^32 so wraparound is harmless.
                transit_delta = (arrival - self._last_arrival) * clock_rate - _signed32(
                    timestamp - self._last_timestamp
                )
                self.jitter += (abs(transit_delta) - self.jitter) / 16.0
                jitter_ms = self.jitter * 1000.0 / clock_rate
                if jitter_ms > self.max_jitter_ms:
                    self.max_jitter_ms = jitter_ms
            else:
                self._clock_rate = clock_rate  # first packet, or a codec change: restart
            self._last_arrival = arrival
            self._last_timestamp = timestamp
        return outcome == _COUNTED

    # -- A.3 ---------------------------------------------------------------------------

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (cycles + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3). Never negative: duplicates are not received."""
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self._clock_rate if self._clock_rate else 0.0

    def interval_loss(self) -> tuple[int, int]:
        """(fraction lost as 8-bit fixed point, cumulative lost) for an RTCP report, and
        start a new interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        return fraction, min(self.lost, 0x7FFFFF)

    def report_block(self, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        """A report block for this source (§6.4.1), starting a new loss interval."""
        fraction, lost = self.interval_loss()
        return ReportBlock(
            self.ssrc,
            fraction,
            lost,
            self.extended_max & 0xFFFFFFFF,
            int(self.jitter),
            lsr,
            dlsr,
        )

    def snapshot(self) -> StreamStats:
        expected = self.expected
        lost = self.lost
        return StreamStats(
            packets=self.packets,
            bytes=self.bytes,
            received=self.received,
            expected=expected,
            lost=lost,
            loss_percent=100.0 * lost / expected if expected > 0 else 0.0,
            out_of_order=self.out_of_order,
            duplicates=self.duplicates,
            jitter_ms=self.jitter_ms,
            max_jitter_ms=self.max_jitter_ms,
            highest_sequence=self.extended_max,
        )


class RttTracker:
    """Round-trip time between the relay and one peer, from RTCP passing through.

    Call :meth:`sender_report_sent` when an SR goes *to* the peer (forwarded or our own),
    and :meth:`report_received` with each report block the peer sends back *about that
    stream* (its LSR echoes the SR). Only the last ``history`` SRs are remembered.
    """

    __slots__ = ("_sent", "history", "rtt")

    def __init__(self, history: int = 8) -> None:
        self._sent: dict[int, float] = {}
        self.history = history
        self.rtt: float | None = None

    def sender_report_sent(self, ntp_timestamp: int, now: float) -> None:
        """An SR with this 64-bit NTP timestamp was sent to the peer at ``now`` (seconds)."""
        self._sent[ntp_compact(ntp_timestamp)] = now
        while len(self._sent) > self.history:
            del self._sent[next(iter(self._sent))]

    def report_received(self, lsr: int, dlsr: int, now: float) -> float | None:
        """RTT in seconds from a report block received at ``now``, or None if its LSR is
        not one of ours (or 0). The latest value is also kept in :attr:`rtt`."""
        sent = self._sent.get(lsr) if lsr else None
        if sent is None:
            return None
        rtt = now - sent - dlsr / 65536.0
        if rtt < 0:
            return None
        self.rtt = rtt
        return rtt
