"""Media relay throughput: Limen (in-process relay, uvloop) against rtpengine (userspace,
``--table=-1``) in the same run, on loopback.

Run: ``.venv/bin/python bench/media_relay.py`` (``--streams N``, ``--packets M``). For each
engine and mode (plain RTP→RTP, SRTP→RTP with AES_CM_128_HMAC_SHA1_80), N G.711 calls are
set up (Limen through ``MediaRelay.offer/answer``, rtpengine through ng), then one process
blasts M pre-built 20 ms G.711 packets round-robin over the N calls as fast as it can and
another counts what the relay forwards. Printed: packets/s relayed (received / time from
first to last received), loss, and the Limen/rtpengine ratio. Each process is a separate
OS process, so the generator and the counter do not share the relay's core (the relay is
single-threaded; rtpengine gets ``--num-threads=1``). This measures saturation throughput,
not the paced 50 packets/s per call of the issue's full benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "media"))

from media_support import (
    NgClient,
    bencode,
    crypto_line,
    g711,
    media_of,
    new_key,
    sdp,
    srtp_tx,
)

from limen.media import LegPolicy, LegSpec, MediaRelay, Security

MODES = ("plain", "srtp")


def receiver(port_queue: Any, result_queue: Any) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    port_queue.put(sock.getsockname()[1])
    sock.settimeout(10)
    count = 0
    first = last = 0.0
    try:
        sock.recv(2048)
        first = last = time.perf_counter()
        count = 1
        sock.settimeout(0.5)
        while True:
            sock.recv(2048)
            count += 1
            last = time.perf_counter()
    except TimeoutError:
        pass
    result_queue.put((count, max(last - first, 1e-9)))


def limen_relay(calls: list[tuple[bytes]], mode: str, reply: Any, ready: Any) -> None:
    import uvloop

    async def main() -> None:
        security = Security.REQUIRE if mode == "srtp" else Security.OFF
        relay = MediaRelay(
            [
                LegSpec("set", "127.0.0.1", "127.0.0.1", latch=True, policy=LegPolicy(security)),
                LegSpec("icp", "127.0.0.1", "127.0.0.1", policy=LegPolicy(Security.OFF)),
            ],
            port_min=36000,
            port_max=39999,
            media_timeout=600,
        )
        await relay.start()
        ports = []
        for index, (offer, answer) in enumerate(calls):
            relay.offer(f"c{index}", "set", offer)
            out = relay.answer(f"c{index}", "icp", answer)
            ports.append(media_of(out).port)
        reply.put(ports)
        await asyncio.get_running_loop().run_in_executor(None, ready.wait)
        await relay.close()

    uvloop.run(main())


def blast(packets: list[tuple[bytes, int]]) -> float:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    start = time.perf_counter()
    send = sock.sendto
    for data, port in packets:
        send(data, ("127.0.0.1", port))
    return time.perf_counter() - start


def build_calls(streams: int, mode: str, recv_port: int) -> tuple[list[Any], list[Any]]:
    offers, keys = [], []
    for index in range(streams):
        key = new_key()
        keys.append(key)
        crypto = [crypto_line(key)] if mode == "srtp" else None
        offers.append((sdp(30000 + 2 * index, crypto=crypto, codecs="8"), sdp(recv_port)))
    return offers, keys


def packets_for(ports: list[int], keys: list[bytes], mode: str, total: int) -> list[Any]:
    senders = [srtp_tx(k) for k in keys] if mode == "srtp" else None
    out = []
    for n in range(total):
        index = n % len(ports)
        packet = g711(n // len(ports), ssrc=index + 1)
        if senders is not None:
            packet = senders[index].protect(packet)
        out.append((packet, ports[index]))
    return out


def run_case(
    engine: str, mode: str, streams: int, total: int, rtpengine: Any
) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    port_q, result_q = ctx.Queue(), ctx.Queue()
    recv = ctx.Process(target=receiver, args=(port_q, result_q))
    recv.start()
    recv_port = port_q.get()
    calls, keys = build_calls(streams, mode, recv_port)
    proc = None
    ready = ctx.Event()
    if engine == "limen":
        reply = ctx.Queue()
        proc = ctx.Process(target=limen_relay, args=(calls, mode, reply, ready))
        proc.start()
        ports = reply.get()
    else:
        ng = rtpengine
        ports = []
        for index, (offer, answer) in enumerate(calls):
            cid = f"bench-{mode}-{streams}-{index}-{os.getpid()}"
            r = ng(
                {
                    "command": "offer",
                    "call-id": cid,
                    "from-tag": "a",
                    "sdp": offer,
                    "transport-protocol": "RTP/AVP",
                    "ICE": "remove",
                }
            )
            r = ng(
                {"command": "answer", "call-id": cid, "from-tag": "a", "to-tag": "b", "sdp": answer}
            )
            ports.append(media_of(r["sdp"]).port)
    packets = packets_for(ports, keys, mode, total)
    time.sleep(0.2)
    blast(packets)
    count, elapsed = result_q.get()
    recv.join()
    ready.set()
    if proc is not None:
        proc.join(10)
    return count / elapsed, 100.0 * (total - count) / total


def start_rtpengine() -> tuple[Any, NgClient]:
    import random
    import subprocess

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        ng_port = s.getsockname()[1]
    low = random.randrange(40000, 50000, 2)
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as rtpengine
        prefix="rtpengine-bench-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        [
            "rtpengine",
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{ng_port}",
            f"--port-min={low}",
            f"--port-max={low + 3999}",
            "--foreground",
            "--log-stderr",
            "--log-level=4",
            "--num-threads=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    ng = NgClient(ng_port)
    ng.sock.settimeout(0.3)
    for _ in range(50):
        try:
            if ng({"command": "ping"}).get("result") == b"pong":
                break
        except OSError:
            time.sleep(0.1)
    ng.sock.settimeout(3)
    return process, ng


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--packets", type=int, default=200_000)
    args = parser.parse_args()
    assert bencode({"a": 1}) == b"d1:ai1ee"
    process, ng = start_rtpengine()
    print(
        f"{'streams':>8} {'mode':>6} {'limen pkt/s':>12} {'loss%':>6} "
        f"{'rtpengine pkt/s':>16} {'loss%':>6} {'ratio':>6}"
    )
    try:
        for streams in args.streams:
            for mode in MODES:
                limen, limen_loss = run_case("limen", mode, streams, args.packets, ng)
                rtpe, rtpe_loss = run_case("rtpengine", mode, streams, args.packets, ng)
                print(
                    f"{streams:>8} {mode:>6} {limen:>12,.0f} {limen_loss:>6.1f} "
                    f"{rtpe:>16,.0f} {rtpe_loss:>6.1f} {limen / rtpe:>6.2f}",
                    flush=True,
                )
    finally:
        ng.close()
        process.terminate()
        process.wait(5)


if __name__ == "__main__":
    main()
