"""SIP digest access authentication, both sides, sans-IO.

Implements:

- RFC 7616 §3.3 (challenge: WWW-Authenticate / Proxy-Authenticate values), §3.4 (credentials:
  Authorization / Proxy-Authorization values), §3.4.1 (response), §3.4.2 (A1 and the ``-sess``
  variants), §3.4.3 (A2, ``auth-int``), §3.4.4 (userhash), §3.4.4/RFC 8187 (``username*``
  on input), §3.5 (``stale``), §3.9 (worked examples, used by the tests), §5.4/§5.5
  (limited-use nonces, replay protection through the nonce count).
- RFC 2617 §3.2.2.1 / RFC 2069: responses without ``qop``, which RFC 3261 §22.4 still
  requires a server to accept.
- RFC 3261 §22.4 (SIP use of digest), §25.1 (token, quoted-string grammar).
- RFC 8760 §2.1-§2.4 (SHA-256 and SHA-512-256 in SIP, several challenges in preference
  order, how a client picks one).

Nothing here reads a clock or touches a socket: the caller passes ``now`` (seconds; wall-clock
time if nonces must survive a restart). Everything that parses network input raises
:class:`~limen.sip.errors.SipParseError` and nothing else; misuse by our own code raises
:class:`~limen.sip.errors.SipUsageError`.

Deviations (written down where they happen, too):

- Passwords and usernames are always hashed as UTF-8 (SIP is UTF-8, RFC 3261 §25.1); there is
  no ISO-8859-1 fallback and no PRECIS normalisation (RFC 7616 §4).
- Parsing is lenient where lenience costs nothing: unquoted values where RFC 7616 wants
  quoted ones (and the reverse), empty list elements, any case for parameter names.
- ``Authentication-Info`` (RFC 7616 §3.5 ``rspauth``/``nextnonce``) is not produced.
- The ``uri`` check is an exact string comparison, not RFC 3261 §19.1.4 URI equality; the
  caller may normalise first.

Layout: :mod:`.hashing` (algorithms and the RFC 7616 §3.4 hashes, shared by both sides),
:mod:`.parse` (challenge and credentials values: grammar, parsing, formatting),
:mod:`.client` (answering challenges: :class:`DigestClient` and its helpers) and
:mod:`.server` (:class:`DigestServer`: nonces, verification, replay memory). Every public
name is re-exported here, so ``from limen.sip.digest import X`` is the way to import.
"""

from __future__ import annotations

from limen.sip.digest.client import (
    AuthAnswer,
    DigestClient,
    answer_challenge,
    select_challenge,
)
from limen.sip.digest.hashing import (
    DigestAlgorithm,
    compute_ha1,
    compute_response,
    compute_session_ha1,
    compute_userhash,
)
from limen.sip.digest.parse import (
    DigestChallenge,
    DigestCredentials,
    format_challenge,
    format_credentials,
    parse_challenge,
    parse_credentials,
)
from limen.sip.digest.server import DigestServer, VerifyResult

__all__ = [
    "AuthAnswer",
    "DigestAlgorithm",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestServer",
    "VerifyResult",
    "answer_challenge",
    "compute_ha1",
    "compute_response",
    "compute_session_ha1",
    "compute_userhash",
    "format_challenge",
    "format_credentials",
    "parse_challenge",
    "parse_credentials",
    "select_challenge",
]
