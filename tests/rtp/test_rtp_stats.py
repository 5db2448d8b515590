"""Receiver statistics (RFC 3550 A.1, A.3, A.8), RTT (§6.4.1), NTP helpers, and the
simplified E-model, against hand-computed sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.rtp import (
    ReceiverStats,
    ReportBlock,
    RttTracker,
    StreamStats,
    estimate_mos,
    mos_from_r,
    ntp_compact,
    ntp_timestamp,
    ntp_to_unix,
    r_factor,
    rtt_from_report,
)

RATE = 8000


def feed(seqs: list[int], *, probation: int = 1, start: float = 100.0) -> ReceiverStats:
    """Packets with the given sequence numbers, 20 ms apart, timestamps following seq."""
    stats = ReceiverStats(0x1234, seqs[0], probation=probation)
    for index, seq in enumerate(seqs):
        stats.update(seq, seq * 160 & 0xFFFFFFFF, start + index * 0.02, 172, RATE)
    return stats


def test_in_order() -> None:
    stats = feed(list(range(1000, 1100)))
    assert (stats.received, stats.expected, stats.lost) == (100, 100, 0)
    assert stats.packets == 100 and stats.bytes == 17200
    assert stats.extended_max == 1099
    assert stats.out_of_order == stats.duplicates == 0


def test_probation_per_a1() -> None:
    """MIN_SEQUENTIAL = 2: the first packet only starts the source; counting starts with the
    second, which becomes the base."""
    stats = ReceiverStats(1, 500)
    assert stats.update(500, 0, 0.0, 100, RATE) is False
    assert stats.expected == 0
    assert stats.update(501, 160, 0.02, 100, RATE) is True
    assert (stats.base_seq, stats.received, stats.expected) == (501, 1, 1)
    assert stats.packets == 2


def test_probation_restarts_on_gap() -> None:
    stats = ReceiverStats(1, 10)
    assert not stats.update(10, 0, 0.0, 1, RATE)
    assert not stats.update(12, 0, 0.0, 1, RATE)  # out of sequence: probation again
    assert stats.probation != 0
    assert stats.update(13, 0, 0.0, 1, RATE)
    assert stats.base_seq == 13


def test_loss_and_fraction() -> None:
    stats = feed([0, 1, 2, 5, 6, 7, 8, 9])  # 3 and 4 lost
    assert (stats.expected, stats.received, stats.lost) == (10, 8, 2)
    fraction, cumulative = stats.interval_loss()
    assert fraction == (2 << 8) // 10 == 51
    assert cumulative == 2
    # Next interval: 10..19 without loss.
    for seq in range(10, 20):
        stats.update(seq, seq * 160, 0.0, 172, 0)
    assert stats.interval_loss() == (0, 2)
    # Then 20..29 with 5 lost.
    for seq in (20, 22, 24, 26, 28, 29):
        stats.update(seq, seq * 160, 0.0, 172, 0)
    assert stats.interval_loss() == ((4 << 8) // 10, 6)
    snapshot = stats.snapshot()
    assert snapshot.lost == 6 and snapshot.expected == 30
    assert snapshot.loss_percent == pytest.approx(20.0)


def test_reorder() -> None:
    stats = feed([0, 1, 3, 2, 4, 6, 5])
    assert (stats.expected, stats.received, stats.lost) == (7, 7, 0)
    assert stats.out_of_order == 2
    assert stats.duplicates == 0


def test_duplicates_are_not_received() -> None:
    stats = feed([0, 1, 1, 2, 3, 2, 3, 3])
    assert stats.duplicates == 4
    assert (stats.expected, stats.received, stats.lost) == (4, 4, 0)
    assert stats.packets == 8


def test_wraparound() -> None:
    seqs = [65530 + i & 0xFFFF for i in range(12)]  # 65530 .. 65535, 0 .. 5
    stats = feed(seqs)
    assert stats.cycles == 65536
    assert stats.extended_max == 65536 + 5
    assert (stats.expected, stats.received, stats.lost) == (12, 12, 0)


def test_late_packet_across_wrap() -> None:
    stats = feed([65534, 65535, 1, 0, 2])
    assert stats.cycles == 65536
    assert stats.out_of_order == 1
    assert (stats.expected, stats.received, stats.lost) == (5, 5, 0)


def test_loss_across_wrap() -> None:
    stats = feed([65533, 65534, 1, 2])  # 65535 and 0 lost
    assert (stats.expected, stats.lost) == (6, 2)


def test_large_jump_needs_confirmation() -> None:
    """A.1: a jump of MAX_DROPOUT or more is a restart only if the next packet follows."""
    stats = feed(list(range(10)))
    assert stats.update(5000, 0, 1.0, 172, RATE) is False
    assert stats.extended_max == 9
    assert stats.update(5002, 0, 1.0, 172, RATE) is False  # not 5001: still ignored
    assert stats.extended_max == 9
    assert stats.update(6000, 0, 1.0, 172, RATE) is False
    assert stats.update(6001, 0, 1.0, 172, RATE) is True  # confirmed: resync
    assert (stats.base_seq, stats.received, stats.expected) == (6001, 1, 1)
    assert stats.packets == 14


def test_old_packet_beyond_misorder_is_a_jump_not_late() -> None:
    stats = feed(list(range(1000, 1200)))
    assert stats.update(1000, 0, 0.0, 172, RATE) is False  # 199 behind > MAX_MISORDER
    assert stats.duplicates == 0 and stats.out_of_order == 0


def test_jitter_exact_steps() -> None:
    """A.8 with |D| = 40 timestamp units every packet: J = 40 (1 - (15/16)^n)."""
    stats = ReceiverStats(1, 0, probation=1)
    for i in range(1001):
        arrival = i * 0.02 + (0.0025 if i % 2 else 0.0)  # +/- 2.5 ms => D = +/- 20 ... x2
        stats.update(i, i * 160, arrival, 172, RATE)
        if i == 1:
            # D = (0.0225 * 8000) - 160 = 20; J = 20/16
            assert stats.jitter == pytest.approx(1.25)
        if i == 2:
            # D = (0.0175 * 8000) - 160 = -20; J = 1.25 + (20 - 1.25)/16
            assert stats.jitter == pytest.approx(1.25 + 18.75 / 16)
    assert stats.jitter == pytest.approx(20.0, rel=1e-6)
    assert stats.jitter_ms == pytest.approx(2.5, rel=1e-6)
    assert stats.max_jitter_ms == pytest.approx(2.5, rel=1e-6)
    assert stats.report_block().jitter == 20


def test_jitter_constant_delay_is_zero_across_timestamp_wrap() -> None:
    stats = ReceiverStats(1, 0, probation=1)
    base = 2**32 - 5 * 160
    for i in range(20):
        stats.update(i, (base + i * 160) & 0xFFFFFFFF, 1000.0 + i * 0.02, 172, RATE)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_uses_clock_rate_and_skips_events() -> None:
    stats = ReceiverStats(1, 0, probation=1)
    stats.update(0, 0, 0.0, 100, 48000)
    stats.update(1, 960, 0.030, 100, 48000)  # 10 ms late at 48 kHz: D = 480
    assert stats.jitter == pytest.approx(30.0)
    assert stats.jitter_ms == pytest.approx(30.0 / 48)
    stats.update(2, 960, 5.0, 100, 0)  # an RFC 4733 event: no jitter update
    assert stats.jitter == pytest.approx(30.0)
    stats.update(3, 2880, 0.070, 100, 48000)  # relative to packet 1: D = 0
    assert stats.jitter == pytest.approx(30.0 - 30.0 / 16)
    stats.update(4, 0, 0.09, 100, 8000)  # codec change: restart the transit reference
    assert stats.jitter == pytest.approx(30.0 - 30.0 / 16)


def test_report_block_and_snapshot() -> None:
    stats = feed([0, 1, 2, 4])
    block = stats.report_block(lsr=0x12345678, dlsr=0x8000)
    assert block == ReportBlock(0x1234, 51, 1, 4, int(stats.jitter), 0x12345678, 0x8000)
    assert stats.snapshot() == StreamStats(
        packets=4,
        bytes=688,
        received=4,
        expected=5,
        lost=1,
        loss_percent=20.0,
        out_of_order=0,
        duplicates=0,
        jitter_ms=stats.jitter_ms,
        max_jitter_ms=stats.max_jitter_ms,
        highest_sequence=4,
    )


def test_probation_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReceiverStats(1, 0, probation=0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.lists(st.integers(-120, 3500), max_size=200))
def test_counters_stay_consistent(start: int, steps: list[int]) -> None:
    stats = ReceiverStats(1, start, probation=1)
    seq = start
    stats.update(seq, 0, 0.0, 1, RATE)
    for step in steps:
        seq = (seq + step) & 0xFFFF
        stats.update(seq, seq * 160, 0.0, 1, RATE)
    assert stats.lost >= 0
    assert stats.received <= stats.packets
    assert stats.received + stats.duplicates <= stats.packets
    fraction, cumulative = stats.interval_loss()
    assert 0 <= fraction <= 255 and 0 <= cumulative <= 0x7FFFFF


# -- NTP and RTT ----------------------------------------------------------------------


def test_ntp_helpers() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(1.5) == (2_208_988_801 << 32) | (1 << 31)
    assert ntp_to_unix(ntp_timestamp(1_700_000_000.25)) == pytest.approx(1_700_000_000.25)
    assert ntp_compact(0x0123456789ABCDEF) == 0x456789AB


def test_rtt_from_report_rfc3550_example() -> None:
    """RFC 3550 §6.4.1 figure 2: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
    (46853.125 s), DLSR = 0x0005:4000 (5.250 s) → RTT 6.125 s."""
    assert rtt_from_report(0xB7108000, 0xB7052000, 0x00054000) == pytest.approx(6.125)
    assert rtt_from_report(0xB7108000, 0, 0x00054000) is None
    assert rtt_from_report(0x00001000, 0x00002000, 0) is None  # negative


def test_rtt_from_report_across_compact_wrap() -> None:
    assert rtt_from_report(0x00008000, 0xFFFF8000, 0) == pytest.approx(1.0)


def test_rtt_tracker() -> None:
    tracker = RttTracker(history=2)
    sr1 = ntp_timestamp(1_700_000_000.0)
    sr2 = ntp_timestamp(1_700_000_005.0)
    tracker.sender_report_sent(sr1, now=50.0)
    tracker.sender_report_sent(sr2, now=55.0)
    # The peer held SR 2 for 0.25 s, its report reaches us at 55.31: RTT 60 ms.
    rtt = tracker.report_received(ntp_compact(sr2), 0x4000, now=55.31)
    assert rtt == pytest.approx(0.06)
    assert tracker.rtt == pytest.approx(0.06)
    assert tracker.report_received(0, 0, now=60.0) is None
    assert tracker.report_received(0xDEADBEEF, 0, now=60.0) is None
    assert tracker.report_received(ntp_compact(sr2), 0x40000, now=55.31) is None  # negative
    tracker.sender_report_sent(ntp_timestamp(1_700_000_010.0), now=60.0)
    assert tracker.report_received(ntp_compact(sr1), 0, now=61.0) is None  # forgotten


# -- E-model -------------------------------------------------------------------------


def test_emodel_known_points() -> None:
    assert r_factor("PCMA") == pytest.approx(93.2)
    assert estimate_mos("PCMU") == pytest.approx(4.41, abs=0.01)
    assert estimate_mos("PCMA", delay_ms=20) == pytest.approx(4.40, abs=0.01)
    five = estimate_mos("PCMA", loss_percent=5.0)
    assert 3.4 < five < 4.0
    # Ie,eff for 5 % random loss, G.711 with PLC: 95 * 5 / (5 + 25.1) = 15.78
    assert r_factor("PCMA", 5.0) == pytest.approx(93.2 - 95 * 5 / 30.1)
    assert estimate_mos("G729") < estimate_mos("PCMU")
    assert estimate_mos("G729") == pytest.approx(mos_from_r(82.2))
    # Beyond 177.3 ms the delay term steepens.
    assert r_factor("PCMU", delay_ms=300) == pytest.approx(93.2 - 0.024 * 300 - 0.11 * 122.7)
    assert estimate_mos("unknown-codec") == estimate_mos("PCMU")
    assert estimate_mos("PCMU", loss_percent=100, delay_ms=1000) == 1.0


def test_mos_from_r_bounds() -> None:
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(0) == 1.0
    assert mos_from_r(3) == 1.0  # the cubic dips below 1 here; clamped
    assert mos_from_r(100) == 4.5
    assert mos_from_r(120) == 4.5
    assert mos_from_r(50) == pytest.approx(1 + 1.75 + 50 * -10 * 50 * 7e-6)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["PCMU", "PCMA", "G722", "G729", "G723", "GSM-EFR"]),
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(0, 1000),
    st.floats(0, 1000),
)
def test_emodel_monotonic(
    codec: str, loss_a: float, loss_b: float, delay_a: float, delay_b: float
) -> None:
    low_loss, high_loss = sorted((loss_a, loss_b))
    low_delay, high_delay = sorted((delay_a, delay_b))
    best = estimate_mos(codec, low_loss, low_delay)
    assert 1.0 <= best <= 4.5
    eps = 1e-9  # float rounding: equal-in-effect inputs may differ in the last bit
    assert estimate_mos(codec, high_loss, low_delay) <= best + eps
    assert estimate_mos(codec, low_loss, high_delay) <= best + eps
    worst = estimate_mos(codec, high_loss, high_delay)
    assert worst <= estimate_mos(codec, high_loss, low_delay) + eps
