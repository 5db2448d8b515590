"""The control surface of the media layer (DESIGN.md; rtpengine's ng commands).

One protocol, implemented completely by both engines:

- :class:`limen.media.relay.MediaRelay`: the relay in the SIP process (``[media]
  workers = 0``);
- :class:`limen.media.workers.WorkerPoolEngine`: the control plane in the SIP process and
  the packet path in worker processes (``[media] workers = N``).

Every method is synchronous and returns at once: the SDP rewrite, port allocation, SDES
keys and the offer/answer state are decided where the method runs, never by waiting on
another process (the worker pool sends the data-plane part to its workers one way; see
its module). Leg names are plain strings (the gateway uses ``"set"`` and ``"icp"``).
Every refusal is a :class:`~limen.media.errors.MediaRefused` (488, 503, 481).

Results are bytes (SDP) and JSON-able dicts (statistics), so the same calls can be mapped
onto rtpengine's ng ``offer``/``answer``/``delete``/``query``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from limen.media.policy import LegPolicy

#: ``(call_id, reason)``: the media side ended a call on its own (no media for the
#: timeout, or the worker holding it was lost). Called at most once per call.
TimeoutCallback = Callable[[str, str], None]
#: ``(message, severity)``: an operator should know (a media worker stalled, died,
#: was restarted or retired). Severity is "warning" or "error".
AlarmCallback = Callable[[str, str], None]


class MediaEngine(Protocol):
    on_timeout: TimeoutCallback | None
    on_alarm: AlarmCallback | None

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def offer(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
    ) -> bytes:
        """SDP offered by ``from_leg`` → the SDP to offer the other leg (a new call or a
        re-offer on an existing one)."""
        ...

    def reoffer_plain(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
    ) -> bytes:
        """The same offer again, plain RTP/AVP toward the other leg (the retry after that
        leg refused our SRTP offer with 488/606 under "Prefer"); later offers toward that
        leg stay plain. 481 for an unknown call."""
        ...

    def answer(self, call_id: str, from_leg: str, sdp: bytes) -> bytes:
        """The answer of ``from_leg`` to the pending offer → the answer for the offerer."""
        ...

    def delete(self, call_id: str) -> dict[str, Any] | None:
        """End the call's media and free its ports; its last statistics (None: unknown)."""
        ...

    def query(self, call_id: str) -> dict[str, Any]:
        """The call's per-stream statistics ({} for an unknown call)."""
        ...

    def totals(self) -> dict[str, Any]:
        """Calls, ports in use and available, timeouts (and the workers' state)."""
        ...

    def bytes_received(self) -> dict[str, int]:
        """Media bytes received per leg, ended calls included (monotonic): the metrics'
        bandwidth gauges."""
        ...

    def drops(self) -> dict[str, int]:
        """Packets dropped per reason, ended calls included (monotonic)."""
        ...
