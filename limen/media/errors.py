"""The relay's one refusal type: a status (the SIP response the signalling side sends) and a
reason. The gateway catches this very class (``limen.gateway.media`` re-exports it); the
media layer does not import the gateway (DESIGN.md layering)."""

from __future__ import annotations


class MediaRefused(Exception):
    """The relay cannot set up (or update) the session.

    ``status``: 488 Not Acceptable Here (SRTP required but not offered, no allowed codec,
    unusable SDP, an answer without an offer), 503 Service Unavailable (no media ports or
    no media worker left), 481 (``answer`` or a plain re-offer for an unknown call).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"MediaRefused({self.status}, {self.reason!r})"
