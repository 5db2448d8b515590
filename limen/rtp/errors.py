"""The exceptions ``limen.rtp`` raises for bad packets.

The media path catches exactly these: :class:`RtpParseError` for malformed RTP/RTCP/event
payloads, and the :class:`SrtpError` family for packets SRTP refuses. Authentication and
replay failures have their own classes so the relay can count them apart (RFC 3711 §3.3:
such packets are discarded, never forwarded).
"""

from __future__ import annotations


class RtpParseError(ValueError):
    """A malformed RTP, RTCP or RFC 4733 event packet."""


class SrtpError(Exception):
    """libsrtp refused a packet (too short, malformed header, unsupported ...)."""


class SrtpAuthError(SrtpError):
    """Authentication tag mismatch (RFC 3711 §3.3 step 5, RFC 7714 §9.3 AEAD decrypt)."""


class SrtpReplayError(SrtpError):
    """Replayed or too-old packet index (RFC 3711 §3.3.2).

    On protect it means the sender reused a sequence number for an SSRC (libsrtp refuses to
    encrypt two packets with the same index: that would reuse keystream).
    """
