"""The media port pool: even RTP / odd RTCP pairs over a configured range (RFC 3550 §11).

Sans-IO: the pool hands out port numbers; the relay binds them. A pair whose bind fails
(some other program holds it) goes back to the end of the queue and the relay tries the
next one, so the pool never has to know what the kernel knows. Released pairs also go to
the end: a port is reused as late as possible, so stray packets of an ended call do not
land in a new one.

:meth:`PortPool.split` cuts the range into slices for worker processes (each worker owns
its slice; the control side routes a call to one worker).
"""

from __future__ import annotations

from collections import deque


class PortPool:
    """Even/odd port pairs in ``[port_min, port_max]`` (both inclusive)."""

    __slots__ = ("_free", "_used", "port_max", "port_min")

    def __init__(self, port_min: int, port_max: int) -> None:
        if not 1 <= port_min <= port_max <= 65535:
            raise ValueError(f"bad port range {port_min}-{port_max}")
        first = port_min + (port_min & 1)
        self.port_min = port_min
        self.port_max = port_max
        self._free: deque[int] = deque(range(first, port_max, 2))  # port + 1 <= port_max
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def take(self) -> int | None:
        """The RTP port of a free pair (RTCP is that + 1), or None when exhausted."""
        if not self._free:
            return None
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back (at the end of the queue). Releasing twice is an error."""
        if port not in self._used:
            raise ValueError(f"port {port} is not in use")
        self._used.remove(port)
        self._free.append(port)

    def split(self, parts: int) -> list[PortPool]:
        """``parts`` disjoint pools covering this range (for worker processes)."""
        if parts < 1:
            raise ValueError("parts must be at least 1")
        pairs = (self.port_max - self.port_min + 1) // 2
        if pairs < parts:
            raise ValueError("fewer port pairs than parts")
        first = self.port_min + (self.port_min & 1)
        size = pairs // parts
        pools = []
        for index in range(parts):
            low = first + 2 * size * index
            high = self.port_max if index == parts - 1 else low + 2 * size - 1
            pools.append(PortPool(low, high))
        return pools
