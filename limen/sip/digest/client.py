"""The client side of digest: choosing a challenge and answering it (RFC 7616 §3.4,
RFC 8760 §2.4, RFC 3261 §22.2-§22.4)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from limen.sip.digest.hashing import (
    DigestAlgorithm,
    compute_ha1,
    compute_response,
    compute_userhash,
)
from limen.sip.digest.parse import DigestChallenge, DigestCredentials, format_credentials
from limen.sip.errors import SipParseError, SipUsageError

__all__ = [
    "AuthAnswer",
    "Challenged",
    "DigestClient",
    "answer_challenge",
    "select_challenge",
]


# --------------------------------------------------------------------------------------------
# Client side (RFC 7616 §3.4, RFC 8760 §2.4)
# --------------------------------------------------------------------------------------------


def _client_qop(options: Sequence[str]) -> str | None:
    """qop=auth when offered; auth-int only when it is the only choice; None when the
    challenge has no qop (RFC 2069 style)."""
    lowered = [q.lower() for q in options]
    if not lowered:
        return None
    if "auth" in lowered:
        return "auth"
    if "auth-int" in lowered:
        return "auth-int"
    return ""  # only options we do not know: the caller treats "" as unusable


def select_challenge(
    challenges: Iterable[DigestChallenge], *, realm: str | None = None
) -> DigestChallenge | None:
    """The challenge to answer among several, or None if none is usable.

    RFC 8760 §2.4 lets a UAC apply local policy over the server's order; ours is the
    strongest supported hash (SHA-512-256 > SHA-256 > MD5), the server's order breaking ties.
    A challenge is usable if we know its algorithm and one of its qop options (or it has
    none), and, when ``realm`` is given, if its realm matches.
    """
    best: DigestChallenge | None = None
    best_rank = 0
    for ch in challenges:
        alg = DigestAlgorithm.from_name(ch.algorithm)
        if alg is None or _client_qop(ch.qop) == "":
            continue
        if realm is not None and ch.realm != realm:
            continue
        if alg.strength > best_rank:
            best, best_rank = ch, alg.strength
    return best


def answer_challenge(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    cnonce: str | None = None,
    nc: int = 1,
) -> DigestCredentials:
    """Credentials answering ``challenge`` for a request (RFC 7616 §3.4, RFC 3261 §22.4).

    ``uri`` is the Request-URI of the request being authorised; ``body`` matters only for
    qop=auth-int. ``nc`` counts the requests made with this nonce (start at 1).
    Raises :class:`SipParseError` if the challenge names an algorithm or only qop options
    we do not support (use :func:`select_challenge` first to avoid that).
    """
    alg = DigestAlgorithm.from_name(challenge.algorithm)
    if alg is None:
        raise SipParseError(f"unsupported digest algorithm {challenge.algorithm!r}")
    qop = _client_qop(challenge.qop)
    if qop == "":
        raise SipParseError(f"no supported qop among {challenge.qop!r}")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise SipUsageError(f"nonce count {nc} out of range")
    nc_text = f"{nc:08x}" if qop is not None else None
    if cnonce is None and (qop is not None or alg.is_session):
        # RFC 7616 §3.4: an opaque quoted string; 24 random bytes, URL-safe base64.
        cnonce = secrets.token_urlsafe(24)
    ha1 = compute_ha1(
        username, challenge.realm, password, alg, nonce=challenge.nonce, cnonce=cnonce
    )
    response = compute_response(
        ha1,
        algorithm=alg,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    sent_username = username
    if challenge.userhash:
        sent_username = compute_userhash(username, challenge.realm, alg)
    return DigestCredentials(
        username=sent_username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,  # echoed as the server spelled it
        cnonce=cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
        userhash=challenge.userhash,
    )


# --------------------------------------------------------------------------------------------
# The state of answering challenges for one request (or one registration)
# --------------------------------------------------------------------------------------------


_NONCES_COUNTED = 4


class Challenged(Protocol):
    """What :meth:`DigestClient.on_challenge` reads of a 401/407 (a
    :class:`~limen.sip.message.Response` fits; this module cannot import it: message.py
    imports the digest parsers)."""

    @property
    def status(self) -> int: ...

    @property
    def www_authenticate(self) -> list[DigestChallenge]: ...

    @property
    def proxy_authenticate(self) -> list[DigestChallenge]: ...


@dataclass(frozen=True, slots=True)
class AuthAnswer:
    """The header to add to the retried request: ``Authorization`` after a 401,
    ``Proxy-Authorization`` after a 407 (RFC 3261 §22.2, §22.3)."""

    name: str
    value: str


class DigestClient:
    """Answers digest challenges for one request, or for one registration across its
    refreshes (RFC 3261 §22.2-§22.4, RFC 7616 §3.4, RFC 8760 §2.4). Sans-IO: it holds no
    message and sends nothing.

    - :meth:`on_challenge` takes a 401/407 and says whether to send the request again:
      the strongest usable challenge is chosen (:func:`select_challenge`), each nonce is
      answered once per request unless the server marks it ``stale`` (RFC 7616 §3.3: the
      credentials were right but the nonce expired), and at most ``max_rounds`` challenges
      are answered per request, so a server that refuses the credentials ends in a
      failure rather than a loop.
    - :meth:`authorization` gives the header for the request about to be sent with the
      challenge held (the retried request, or a later one sent preemptively, such as a
      registration refresh), with the nonce count of that nonce incremented (RFC 7616
      §3.4: ``nc`` counts the requests sent with one nonce, so the server can spot
      replays).
    - :meth:`new_request` starts counting rounds for a new request and keeps the
      challenge; :meth:`reset` forgets the challenge too (a new server).
    """

    __slots__ = (
        "_answered",
        "_challenge",
        "_nc",
        "_proxy",
        "max_rounds",
        "password",
        "rounds",
        "username",
    )

    def __init__(self, username: str, password: str, *, max_rounds: int = 2) -> None:
        if max_rounds < 1:
            raise SipUsageError("max_rounds must be >= 1")
        self.username = username
        self.password = password
        self.max_rounds = max_rounds
        self.rounds = 0  # challenges answered for the current request
        self._challenge: DigestChallenge | None = None
        self._proxy = False
        self._answered: set[str] = set()  # nonces answered for the current request
        # nonce → requests sent with it; a few recent nonces, so a server that comes back
        # to an earlier nonce never sees its counts again (they would be replays).
        self._nc: dict[str, int] = {}

    @property
    def challenge(self) -> DigestChallenge | None:
        """The challenge the next :meth:`authorization` answers, if any."""
        return self._challenge

    def new_request(self) -> None:
        """A new request (a registration refresh, an un-REGISTER): rounds start again; the
        challenge is kept so the request can carry credentials from the start."""
        self.rounds = 0
        self._answered.clear()

    def reset(self) -> None:
        """Forget the challenge too (another server, or after a failure)."""
        self.new_request()
        self._challenge = None

    def on_challenge(self, response: Challenged) -> bool:
        """Take a 401 or 407; True when the request should be sent again with
        :meth:`authorization`, False when the response is the final answer (no usable
        challenge, a nonce already answered and not stale, or no rounds left)."""
        status = response.status
        if status not in (401, 407) or self.rounds >= self.max_rounds:
            return False
        try:
            offered = response.proxy_authenticate if status == 407 else response.www_authenticate
        except SipParseError:
            return False  # an unparsable challenge is a refusal we relay, not an error
        challenge = select_challenge(offered)
        if challenge is None:
            return False
        if challenge.nonce in self._answered and not challenge.stale:
            # RFC 3261 §22.2: the same nonce again means the credentials were refused.
            return False
        self.rounds += 1
        self._answered.add(challenge.nonce)
        self._challenge = challenge
        self._proxy = status == 407
        return True

    def authorization(self, method: str, uri: str, body: bytes = b"") -> AuthAnswer | None:
        """The credentials header for the request about to go out (``uri`` its
        Request-URI, ``body`` for qop=auth-int), or None when no challenge is held."""
        ch = self._challenge
        if ch is None:
            return None
        count = self._nc.pop(ch.nonce, 0) + 1
        self._nc[ch.nonce] = count  # most recent last
        if len(self._nc) > _NONCES_COUNTED:
            del self._nc[next(iter(self._nc))]
        credentials = answer_challenge(
            ch,
            method=method,
            uri=uri,
            username=self.username,
            password=self.password,
            body=body,
            nc=count,
        )
        name = "Proxy-Authorization" if self._proxy else "Authorization"
        return AuthAnswer(name, format_credentials(credentials))
