"""Per-source limits of the provisioning port (sans-IO: the caller passes ``now``).

- :class:`RateLimiter`: a token bucket per source address (``burst`` requests, refilled
  at ``rate`` per second); an empty bucket means 429.
- :class:`GuessGuard`: counts strikes (requests for unknown hashes, malformed paths) per
  source within a sliding ``window``; ``limit`` strikes block the source for ``block``
  seconds (403 to everything it sends, valid hashes included, so a guesser learns
  nothing from the answers during the block).

Both tables are bounded (``max_sources``): when full, idle entries go first, then the
oldest, so a flood of spoofed sources cannot grow memory without limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.stamp = now

    def allow(self, source: str, now: float) -> bool:
        """Take one token for ``source``; False when its bucket is empty."""
        bucket = self._buckets.get(source)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[source] = _Bucket(float(self.burst), now)
        self._refill(bucket, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def retry_after(self, source: str, now: float) -> float:
        """Seconds until ``source`` has a token again."""
        bucket = self._buckets.get(source)
        if bucket is None:
            return 0.0
        self._refill(bucket, now)
        return max(0.0, (1.0 - bucket.tokens) / self.rate)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_sources:
            return
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) >= self.max_sources:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(slots=True)
class _Strikes:
    times: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class GuessGuard:
    def __init__(self, limit: int, window: float, block: float, max_sources: int = 65536) -> None:
        self.limit = limit
        self.window = window
        self.block = block
        self.max_sources = max_sources
        self._table: dict[str, _Strikes] = {}

    def blocked(self, source: str, now: float) -> float | None:
        """Seconds of block left for ``source``, or None when it is not blocked."""
        entry = self._table.get(source)
        if entry is None or entry.blocked_until <= now:
            return None
        return entry.blocked_until - now

    def strike(self, source: str, now: float) -> bool:
        """Count one strike; True when it makes ``source`` blocked (from now on)."""
        entry = self._table.get(source)
        if entry is None:
            self._make_room(now)
            entry = self._table[source] = _Strikes()
        while entry.times and entry.times[0] <= now - self.window:
            entry.times.popleft()
        entry.times.append(now)
        if len(entry.times) >= self.limit and entry.blocked_until <= now:
            entry.blocked_until = now + self.block
            entry.times.clear()
            return True
        return False

    def _make_room(self, now: float) -> None:
        if len(self._table) < self.max_sources:
            return
        idle = [
            k
            for k, e in self._table.items()
            if e.blocked_until <= now and (not e.times or e.times[-1] <= now - self.window)
        ]
        for key in idle:
            del self._table[key]
        while len(self._table) >= self.max_sources:
            del self._table[next(iter(self._table))]

    def __len__(self) -> int:
        return len(self._table)
