"""MBG's metrics (``/mslrest/mbg/v1/metrics/``) from the running gateway.

:class:`GatewayMetrics` is the :class:`limen.core.MetricsProvider` that replaces the
placeholder once ``limen serve`` runs: gauges read live (active calls, connections,
registrations), bandwidth and calls per hour computed from monotonic counters sampled
every ``interval`` seconds, and a bounded history of samples for
``/metrics/{start}/{end}/``. The sampling arithmetic is pure (:meth:`sample` takes the
time) so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limen.core import MetricsSample


@dataclass(frozen=True, slots=True)
class Readings:
    """Raw numbers at one instant: gauges as they are, counters since start."""

    active_calls: int
    active_connections: int
    registrations: int
    calls_started: int
    media_bytes: dict[str, int]  # received per leg ("set", "icp"), monotonic
    counters: dict[str, dict[str, int]]


Reader = Callable[[], Readings]


class GatewayMetrics:
    """Samples ``read()`` every ``interval`` seconds; keeps ``keep`` samples (24 h at 10 s)."""

    def __init__(
        self,
        read: Reader,
        *,
        calls: Callable[[], list[dict[str, Any]]] | None = None,
        interval: float = 10.0,
        keep: int = 8640,
    ) -> None:
        self.read = read
        self._calls = calls
        self.interval = interval
        self._history: deque[MetricsSample] = deque(maxlen=keep)
        # (time, calls_started) points of the last hour, for calls_per_hour.
        self._starts: deque[tuple[float, int]] = deque()
        self._last: tuple[float, dict[str, int]] | None = None
        self._rates: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- MetricsProvider ----------------------------------------------------------------------
    def current(self) -> MetricsSample:
        return self._build(time.time(), self.read(), update=False)

    def history(self, start: float, end: float) -> list[MetricsSample]:
        return [s for s in self._history if start <= s.timestamp <= end]

    def counters(self) -> dict[str, dict[str, int]]:
        return self.read().counters

    def calls(self) -> list[dict[str, Any]]:
        return self._calls() if self._calls is not None else []

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, now: float) -> MetricsSample:
        """Take one sample at ``now`` (epoch seconds): updates rates and history."""
        sample = self._build(now, self.read(), update=True)
        self._history.append(sample)
        return sample

    def _build(self, now: float, r: Readings, *, update: bool) -> MetricsSample:
        if update:
            if self._last is not None:
                then, before = self._last
                elapsed = now - then
                if elapsed > 0:
                    # kbit/s per leg, from the growth of the monotonic byte counters.
                    self._rates = {
                        leg: int(
                            (r.media_bytes.get(leg, 0) - before.get(leg, 0)) * 8 / elapsed / 1000
                        )
                        for leg in r.media_bytes
                    }
            self._last = (now, dict(r.media_bytes))
            self._starts.append((now, r.calls_started))
            # Keep the newest point at least an hour old as the baseline of the window.
            while len(self._starts) > 1 and self._starts[1][0] <= now - 3600:
                self._starts.popleft()
        oldest = self._starts[0][1] if self._starts else r.calls_started
        set_in = self._rates.get("set", 0)
        icp_in = self._rates.get("icp", 0)
        return MetricsSample(
            timestamp=now,
            active_calls=r.active_calls,
            active_connections=r.active_connections,
            registrations=r.registrations,
            # What one side receives, the relay sends to the other.
            bandwidth_set_in=set_in,
            bandwidth_set_out=icp_in,
            bandwidth_icp_in=icp_in,
            bandwidth_icp_out=set_in,
            calls_per_hour=max(0, r.calls_started - oldest),
        )

    def start(self) -> None:
        async def run() -> None:
            while True:
                self.sample(time.time())
                await asyncio.sleep(self.interval)

        self._task = asyncio.create_task(run(), name="limen-metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
