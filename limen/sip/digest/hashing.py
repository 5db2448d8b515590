"""Digest algorithms and hashes (RFC 7616 §3.2, §3.4.1-§3.4.4; RFC 8760 §2.1-§2.2).

Shared by the client and the server side; nothing here parses network input.
"""

from __future__ import annotations

import enum
import hashlib

from limen.sip.errors import SipUsageError

__all__ = [
    "DigestAlgorithm",
    "compute_ha1",
    "compute_response",
    "compute_session_ha1",
    "compute_userhash",
]


# --------------------------------------------------------------------------------------------
# Algorithms (RFC 7616 §3.2, §6.1 registry; RFC 8760 §2.1)
# --------------------------------------------------------------------------------------------


def _sha512_256_available() -> bool:
    # SHA-512/256 comes from OpenSSL through hashlib; every maintained OpenSSL has it, but a
    # build without it must not break import: the algorithm is then simply "unsupported".
    try:
        hashlib.new("sha512_256")
    except ValueError:
        return False
    return True


_HAVE_SHA512_256 = _sha512_256_available()


class DigestAlgorithm(enum.Enum):
    """The digest algorithms we implement, by their registered names (RFC 7616 §6.1)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"
    SHA_512_256 = "SHA-512-256"
    SHA_512_256_SESS = "SHA-512-256-sess"

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants, whose A1 also covers nonce and cnonce (§3.4.2)."""
        return self.value.endswith("-sess")

    @property
    def hashlib_name(self) -> str:
        base = self.value.removesuffix("-sess")
        return {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[base]

    @property
    def strength(self) -> int:
        """Client preference rank (RFC 8760 §2.4 local policy): SHA-512-256 > SHA-256 > MD5."""
        return {"md5": 1, "sha256": 2, "sha512_256": 3}[self.hashlib_name]

    @property
    def available(self) -> bool:
        return self.hashlib_name != "sha512_256" or _HAVE_SHA512_256

    @classmethod
    def from_name(cls, name: str) -> DigestAlgorithm | None:
        """The algorithm a (case-insensitive) ``algorithm=`` value names, or None if unknown
        or not available in this Python build."""
        # ASCII-only: str.lower() maps some non-ASCII letters onto ASCII ones.
        if not name.isascii():
            return None
        for alg in cls:
            if alg.value.lower() == name.lower():
                return alg if alg.available else None
        return None


def _to_algorithm(algorithm: DigestAlgorithm | str) -> DigestAlgorithm:
    if isinstance(algorithm, DigestAlgorithm):
        if not algorithm.available:
            raise SipUsageError(f"digest algorithm {algorithm.value} is not available")
        return algorithm
    alg = DigestAlgorithm.from_name(algorithm)
    if alg is None:
        raise SipUsageError(f"unsupported digest algorithm {algorithm!r}")
    return alg


def _utf8(text: str) -> bytes:
    # Parsed values never hold lone surrogates (the parsers reject them); "surrogatepass"
    # only keeps a hand-built value from raising UnicodeEncodeError in the middle of a hash.
    return text.encode("utf-8", "surrogatepass")


def _h(alg: DigestAlgorithm, data: str | bytes) -> str:
    """H(data): lowercase hex digest (RFC 7616 §3.2, RFC 8760 §2.2)."""
    raw = _utf8(data) if isinstance(data, str) else data
    return hashlib.new(alg.hashlib_name, raw).hexdigest()


def _kd(alg: DigestAlgorithm, secret: str, data: str) -> str:
    """KD(secret, data) = H(concat(secret, ":", data)) (RFC 7616 §3.2)."""
    return _h(alg, f"{secret}:{data}")


# --------------------------------------------------------------------------------------------
# Hashing (RFC 7616 §3.4.1-§3.4.4)
# --------------------------------------------------------------------------------------------


def compute_session_ha1(
    ha1: str, algorithm: DigestAlgorithm | str, *, nonce: str, cnonce: str
) -> str:
    """Turn H(username:realm:password) into the ``-sess`` HA1 (RFC 7616 §3.4.2).

    A1 = H(username:realm:password) ":" nonce ":" cnonce, so a server that stores only the
    plain HA1 can still check ``-sess`` responses. For non-session algorithms this returns
    ``ha1`` unchanged.
    """
    alg = _to_algorithm(algorithm)
    if not alg.is_session:
        return ha1
    return _h(alg, f"{ha1}:{nonce}:{cnonce}")


def compute_ha1(
    username: str,
    realm: str,
    password: str,
    algorithm: DigestAlgorithm | str = DigestAlgorithm.MD5,
    *,
    nonce: str | None = None,
    cnonce: str | None = None,
) -> str:
    """H(A1) (RFC 7616 §3.4.2); ``nonce`` and ``cnonce`` are required for ``-sess``."""
    alg = _to_algorithm(algorithm)
    ha1 = _h(alg, f"{username}:{realm}:{password}")
    if alg.is_session:
        if nonce is None or cnonce is None:
            raise SipUsageError(f"{alg.value} needs nonce and cnonce")
        return compute_session_ha1(ha1, alg, nonce=nonce, cnonce=cnonce)
    return ha1


def compute_userhash(username: str, realm: str, algorithm: DigestAlgorithm | str) -> str:
    """The hashed username H(username:realm) sent when ``userhash=true`` (RFC 7616 §3.4.4)."""
    return _h(_to_algorithm(algorithm), f"{username}:{realm}")


def compute_response(
    ha1: str,
    *,
    algorithm: DigestAlgorithm | str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1), from the effective HA1.

    ``ha1`` is what :func:`compute_ha1` returns (already the ``-sess`` form where that
    applies). ``qop`` None is the RFC 2069 form KD(HA1, nonce:HA2), kept because RFC 3261
    §22.4 requires servers to accept it; ``qop`` and ``nc`` are hashed exactly as sent.
    """
    alg = _to_algorithm(algorithm)
    if qop is not None and qop.lower() == "auth-int":
        # RFC 7616 §3.4.3: A2 = Method:request-uri:H(entity-body); an empty SIP body hashes
        # as H("") (RFC 3261 §22.4).
        ha2 = _h(alg, f"{method}:{uri}:{_h(alg, body)}")
    else:
        ha2 = _h(alg, f"{method}:{uri}")
    if qop is None:
        return _kd(alg, ha1, f"{nonce}:{ha2}")
    if qop.lower() not in ("auth", "auth-int"):
        raise SipUsageError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise SipUsageError("qop requires nc and cnonce")
    return _kd(alg, ha1, f"{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
