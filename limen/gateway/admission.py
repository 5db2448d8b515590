"""Call admission control (MBG feature row 29; issue 10): how many calls may start.

Per device: at most ``max_calls_per_device`` calls in progress and
``max_call_attempts_per_minute`` call attempts per rolling minute (a device's own values,
else the global options). Per ICP and in total: at most ``max_calls_per_icp`` /
``max_calls`` calls in progress, and at most ``max_media_kbps`` of relayed media in total
(measured by the relay). 0 means no limit. A refused call gets 503 with Retry-After
(RFC 3261 §21.5.4: the server is temporarily overloaded for this caller), before any
state is created for it.

This is what stops one stolen credential from taking every media port: with the defaults
a device holds at most 4 calls and starts at most 20 per minute.

Sans-IO: time is an argument; the caller counts calls in when they start and out when
they end (:meth:`CallAdmission.release`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    per_device: int = 4
    attempts_per_minute: int = 20
    per_icp: int = 0
    total: int = 0
    media_kbps: int = 0


class CallAdmission:
    def __init__(self, media_kbps: Callable[[], float] | None = None) -> None:
        self.media_kbps = media_kbps
        self._by_device: dict[str, int] = {}
        self._by_icp: dict[str, int] = {}
        self._attempts: dict[str, deque[float]] = {}
        self.total = 0
        self.refused: dict[str, int] = {}

    def admit(self, device: str, icp: str, now: float, limits: Limits) -> str | None:
        """None when the call may start (it is then counted in), else the refusal reason."""
        reason = self._check(device, icp, now, limits)
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
            return reason
        self._by_device[device] = self._by_device.get(device, 0) + 1
        self._by_icp[icp] = self._by_icp.get(icp, 0) + 1
        self.total += 1
        return None

    def release(self, device: str, icp: str) -> None:
        for table, key in ((self._by_device, device), (self._by_icp, icp)):
            left = table.get(key, 0) - 1
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)
        self.total = max(0, self.total - 1)

    def calls_of(self, device: str) -> int:
        return self._by_device.get(device, 0)

    def _check(self, device: str, icp: str, now: float, limits: Limits) -> str | None:
        if limits.attempts_per_minute:
            attempts = self._attempts.get(device)
            if attempts is None:
                attempts = self._attempts[device] = deque()
            while attempts and attempts[0] <= now - 60.0:
                attempts.popleft()
            if len(attempts) >= limits.attempts_per_minute:
                return "device call rate"
            attempts.append(now)
        if limits.per_device and self._by_device.get(device, 0) >= limits.per_device:
            return "device calls"
        if limits.per_icp and self._by_icp.get(icp, 0) >= limits.per_icp:
            return "ICP calls"
        if limits.total and self.total >= limits.total:
            return "total calls"
        measured = self.media_kbps
        if limits.media_kbps and measured is not None and measured() >= limits.media_kbps:
            return "media bandwidth"
        return None

    def forget_idle(self, now: float) -> None:
        """Drop attempt histories older than a minute (bounded memory; call now and then)."""
        for device in [d for d, a in self._attempts.items() if not a or a[-1] <= now - 60.0]:
            del self._attempts[device]
