"""The two error families of the SIP layer (after h11's RemoteProtocolError / LocalProtocolError).

``SipParseError`` means the peer sent something that is not SIP we can accept; it carries
the status code a server answers with (RFC 3261 §21.4: 400 by default, 505 for an
unsupported version, 413/494 for oversize input, 416 for an unsupported URI scheme).
``SipUsageError`` means our own code misused the stack; it is a bug, never the peer's fault.
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every exception raised on purpose by ``limen.sip``."""


class SipParseError(SipError):
    """Malformed or unacceptable input from the network."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"


class SipUsageError(SipError):
    """Local misuse of the SIP stack (a programming error on our side)."""
