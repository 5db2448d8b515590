"""What a stopped media worker costs the SIP process: event-loop lag and call-setup time
while one of two workers is SIGSTOPped (issue 13).

Run: ``.venv/bin/python bench/media_stall.py [--calls 200] [--seconds 6]``.

Two workers (:class:`limen.media.workers.WorkerPoolEngine`, SRTP phone leg, plain PBX leg,
127.0.0.1). ``--calls`` calls are set up first (spread over both workers). Then worker 0
is SIGSTOPped, and for ``--seconds`` the loop sets up (offer + answer) and deletes a new
call every 10 ms, while a probe measures how late a 5 ms sleep wakes up. Printed: loop lag
p50/p99/max, setup time p50/p99/max, setups refused, and when the stopped worker's calls
were reported ended. The same script runs against an older tree (``PYTHONPATH``): what
its engine's constructor does not take is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_support import crypto_line, free_udp_port, new_key, sdp

from limen.media import LegPolicy, LegSpec, Security
from limen.media.workers import WorkerPoolEngine

try:
    from limen.media import MediaRefused as Refusal
except ImportError:  # an older tree
    from limen.media import MediaError as Refusal  # type: ignore[attr-defined,no-redef]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(calls: int, seconds: float) -> dict[str, Any]:
    low = 40000 + 2 * (os.getpid() % 2000)
    options: dict[str, Any] = {"port_min": low, "port_max": low + 4 * calls + 2000, "workers": 2}
    accepted = inspect.signature(WorkerPoolEngine).parameters
    for name, value in (("stats_interval", 1.0), ("stall_timeout", 3.0)):
        if name in accepted:
            options[name] = value
    phone_leg = LegSpec("set", "127.0.0.1", "127.0.0.1", latch=True)
    pbx_leg = LegSpec("icp", "127.0.0.1", "127.0.0.1", policy=LegPolicy(Security.OFF))
    engine = WorkerPoolEngine([phone_leg, pbx_leg], **options)
    ended: list[float] = []
    engine.on_timeout = lambda *_: ended.append(time.monotonic())
    await engine.start()
    phone, pbx = free_udp_port(), free_udp_port()

    def setup(call_id: str) -> None:
        engine.offer(call_id, "set", sdp(phone, crypto=[crypto_line(new_key())]))
        engine.answer(call_id, "icp", sdp(pbx, user="pbx"))

    for i in range(calls):
        setup(f"held-{i}")
    victims = sum(1 for i in range(calls) if engine.worker_of(f"held-{i}") == 0)
    lags: list[float] = []
    setups: list[float] = []
    refused = 0
    stop = time.monotonic() + seconds

    async def probe() -> None:
        while time.monotonic() < stop:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    pid = engine.workers[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    prober = asyncio.create_task(probe())
    try:
        n = 0
        while time.monotonic() < stop:
            n += 1
            began = time.perf_counter()
            try:
                setup(f"new-{n}")
            except Refusal:
                refused += 1
            setups.append(time.perf_counter() - began)
            engine.delete(f"new-{n}")
            await asyncio.sleep(0.01)
        await prober
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await engine.close()
    return {
        "calls": calls,
        "on_stopped_worker": victims,
        "lag_ms": [round(1000 * pct(lags, q), 2) for q in (0.5, 0.99)]
        + [round(1000 * max(lags), 2)],
        "setup_ms": [round(1000 * pct(setups, q), 3) for q in (0.5, 0.99)]
        + [round(1000 * max(setups), 2)],
        "setup_mean_ms": round(1000 * statistics.fmean(setups), 3),
        "setups": len(setups),
        "refused": refused,
        "ended": len(ended),
        "ended_after_s": round(ended[0] - stopped_at, 2) if ended else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    result = uvloop.run(run(args.calls, args.seconds))
    print(
        f"{result['calls']} calls ({result['on_stopped_worker']} on the stopped worker); "
        f"loop lag p50/p99/max {result['lag_ms']} ms; setup p50/p99/max {result['setup_ms']} ms "
        f"(mean {result['setup_mean_ms']}), {result['setups']} setups, {result['refused']} "
        f"refused; {result['ended']} calls reported ended, first after "
        f"{result['ended_after_s']} s"
    )


if __name__ == "__main__":
    main()
