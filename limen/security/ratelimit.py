"""Per-source message rate limits, in the manner of Kamailio's ``pike`` module (sans-IO).

Each source address may send ``limit`` messages per ``window`` seconds. The count runs
in fixed windows (the current one and nothing else: a new window starts from zero), which
costs one dict operation per message and forgets every source at each window's end, so an
attack with many sources holds memory for one window at most, capped at ``max_sources``
(beyond that, new sources are not counted until the next window: a flood that large is a
job for the network in front of Limen). :meth:`RateLimiter.hit` says when a source has
just gone over the limit; the caller bans it (:meth:`limen.security.bans.BanList.flood`).
"""

from __future__ import annotations


class RateLimiter:
    def __init__(self, limit: int, window: float, *, max_sources: int = 200_000) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_sources = max_sources
        self._counts: dict[str, int] = {}
        self._window_end = 0.0

    def hit(self, address: str, now: float) -> bool:
        """Count one message from ``address``; True exactly when it goes over the limit."""
        if now >= self._window_end:
            self._counts = {}
            self._window_end = now + self.window
        counts = self._counts
        count = counts.get(address)
        if count is None:
            if len(counts) < self.max_sources:
                counts[address] = 1
            return False
        count += 1
        counts[address] = count
        return count == self.limit + 1

    @property
    def tracked_sources(self) -> int:
        return len(self._counts)
