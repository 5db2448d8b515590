"""SRTP and SRTCP for one direction of one stream (RFC 3711, RFC 7714), over pylibsrtp.

A :class:`SrtpContext` owns one libsrtp session keyed with one SDES master key||salt
(RFC 4568 inline key; RFC 7714 §12 for the AEAD suites) and works in one direction:

- ``INBOUND`` contexts ``unprotect`` (and ``unprotect_rtcp``): built with the key the *peer*
  put in its SDP;
- ``OUTBOUND`` contexts ``protect`` (and ``protect_rtcp``): built with the key *we* put in
  ours.

The relay holds one of each per SRTP leg; the keys of the two legs are unrelated, which is
what "never pass the phone's keys to the PBX" requires. The SSRC is a wildcard
(``ssrc_any_inbound``/``ssrc_any_outbound``): libsrtp makes a stream per SSRC on first use,
and on the inbound side only after the packet authenticated, so forged packets with random
SSRCs cost no memory. Rekeying (new SDES key in a re-INVITE) means a new context.

Outcomes. ``protect``/``unprotect`` return the new packet as ``bytes``; refusals raise:

- :class:`~limen.rtp.errors.SrtpAuthError`: the tag did not verify (RFC 3711 §3.3 step 5;
  RFC 7714 §9.3). The relay counts and drops.
- :class:`~limen.rtp.errors.SrtpReplayError`: index already seen or older than the replay
  window (RFC 3711 §3.3.2, window ``replay_window`` packets, default 128). libsrtp checks
  this before the tag, so a forged packet with an old index lands here too. On ``protect``
  it means a repeated sequence number from the plain side (see ``allow_repeat_tx``).
- :class:`~limen.rtp.errors.SrtpError`: anything else libsrtp refuses (too short, bad
  header, too long for our buffer).

Exceptions were chosen over a sentinel return: the success path stays a plain ``bytes``
return with no check, and a refused packet, raise and catch included, costs under a
microsecond (about 1 million forged packets/s on one core, bench/rtp_path.py) — cheaper
than a good one, so a flood of forgeries cannot cost more than the same flood of audio.

Speed: by default the packet path calls libsrtp through pylibsrtp's cffi binding directly,
from a closure holding a per-context buffer and length cell, instead of
``pylibsrtp.Session.protect`` etc., which allocate a length cell per call. Measured on
unprotect + protect of a 172-byte packet: ~1.7 µs against ~2.5 µs (bench/rtp_path.py). It
relies on pylibsrtp 1.0.0 internals (``pylibsrtp._binding``, ``Session._srtp``; the version
is pinned in pyproject.toml). ``fast=False`` uses only the public API; both paths are
tested against each other and against libsrtp's own test vectors.

Not supported: MKI (pylibsrtp has no MKI API; SDES attributes with an MKI are not chosen,
see limen.sdp.sdes), key lifetimes (libsrtp enforces the 2^48/2^31 packet limits itself).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

import pylibsrtp
from pylibsrtp import Policy, Session

from limen.rtp.errors import SrtpAuthError, SrtpError, SrtpReplayError

_ffi: Any = None
_lib: Any = None
try:  # the fast path: pylibsrtp's cffi module (pylibsrtp 1.0.0 layout)
    import pylibsrtp._binding as _binding  # type: ignore[import-not-found]

    _ffi, _lib = _binding.ffi, _binding.lib
except (ImportError, AttributeError):  # pragma: no cover - only with another pylibsrtp layout
    pass

# libsrtp's srtp_err_status_t values, found through pylibsrtp's message table so that we
# depend on its order, not on our own copy of the numbers.
_AUTH_FAIL: Final = pylibsrtp.ERRORS.index("authentication failure")
_REPLAY_FAIL: Final = pylibsrtp.ERRORS.index("replay check failed (bad index)")
_REPLAY_OLD: Final = pylibsrtp.ERRORS.index("replay check failed (index too old)")
_AUTH_MESSAGES: Final = frozenset({pylibsrtp.ERRORS[_AUTH_FAIL]})
_REPLAY_MESSAGES: Final = frozenset({pylibsrtp.ERRORS[_REPLAY_FAIL], pylibsrtp.ERRORS[_REPLAY_OLD]})

#: Largest packet handled. UDP media never comes near it; a bigger datagram is refused.
MAX_PACKET: Final = 2048
# SRTP_MAX_TRAILER_LEN / SRTP_MAX_SRTCP_TRAILER_LEN of libsrtp (tag + MKI [+ index]).
_TRAILER: Final = 4 + 16 + 128

# Suite name (RFC 4568 §6.2, RFC 7714 §14.2) → (libsrtp profile, master key + salt length).
_PROFILES: Final[dict[str, tuple[int, int]]] = {
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}
SUITES: Final = tuple(_PROFILES)


class SrtpDirection(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


def _error(status: int) -> SrtpError:
    if status == _AUTH_FAIL:
        return SrtpAuthError("authentication failure")
    if status in (_REPLAY_FAIL, _REPLAY_OLD):
        return SrtpReplayError(pylibsrtp.ERRORS[status])
    message = pylibsrtp.ERRORS[status] if 0 <= status < len(pylibsrtp.ERRORS) else str(status)
    return SrtpError(message)


def _translate(exc: pylibsrtp.Error) -> SrtpError:
    message = str(exc)
    if message in _AUTH_MESSAGES:
        return SrtpAuthError(message)
    if message in _REPLAY_MESSAGES:
        return SrtpReplayError(message)
    return SrtpError(message)


Processor = Callable[[bytes], bytes]


def _fast_processor(session: Session, function: Any, cdata: Any) -> Processor:
    """A closure calling libsrtp directly on a context-owned buffer (no per-call objects).

    ``session`` is bound as a default argument so that the libsrtp context outlives every
    processor handed out, even if the SrtpContext itself is dropped.
    """
    srtp = session._srtp[0]
    buffer = _ffi.buffer(cdata)
    length = _ffi.new("int *")

    def process(packet: bytes, _owner: Session = session) -> bytes:
        size = len(packet)
        if size > MAX_PACKET:
            raise SrtpError("packet is too long")
        buffer[0:size] = packet
        length[0] = size
        status = function(srtp, cdata, length)
        if status:
            raise _error(status)
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    return process


def _public_processor(method: Callable[[bytes], bytes]) -> Processor:
    """The same through pylibsrtp's public API (``Session.protect`` etc.)."""

    def process(packet: bytes) -> bytes:
        if len(packet) > MAX_PACKET:
            raise SrtpError("packet is too long")
        try:
            return method(bytes(packet))
        except pylibsrtp.Error as exc:
            raise _translate(exc) from None
        except ValueError as exc:  # pylibsrtp's own "packet is too long" (1500-byte buffer)
            raise SrtpError(str(exc)) from None

    return process


def _wrong_direction(description: str) -> Processor:
    def process(packet: bytes) -> bytes:
        raise RuntimeError(description)

    return process


class SrtpContext:
    """SRTP/SRTCP in one direction with one master key (see the module docstring).

    The four operations are attributes holding a function ``bytes -> bytes`` chosen at
    construction (a closure is about 15% cheaper per packet than a method that dispatches);
    the ones of the other direction raise ``RuntimeError``:

    - ``protect(rtp)``: RTP → SRTP (RFC 3711 §3.3; RFC 7714 §8 for AEAD);
    - ``unprotect(srtp)``: SRTP → RTP, or SrtpAuthError / SrtpReplayError / SrtpError;
    - ``protect_rtcp(rtcp)``: RTCP → SRTCP (RFC 3711 §3.4: adds E flag + index and tag);
    - ``unprotect_rtcp(srtcp)``: SRTCP → RTCP, with the same outcomes as ``unprotect``.
    """

    __slots__ = (
        "_session",
        "direction",
        "protect",
        "protect_rtcp",
        "suite",
        "unprotect",
        "unprotect_rtcp",
    )

    protect: Processor
    unprotect: Processor
    protect_rtcp: Processor
    unprotect_rtcp: Processor

    def __init__(
        self,
        suite: str,
        key: bytes,
        direction: SrtpDirection,
        *,
        replay_window: int = 128,
        allow_repeat_tx: bool = False,
        fast: bool = True,
    ) -> None:
        """``suite``: an SDES suite name (a :class:`limen.sdp.CryptoSuite` is one);
        ``key``: master key||salt as in the SDES inline value. ``allow_repeat_tx`` lets an
        outbound context encrypt a repeated sequence number (a retransmission) instead of
        raising :class:`SrtpReplayError`; it reuses keystream for identical packets only.
        ``fast=False`` avoids pylibsrtp internals (see the module docstring)."""
        profile = _PROFILES.get(str(suite))
        if profile is None:
            raise ValueError(f"unsupported SRTP suite: {suite!r}")
        if len(key) != profile[1]:
            raise ValueError(f"{suite} needs a {profile[1]}-byte master key and salt")
        if not 64 <= replay_window < 0x8000:
            raise ValueError("replay window must be 64..32767 packets (libsrtp)")
        inbound = direction is SrtpDirection.INBOUND
        ssrc_type = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
        policy = Policy(key=bytes(key), ssrc_type=ssrc_type, srtp_profile=profile[0])
        policy.window_size = replay_window
        policy.allow_repeat_tx = allow_repeat_tx
        self.suite = str(suite)
        self.direction = direction
        self._session = session = Session(policy=policy)
        if fast and _lib is not None:
            cdata = _ffi.new("char[]", MAX_PACKET + _TRAILER)
            rtp = _fast_processor(
                session, _lib.srtp_unprotect if inbound else _lib.srtp_protect, cdata
            )
            rtcp = _fast_processor(
                session, _lib.srtp_unprotect_rtcp if inbound else _lib.srtp_protect_rtcp, cdata
            )
        else:
            rtp = _public_processor(session.unprotect if inbound else session.protect)
            rtcp = _public_processor(session.unprotect_rtcp if inbound else session.protect_rtcp)
        if inbound:
            self.unprotect, self.unprotect_rtcp = rtp, rtcp
            self.protect = self.protect_rtcp = _wrong_direction(f"{self!r} cannot be used outbound")
        else:
            self.protect, self.protect_rtcp = rtp, rtcp
            self.unprotect = self.unprotect_rtcp = _wrong_direction(
                f"{self!r} cannot be used inbound"
            )

    @classmethod
    def inbound(cls, suite: str, key: bytes, **options: Any) -> SrtpContext:
        """A context that decrypts what the holder of ``key`` sends."""
        return cls(suite, key, SrtpDirection.INBOUND, **options)

    @classmethod
    def outbound(cls, suite: str, key: bytes, **options: Any) -> SrtpContext:
        """A context that encrypts with ``key`` (the key we announced)."""
        return cls(suite, key, SrtpDirection.OUTBOUND, **options)

    def __repr__(self) -> str:
        return f"<SrtpContext {self.direction.value} {self.suite}>"
