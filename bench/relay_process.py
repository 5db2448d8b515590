"""Hosts one media engine on uvloop for bench/media.py, controlled by JSON lines on
stdin/stdout (run pinned to one core by the bench; not a product entry point): a
:class:`limen.media.MediaRelay`, or with ``--workers N`` a
:class:`limen.media.workers.WorkerPoolEngine` whose N worker processes inherit the pinning.

Legs: ``set`` (phones: SRTP required, latching) and ``icp`` (PBX: plain RTP, fixed).
Requests → replies:

- ``{"op": "setup", "calls": [[call_id, phone_offer_sdp], ...], "pbx": [pbx_answer_sdp, ...]}``
  → ``{"calls": [[sdp_toward_pbx, sdp_toward_phone], ...], "pids": [worker pids]}`` (once
  the workers have bound the ports)
- ``{"op": "clear"}`` → ``{"deleted": n, "dropped": {...}}`` (all calls deleted, ports freed)
- ``{"op": "quit"}`` → exits (with ``--profile FILE``: cProfile stats written there)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import sys
from typing import Any

import uvloop

from limen.media import LegPolicy, LegSpec, MediaRelay, Security

Engine = Any  # MediaRelay | WorkerPoolEngine (an older tree's pool has no settled())


async def handle(relay: Engine, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "setup":
        out = []
        for (call_id, offer), answer in zip(request["calls"], request["pbx"], strict=True):
            toward_pbx = relay.offer(call_id, "set", offer.encode())
            toward_phone = relay.answer(call_id, "icp", answer.encode())
            out.append([toward_pbx.decode(), toward_phone.decode()])
        if hasattr(relay, "settled"):
            await relay.settled(timeout=60.0)
        gc.collect()
        gc.freeze()  # the long-lived call objects: no need to scan them again
        workers = getattr(relay, "workers", [])
        return {"calls": out, "pids": [w.pid for w in workers if w.pid is not None]}
    if op == "clear":
        dropped: dict[str, int] = {}
        calls = list(relay.calls)
        for call_id in calls:
            stats = relay.delete(call_id) or {}
            for leg in stats.get("legs", {}).values():
                for stream in leg["streams"]:
                    for reason, count in stream["dropped"].items():
                        dropped[reason] = dropped.get(reason, 0) + count
        gc.unfreeze()
        return {"deleted": len(calls), "dropped": dropped}
    raise ValueError(f"unknown op {op!r}")


async def serve(port_min: int, port_max: int, workers: int) -> None:
    legs = [
        LegSpec("set", "127.0.0.1", "127.0.0.1", latch=True, policy=LegPolicy(Security.REQUIRE)),
        LegSpec("icp", "127.0.0.1", "127.0.0.1", latch=False, policy=LegPolicy(Security.OFF)),
    ]
    relay: Engine
    if workers:
        from limen.media.workers import WorkerPoolEngine

        relay = WorkerPoolEngine(
            legs,
            port_min=port_min,
            port_max=port_max,
            workers=workers,
            media_timeout=3600.0,
            pin=False,  # the workers inherit this process's core
        )
    else:
        relay = MediaRelay(legs, port_min=port_min, port_max=port_max, media_timeout=3600.0)
    await relay.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "quit":
                break
            try:
                reply = await handle(relay, request)
            except Exception as exc:  # reported to the bench, which stops
                reply = {"error": repr(exc)}
            if request["op"] == "clear":
                for _ in range(500):  # until the sockets are really closed
                    if not relay.totals()["ports_in_use"]:
                        break
                    await asyncio.sleep(0.01)
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        await relay.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-min", type=int, default=20000)
    parser.add_argument("--port-max", type=int, default=30999)
    parser.add_argument("--workers", type=int, default=0, help="the relay in N processes")
    parser.add_argument("--profile", help="write cProfile stats of the whole run here")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    try:
        uvloop.run(serve(args.port_min, args.port_max, args.workers))
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
