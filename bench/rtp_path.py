"""Packet-path micro-benchmark for limen.rtp: what one core does per packet, without I/O.

Run: ``.venv/bin/python bench/rtp_path.py`` (``--packets N``, ``--repeat R``). The process
pins itself to one CPU where the OS allows. For each stage it prints packets per second and
microseconds per packet, best of R runs over N distinct packets:

- demux (RFC 7983 first byte + RFC 5761 RTP/RTCP split) and RTP header parse, the fast
  ``parse_rtp_fields`` and the full ``RtpPacket.parse``;
- SRTP unprotect, protect, and unprotect+protect (the SRTP⇄SRTP bridge with independent
  keys) of a 172-byte G.711 packet (20 ms) with AES_CM_128_HMAC_SHA1_80, through
  ``SrtpContext`` (cffi fast path and public-API path) and through a bare
  ``pylibsrtp.Session`` as the anchor; AEAD_AES_128_GCM for comparison;
- ``ReceiverStats.update`` (RFC 3550 A.1/A.3/A.8);
- the whole receive pipeline of an SRTP→RTP leg (demux, unprotect, parse, stats) and of
  an SRTP→SRTP leg (the same plus protect);
- the cost of a refused packet (authentication failure raised and caught).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import struct
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version

from pylibsrtp import Policy, Session

from limen.rtp import (
    PacketKind,
    ReceiverStats,
    RtpPacket,
    SrtpAuthError,
    SrtpContext,
    classify,
    demux,
    is_rtcp,
    parse_rtp_fields,
)

SUITE = "AES_CM_128_HMAC_SHA1_80"
KEY = bytes(range(30))
KEY_OTHER = bytes(range(30, 60))
GCM = "AEAD_AES_128_GCM"
GCM_KEY = bytes(range(28))


def g711(seq: int) -> bytes:
    """12-byte header + 160 bytes of A-law: 172 bytes."""
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, 0x5EADBEEF) + (
        b"\xd5" * 160
    )


def measure(name: str, packets: int, repeat: int, make: Callable[[], Callable[[], None]]) -> None:
    """Best of ``repeat`` runs; ``make`` builds fresh state and returns the loop to time."""
    best = float("inf")
    for _ in range(repeat):
        run = make()
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        gc.enable()
        best = min(best, elapsed)
    rate = packets / best
    print(f"  {name:<58} {rate:>12,.0f} pkt/s {1e6 / rate:>8.2f} µs/pkt")


def parse_stages(plain: Sequence[bytes], packets: int, repeat: int) -> None:
    def demux_loop() -> Callable[[], None]:
        def run() -> None:
            for data in plain:
                if classify(data[0]) is PacketKind.RTP_RTCP:
                    is_rtcp(data)

        return run

    def fields_loop() -> Callable[[], None]:
        def run() -> None:
            for data in plain:
                parse_rtp_fields(data)

        return run

    def full_loop() -> Callable[[], None]:
        def run() -> None:
            for data in plain:
                RtpPacket.parse(data)

        return run

    def stats_loop() -> Callable[[], None]:
        stats = ReceiverStats(0x5EADBEEF, 0)
        update = stats.update

        def run() -> None:
            now = 0.0
            for seq in range(packets):
                update(seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, now, 172, 8000)
                now += 0.02

        return run

    print("parsing and statistics")
    measure("demux: classify(first byte) + is_rtcp", packets, repeat, demux_loop)
    measure("RTP header: parse_rtp_fields (fast path)", packets, repeat, fields_loop)
    measure("RTP packet: RtpPacket.parse (full, copies payload)", packets, repeat, full_loop)
    measure("ReceiverStats.update (A.1 seq + A.8 jitter)", packets, repeat, stats_loop)


def srtp_stages(plain: Sequence[bytes], packets: int, repeat: int) -> None:
    sender = SrtpContext.outbound(SUITE, KEY)
    protected = [sender.protect(data) for data in plain]
    gcm_sender = SrtpContext.outbound(GCM, GCM_KEY)
    gcm_protected = [gcm_sender.protect(data) for data in plain]

    def context_unprotect(fast: bool) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            unprotect = SrtpContext.inbound(SUITE, KEY, fast=fast).unprotect

            def run() -> None:
                for data in protected:
                    unprotect(data)

            return run

        return make

    def context_protect(fast: bool) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            protect = SrtpContext.outbound(SUITE, KEY, fast=fast).protect

            def run() -> None:
                for data in plain:
                    protect(data)

            return run

        return make

    def context_bridge(
        suite: str, key: bytes, packets_in: Sequence[bytes], fast: bool = True
    ) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            unprotect = SrtpContext.inbound(suite, key, fast=fast).unprotect
            protect = SrtpContext.outbound(
                suite, KEY_OTHER if suite == SUITE else key[::-1]
            ).protect

            def run() -> None:
                for data in packets_in:
                    protect(unprotect(data))

            return run

        return make

    def session_bridge() -> Callable[[], None]:
        rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
        tx = Session(Policy(key=KEY_OTHER, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        unprotect, protect = rx.unprotect, tx.protect

        def run() -> None:
            for data in protected:
                protect(unprotect(data))

        return run

    print(f"SRTP, 172-byte G.711 packet, {SUITE} unless noted")
    measure("unprotect (SrtpContext, fast path)", packets, repeat, context_unprotect(True))
    measure("protect (SrtpContext, fast path)", packets, repeat, context_protect(True))
    measure(
        "unprotect + protect (SrtpContext, fast path)",
        packets,
        repeat,
        context_bridge(SUITE, KEY, protected),
    )
    measure(
        "unprotect + protect (SrtpContext, public pylibsrtp API)",
        packets,
        repeat,
        context_bridge(SUITE, KEY, protected, fast=False),
    )
    measure("unprotect + protect (bare pylibsrtp.Session, anchor)", packets, repeat, session_bridge)
    measure(
        "unprotect + protect (SrtpContext, AEAD_AES_128_GCM)",
        packets,
        repeat,
        context_bridge(GCM, GCM_KEY, gcm_protected),
    )

    def pipeline(bridge_srtp: bool) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            unprotect = SrtpContext.inbound(SUITE, KEY).unprotect
            protect = SrtpContext.outbound(SUITE, KEY_OTHER).protect
            stats = ReceiverStats(0x5EADBEEF, 0)
            update = stats.update
            rates = {8: 8000}

            def run() -> None:
                now = 0.0
                for data in protected:
                    if demux(data) is not PacketKind.RTP:
                        continue
                    try:
                        rtp = unprotect(data)
                    except SrtpAuthError:
                        continue
                    pt, _marker, seq, ts, _ssrc, _offset = parse_rtp_fields(rtp)
                    update(seq, ts, now, len(data), rates.get(pt, 0))
                    if bridge_srtp:
                        rtp = protect(rtp)
                    now += 0.02

            return run

        return make

    print("receive pipeline per packet (demux, unprotect, parse, stats [, protect])")
    measure("SRTP -> RTP leg", packets, repeat, pipeline(False))
    measure("SRTP -> SRTP leg (independent keys)", packets, repeat, pipeline(True))

    bad = bytearray(protected[0])
    bad[-1] ^= 1
    forged = [
        bytes(bad[:2]) + struct.pack("!H", i & 0xFFFF) + bytes(bad[4:])
        for i in range(1, packets + 1)
    ]

    def refused() -> Callable[[], None]:
        unprotect = SrtpContext.inbound(SUITE, KEY).unprotect

        def run() -> None:
            refused = 0
            for data in forged:
                try:
                    unprotect(data)
                except SrtpAuthError:
                    refused += 1  # the relay counts and drops
            assert refused == len(forged)

        return run

    print("refused packets")
    measure("forged packet -> SrtpAuthError raised and caught", packets, repeat, refused)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(
        f"limen.rtp packet path: Python {platform.python_version()} ({sys.implementation.name}),"
        f" pylibsrtp {version('pylibsrtp')}, {platform.machine()},"
        f" one core, {args.packets:,} packets, best of {args.repeat}"
    )
    plain = [g711(seq) for seq in range(args.packets)]
    parse_stages(plain, args.packets, args.repeat)
    srtp_stages(plain, args.packets, args.repeat)


if __name__ == "__main__":
    main()
