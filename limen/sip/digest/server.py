"""The server side of digest: stateless nonces, verification, replay and failure memory
(RFC 7616 §3.3, §3.5, §5.4, §5.5; RFC 8760 §2.3; RFC 3261 §22.4)."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from limen.sip.digest.hashing import (
    DigestAlgorithm,
    _h,
    _to_algorithm,
    _utf8,
    compute_response,
    compute_session_ha1,
)
from limen.sip.digest.parse import DigestChallenge, DigestCredentials, _parse_nc
from limen.sip.errors import SipUsageError

__all__ = ["DigestServer", "VerifyResult"]


# --------------------------------------------------------------------------------------------
# Server side (RFC 7616 §3.3, §3.5, §5.4, §5.5; RFC 8760 §2.3)
# --------------------------------------------------------------------------------------------


class VerifyResult(enum.Enum):
    """What :meth:`DigestServer.verify` concluded.

    Callers must answer BAD_RESPONSE and UNKNOWN_USER identically on the wire (a fresh
    challenge), or the difference enumerates users. STALE means the response was right but
    the nonce is too old: challenge again with ``stale=True`` (RFC 7616 §3.3).
    """

    OK = "ok"
    STALE = "stale"
    BAD_RESPONSE = "bad-response"
    BAD_NONCE = "bad-nonce"  # malformed, forged, or minted for another realm/secret
    REPLAY = "replay"  # nonce count not above what was seen for this nonce
    UNKNOWN_USER = "unknown-user"
    USED_NONCE = "used-nonce"  # a wrong answer already burnt this nonce: challenge afresh
    BAD_REALM = "bad-realm"
    BAD_ALGORITHM = "bad-algorithm"
    BAD_QOP = "bad-qop"
    BAD_URI = "bad-uri"


# Nonce layout: 8-byte issue time (signed, milliseconds) | 12 random bytes | 16-byte MAC,
# URL-safe base64 without padding: 36 bytes -> exactly 48 characters.
_NONCE_TIME = struct.Struct(">q")
_NONCE_RANDOM = 12
_NONCE_MAC = 16
_NONCE_RAW = _NONCE_TIME.size + _NONCE_RANDOM + _NONCE_MAC
_NONCE_TEXT = 48
# A nonce may be stamped slightly ahead of our clock (another node, a clock step back):
# tolerate this much before calling it stale.
_FUTURE_SKEW_MS = 5_000


@dataclass(slots=True)
class _NonceUse:
    expires_ms: int
    highest_nc: int
    seen: int  # bit i set: highest_nc - i was seen (only with a replay window)


class DigestServer:
    """Stateless-nonce digest server for one realm.

    Nonces carry their issue time and an HMAC over it, the realm and random bytes, keyed
    with ``secret``: any node or restart sharing the secret accepts them, and a forged or
    altered nonce fails the MAC (RFC 7616 §3.3 suggests exactly this kind of nonce; §5.4).
    Replays are caught by remembering the highest ``nc`` per nonce (§5.5) in a bounded
    LRU. After a restart that memory is empty, so an ``nc`` seen before the restart is
    accepted once more until its nonce expires; a short ``nonce_lifetime`` limits this.
    Responses without qop carry no ``nc`` and can be replayed within the nonce lifetime:
    that is the price of RFC 2069 compatibility (``allow_no_qop=False`` refuses them).

    ``replay_window`` > 0 also accepts a lower ``nc`` not seen yet within that distance
    of the highest (requests sharing a nonce may cross on UDP), like SRTP's replay list.

    Wrong answers burn nonces: after ``max_failures_per_nonce`` wrong answers (or unknown
    users) a nonce is refused with USED_NONCE *before* any hashing, so one nonce buys a
    guesser that many tries and no more (RFC 7616 §5.5 leaves failure handling to the
    server). The burnt set is bounded like the nc memory: beyond ``max_nonces`` the oldest
    entry goes, and every nonce issued at or before it is then treated as burnt, which at
    worst makes honest phones fetch a new nonce.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str | DigestAlgorithm] = ("SHA-256", "MD5"),
        qop: str = "auth",
        *,
        allow_no_qop: bool = True,
        max_nonces: int = 10_000,
        replay_window: int = 0,
        max_failures_per_nonce: int = 1,
    ) -> None:
        if len(secret) < 16:
            raise SipUsageError("nonce secret must be at least 16 bytes")
        if nonce_lifetime <= 0:
            raise SipUsageError("nonce lifetime must be positive")
        if not algorithms:
            raise SipUsageError("at least one digest algorithm is needed")
        if max_nonces < 1 or not 0 <= replay_window <= 64:
            raise SipUsageError("max_nonces must be >= 1 and replay_window in 0..64")
        if max_failures_per_nonce < 1:
            raise SipUsageError("max_failures_per_nonce must be >= 1")
        self.realm = realm
        self._secret = secret
        self._lifetime_ms = int(nonce_lifetime * 1000)
        # RFC 8760 §2.3: challenges go out most preferred first (MD5 last, for old phones).
        self.algorithms: tuple[DigestAlgorithm, ...] = tuple(
            dict.fromkeys(_to_algorithm(a) for a in algorithms)
        )
        self.qop: tuple[str, ...] = tuple(q.strip() for q in qop.split(",") if q.strip())
        for option in self.qop:
            if option not in ("auth", "auth-int"):
                raise SipUsageError(f"unsupported qop {option!r}")
        self.allow_no_qop = allow_no_qop
        self._max_nonces = max_nonces
        self._window = replay_window
        self._uses: OrderedDict[str, _NonceUse] = OrderedDict()
        # Issue time (ms) of the newest nonce evicted from ``_uses`` before it expired; an
        # unknown nonce issued at or before this may have been used already, so it is
        # answered STALE rather than trusted with a fresh nc history.
        self._evicted_floor_ms: int | None = None
        self._max_failures = max_failures_per_nonce
        # nonce → (issue time ms, wrong answers so far), oldest first; bounded by max_nonces.
        self._failed: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._burnt_floor_ms: int | None = None

    # -- nonces --------------------------------------------------------------------------

    def _mac(self, stamp_and_random: bytes) -> bytes:
        msg = b"limen-digest-nonce\x00" + _utf8(self.realm) + b"\x00" + stamp_and_random
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_NONCE_MAC]

    def new_nonce(self, now: float) -> str:
        """A fresh nonce stamped with ``now``."""
        body = _NONCE_TIME.pack(int(now * 1000)) + secrets.token_bytes(_NONCE_RANDOM)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we minted, or None if it is malformed or forged."""
        if len(nonce) != _NONCE_TEXT:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (UnicodeEncodeError, ValueError, binascii.Error):
            return None
        # b64decode skips characters outside the alphabet; demanding the canonical spelling
        # stops two strings from naming one nonce (each would get its own nc history).
        if len(raw) != _NONCE_RAW or base64.urlsafe_b64encode(raw).decode("ascii") != nonce:
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued_ms: int = _NONCE_TIME.unpack_from(body)[0]
        return issued_ms

    def challenges(
        self, now: float, *, stale: bool = False, opaque: str | None = None
    ) -> list[DigestChallenge]:
        """One challenge per algorithm, most preferred first (RFC 8760 §2.3), sharing one
        nonce; send each as its own WWW-Authenticate / Proxy-Authenticate header."""
        nonce = self.new_nonce(now)
        return [
            DigestChallenge(
                realm=self.realm,
                nonce=nonce,
                opaque=opaque,
                algorithm=alg.value,
                qop=self.qop,
                stale=stale,
            )
            for alg in self.algorithms
        ]

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        credentials: DigestCredentials,
        *,
        method: str,
        now: float,
        password: str | None = None,
        ha1: str | None = None,
        username: str | None = None,
        body: bytes = b"",
        expected_uri: str | None = None,
    ) -> VerifyResult:
        """Check credentials for a request with ``method`` (and ``body`` for auth-int).

        Give the user's ``password``, or ``ha1`` = H(username:realm:password) computed with
        the hash of ``credentials.algorithm`` (without ``-sess``), or neither for an
        unknown user (same work is done, UNKNOWN_USER returned). With ``userhash=true``
        credentials, ``username`` must be the plain username the caller resolved from the
        hash (see :func:`compute_userhash`). ``expected_uri`` is the Request-URI, compared
        exactly with the ``uri`` parameter (RFC 7616 §3.4.6 / RFC 3261 §22.4).
        """
        cr = credentials
        if cr.realm != self.realm:
            return VerifyResult.BAD_REALM
        alg = DigestAlgorithm.from_name(cr.algorithm)
        if alg is None or alg not in self.algorithms:
            return VerifyResult.BAD_ALGORITHM
        if cr.qop is None:
            # RFC 3261 §22.4: RFC 2069 clients send no qop; accepting them is required.
            if not self.allow_no_qop:
                return VerifyResult.BAD_QOP
        elif cr.qop.lower() not in self.qop or cr.nc is None or cr.cnonce is None:
            return VerifyResult.BAD_QOP
        if alg.is_session and cr.cnonce is None:
            return VerifyResult.BAD_RESPONSE
        if expected_uri is not None and cr.uri != expected_uri:
            return VerifyResult.BAD_URI
        issued_ms = self._nonce_issued_ms(cr.nonce)
        if issued_ms is None:
            return VerifyResult.BAD_NONCE
        if self._burnt(cr.nonce, issued_ms):
            return VerifyResult.USED_NONCE

        known_user = password is not None or ha1 is not None
        plain_username = cr.username
        if cr.userhash:
            if known_user and username is None:
                raise SipUsageError("userhash credentials need the resolved plain username")
            plain_username = username if username is not None else cr.username
        if ha1 is not None:
            if len(ha1) != hashlib.new(alg.hashlib_name).digest_size * 2:
                raise SipUsageError(f"ha1 does not fit algorithm {alg.value}")
            base_ha1 = ha1.lower()
        else:
            # Unknown user: hash a random password so the work (and time) matches.
            secret_text = password if password is not None else secrets.token_hex(16)
            base_ha1 = _h(alg, f"{plain_username}:{self.realm}:{secret_text}")
        effective_ha1 = base_ha1
        if alg.is_session:
            effective_ha1 = compute_session_ha1(
                base_ha1, alg, nonce=cr.nonce, cnonce=cr.cnonce or ""
            )
        expected = compute_response(
            effective_ha1,
            algorithm=alg,
            nonce=cr.nonce,
            method=method,
            uri=cr.uri,
            qop=cr.qop,
            nc=cr.nc,
            cnonce=cr.cnonce,
            body=body,
        )
        # Constant time, on bytes: compare_digest refuses non-ASCII str (RFC 7616 §5.5 spirit).
        matches = hmac.compare_digest(_utf8(expected), _utf8(cr.response.lower()))
        if not known_user or not matches:
            self._record_failure(cr.nonce, issued_ms, int(now * 1000))
            return VerifyResult.UNKNOWN_USER if not known_user else VerifyResult.BAD_RESPONSE

        # The client knows the password; now judge freshness (RFC 7616 §3.3: stale=true only
        # for a valid digest with an invalid nonce).
        now_ms = int(now * 1000)
        if now_ms - issued_ms > self._lifetime_ms or issued_ms - now_ms > _FUTURE_SKEW_MS:
            self._uses.pop(cr.nonce, None)
            return VerifyResult.STALE
        if cr.nc is None:
            return VerifyResult.OK
        return self._count(cr.nonce, _parse_nc(cr.nc), issued_ms, now_ms)

    def _count(self, nonce: str, nc: int, issued_ms: int, now_ms: int) -> VerifyResult:
        """Record ``nc`` for ``nonce``; REPLAY if it was seen or is too old (RFC 7616 §5.5)."""
        use = self._uses.get(nonce)
        if use is None:
            if self._evicted_floor_ms is not None and issued_ms <= self._evicted_floor_ms:
                return VerifyResult.STALE
            self._uses[nonce] = _NonceUse(issued_ms + self._lifetime_ms, nc, 1)
            self._prune(now_ms)
            return VerifyResult.OK
        self._uses.move_to_end(nonce)
        if nc > use.highest_nc:
            shift = nc - use.highest_nc
            use.seen = ((use.seen << shift) | 1) & ((1 << max(self._window, 1)) - 1)
            use.highest_nc = nc
            return VerifyResult.OK
        distance = use.highest_nc - nc
        if distance >= self._window or use.seen & (1 << distance):
            return VerifyResult.REPLAY
        use.seen |= 1 << distance
        return VerifyResult.OK

    def _prune(self, now_ms: int) -> None:
        """Drop expired nonces from the least recently used end, then evict beyond the cap.

        Only the LRU end is swept, so this stays O(1) amortised; an expired entry deeper in
        goes when the cap reaches it, and evicting an expired entry costs nothing.
        """
        while self._uses:
            nonce, use = next(iter(self._uses.items()))
            if use.expires_ms >= now_ms:
                break
            del self._uses[nonce]
        while len(self._uses) > self._max_nonces:
            _nonce, use = self._uses.popitem(last=False)
            if use.expires_ms < now_ms:
                continue
            issued_ms = use.expires_ms - self._lifetime_ms
            if self._evicted_floor_ms is None or issued_ms > self._evicted_floor_ms:
                self._evicted_floor_ms = issued_ms

    def _burnt(self, nonce: str, issued_ms: int) -> bool:
        entry = self._failed.get(nonce)
        if entry is not None:
            return entry[1] >= self._max_failures
        return self._burnt_floor_ms is not None and issued_ms <= self._burnt_floor_ms

    def _record_failure(self, nonce: str, issued_ms: int, now_ms: int) -> None:
        entry = self._failed.get(nonce)
        self._failed[nonce] = (issued_ms, 1 if entry is None else entry[1] + 1)
        failed = self._failed
        while failed:  # expired entries leave from the old end (their nonces are stale)
            first = next(iter(failed.values()))
            if now_ms - first[0] <= self._lifetime_ms:
                break
            failed.popitem(last=False)
        while len(failed) > self._max_nonces:
            _nonce, (old_issued, _count) = failed.popitem(last=False)
            if self._burnt_floor_ms is None or old_issued > self._burnt_floor_ms:
                self._burnt_floor_ms = old_issued

    @property
    def failed_nonces(self) -> int:
        """How many nonces have wrong answers recorded (for stats and tests)."""
        return len(self._failed)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces have an nc history (for stats and tests)."""
        return len(self._uses)
