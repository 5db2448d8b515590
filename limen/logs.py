"""Log output that an attacker cannot inflate (issue 10): at most ``rate`` lines per second
of each *kind* (logger and message template), with a burst allowance; what is held back
is counted and reported with the next line of that kind that goes through. Ban lines are
never held back (fail2ban must see every one)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitFilter(logging.Filter):
    def __init__(
        self, rate: float = 10.0, burst: float = 20.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[tuple[str, object], tuple[float, float, int]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or (
            record.name == "limen.security" and str(record.msg).startswith(("%s", "BAN", "UNBAN"))
        ):
            return True
        key = (record.name, record.msg)
        now = self.clock()
        tokens, last, held = self._buckets.get(key, (self.burst, now, 0))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now, held + 1)
            self.suppressed += 1
            return False
        if held:
            record.msg = f"{record.msg} [{held} similar lines suppressed]"
        if len(self._buckets) > 10_000:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1.0, now, 0)
        return True


def install(rate: float) -> RateLimitFilter:
    """Put the filter on every handler of the root logger."""
    limiter = RateLimitFilter(rate, burst=2 * rate)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limiter)
    return limiter
