"""Deadlines of the gateway's own state, on the stack's one clock (sans-IO).

Timer C, 2xx retransmission, linger, upstream registration refresh, the registrar's
flush, keepalive pings: each is a deadline kept here, not a handle on the event loop.
:class:`~limen.gateway.stack.SipStack` arms a single ``loop.call_at`` for the earlier of
this scheduler's :meth:`Timers.next_deadline` and the transaction layer's, and calls
:meth:`Timers.handle_timers` when it fires (after aioquic's ``get_timer`` /
``handle_timer`` pair). Tests drive the same code on a manual clock: set the time,
call ``handle_timers(now)``, and see exactly what fired.

The heap holds ``(when, seq, handle)``; a cancelled handle stays in it until it reaches
the top (lazy deletion: cancelling is O(1)), unless cancelled handles come to outnumber
the live ones: then the heap is rebuilt without them, so a Timer C of minutes that every
answered call cancels does not keep one dead entry per call for minutes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger("limen.gateway.timers")


class TimerHandle:
    """One scheduled callback; :meth:`cancel` it to drop it."""

    __slots__ = ("_owner", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object], owner: Timers) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            # The heap keeps the handle until it is popped or compacted: let go of the
            # callback now, so a cancelled timer does not keep its call alive.
            self.callback = _spent
            self._owner._dropped()

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<TimerHandle at {self.when:.3f}{state}>"


def _spent() -> None:
    """The callback of a cancelled handle (never run)."""


class Timers:
    """A deadline scheduler on ``clock`` (seconds, monotonic)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cancelled = 0  # cancelled handles still in the heap
        self.failures = 0  # callbacks that raised (logged, contained)

    def at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` once the clock reaches ``when``."""
        handle = TimerHandle(when, callback, self)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` ``delay`` seconds from now."""
        return self.at(self.clock() + delay, callback)

    def next_deadline(self) -> float | None:
        """The earliest live deadline (None: nothing scheduled)."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def handle_timers(self, now: float) -> int:
        """Run every callback due at ``now``, earliest first (one scheduled while running
        and already due runs too). A callback that raises is logged and contained.
        Returns how many ran."""
        ran = 0
        # self._heap each time round: a callback's cancel() may rebuild it.
        while self._heap and self._heap[0][0] <= now:
            handle = heapq.heappop(self._heap)[2]
            if handle.cancelled:
                self._cancelled -= 1
                continue
            handle.cancelled = True  # spent: a late cancel() is harmless (not counted)
            ran += 1
            try:
                handle.callback()
            except Exception:
                self.failures += 1
                log.exception("gateway timer failed")
        return ran

    def clear(self) -> None:
        for _, _, handle in self._heap:
            handle.cancelled = True
        self._heap.clear()
        self._cancelled = 0

    def _dropped(self) -> None:
        self._cancelled += 1
        if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def __len__(self) -> int:
        """Scheduled handles, cancelled ones not yet dropped included."""
        return len(self._heap)


__all__ = ["TimerHandle", "Timers"]
