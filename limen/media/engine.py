"""The control surface of the media layer (DESIGN.md; rtpengine's ng commands).

The gateway talks to a :class:`MediaEngine`; :class:`limen.media.relay.MediaRelay` is the
in-process implementation. The interface is deliberately message-shaped (call id, leg
name, SDP bytes, plain policy values; results are bytes and JSON-able dicts) so that a
multi-process implementation can forward the same calls to the worker owning the call
(each worker with its own :meth:`limen.media.ports.PortPool.split` slice), and so that an
rtpengine-backed engine can map them to ng ``offer``/``answer``/``delete``/``query``.
:class:`limen.media.workers.WorkerPoolEngine` is the multi-process engine (``[media]
workers``); its control calls are blocking round trips to the owning worker, which is why
the methods can stay synchronous.

Besides the protocol, both engines offer ``bytes_received()`` (media bytes per leg, for
the metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from limen.media.policy import LegPolicy

TimeoutCallback = Callable[[str], None]


class MediaEngine(Protocol):
    #: Called with the call id when a call had no media for the timeout (at most once).
    on_timeout: TimeoutCallback | None

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def offer(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
        plain: bool = False,
    ) -> bytes: ...

    def answer(self, call_id: str, from_leg: str, sdp: bytes) -> bytes: ...

    def delete(self, call_id: str) -> dict[str, Any] | None: ...

    def query(self, call_id: str) -> dict[str, Any]: ...

    def totals(self) -> dict[str, Any]: ...
