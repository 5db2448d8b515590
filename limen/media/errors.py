"""The relay's refusal: a status (the SIP response the signalling side should send) and a
reason. ``limen.gateway`` maps it to its own ``MediaRefused``; the media layer does not
import the gateway (DESIGN.md layering)."""

from __future__ import annotations


class MediaError(Exception):
    """The relay cannot set up (or update) the session.

    ``status``: 488 Not Acceptable Here (SRTP required but not offered, no allowed codec,
    unusable SDP), 503 Service Unavailable (no media ports left), 481 (unknown call).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
