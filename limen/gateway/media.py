"""The gateway's view of the media relay: the narrow interface of DESIGN.md.

Shaped like rtpengine's ng protocol (offer, answer, delete, query) so the relay can run
in-process, in worker processes, or be rtpengine itself. The call controller calls
``offer`` with the SDP it received from one side and sends what comes back to the other
side; ``answer`` likewise for the answer; ``delete`` when the call ends.

Until the relay lands (the media issue), :class:`PassthroughMedia` hands SDP through
unchanged: signalling works, but media flows directly between the endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from limen.gateway.sides import Side


@dataclass(frozen=True, slots=True)
class MediaRefused(Exception):
    """The relay refuses the session (no common codec, SRTP required, ports exhausted).
    ``status`` is the SIP response to send: 488 Not Acceptable Here or 503."""

    status: int
    reason: str


class MediaController(Protocol):
    def offer(
        self,
        call_id: str,
        from_side: Side,
        sdp: bytes,
        *,
        device: str | None,
        peer: str | None = None,
    ) -> bytes: ...

    def answer(self, call_id: str, from_side: Side, sdp: bytes, *, device: str | None) -> bytes: ...

    def delete(self, call_id: str) -> None: ...

    def query(self, call_id: str) -> dict[str, Any]: ...


class PassthroughMedia:
    """No relay: SDP goes through untouched (media takes the direct path)."""

    def offer(
        self,
        call_id: str,
        from_side: Side,
        sdp: bytes,
        *,
        device: str | None,
        peer: str | None = None,
    ) -> bytes:
        return sdp

    def answer(self, call_id: str, from_side: Side, sdp: bytes, *, device: str | None) -> bytes:
        return sdp

    def delete(self, call_id: str) -> None:
        return None

    def query(self, call_id: str) -> dict[str, Any]:
        return {}
