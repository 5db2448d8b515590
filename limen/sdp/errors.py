"""The one exception ``limen.sdp`` raises for bad input.

Everything that reads network input (``parse_sdp`` and the ``parse_*`` helpers for single
attribute values) raises :class:`SdpParseError` and nothing else, whatever the input. Local
misuse (a negative port, a payload type above 127 ...) raises plain ``ValueError``.
"""

from __future__ import annotations


class SdpParseError(ValueError):
    """Malformed or unacceptable SDP from the network."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"SdpParseError({self.reason!r})"
