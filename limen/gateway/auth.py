"""Set-side digest authentication of phones (RFC 3261 §22.2-§22.4, RFC 7616, RFC 8760).

:class:`SetSideAuth` checks a phone's ``Authorization`` (401 / ``WWW-Authenticate``, the
registrar's challenge, §22.2) or ``Proxy-Authorization`` (407 / ``Proxy-Authenticate``,
the proxy's challenge for INVITE, SUBSCRIBE ... §22.3) against the device's **set-side**
credentials, and answers the request itself when the check fails.

What a scanner sees does not depend on whether the user exists (no user enumeration):
every request without usable credentials gets the same fresh challenge; wrong credentials
get the same 403 whether the user is unknown or the password is wrong (the digest server
does the same hashing work for both). A right answer with an expired nonce gets a new
challenge with ``stale=true`` (RFC 7616 §3.3), so phones retry without asking the user.

Nonces are stateless HMACs (:class:`~limen.sip.digest.DigestServer`) keyed with a secret
derived from the store's key file and stamped with wall-clock time, so nonces issued
before a restart (or by another node sharing the key) stay valid.

Deviation (interop): challenges go out MD5 first, then SHA-256. RFC 8760 §2.3 asks for the
preferred algorithm first, but many phones and SIPp answer only the first challenge and
know only MD5; clients that implement RFC 8760 §2.4 still pick SHA-256 by strength.
``sip.digest_algorithms`` changes the set (``["MD5"]`` for phones that refuse a challenge
set with an algorithm they do not know, like baresip 1.0).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from limen.gateway.respond import respond
from limen.sip.addressing import Source
from limen.sip.digest import DigestCredentials, DigestServer, VerifyResult, format_challenge
from limen.sip.errors import SipParseError
from limen.sip.message import Request
from limen.sip.transaction import ServerTransaction
from limen.store.schemas import DeviceCredentials

if TYPE_CHECKING:
    from limen.gateway.context import GatewayContext

log = logging.getLogger("limen.gateway.auth")

SET_SIDE_ALGORITHMS = ("MD5", "SHA-256")
NONCE_LIFETIME = 300.0

Clock = Callable[[], float]


def derive_secret(ctx: GatewayContext, purpose: bytes) -> bytes:
    """A per-purpose secret derived from the store's key file (stable across restarts and
    shared by cluster nodes); random when there is no key file (tests, no store)."""
    key: bytes | None = None
    if ctx.store is not None:
        try:
            key = ctx.settings.secret_key_path.read_bytes().strip()
        except OSError:
            key = None
    if not key:
        return secrets.token_bytes(32)
    return hmac.new(key, b"limen-gateway\x00" + purpose, hashlib.sha256).digest()


class SetSideAuth:
    """Digest checks of phones against their set-side credentials."""

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        secret: bytes | None = None,
        nonce_lifetime: float = NONCE_LIFETIME,
        clock: Clock = time.time,
        on_failure: Callable[[str, str | None, str], object] | None = None,
    ) -> None:
        self.ctx = ctx
        # (source address, username, "sip"): failures toward bans (limen.gateway.guard).
        self.on_failure = on_failure
        self._secret = secret if secret is not None else derive_secret(ctx, b"digest-nonce")
        self._lifetime = nonce_lifetime
        self._clock = clock
        self._servers: dict[str, DigestServer] = {}
        self._templates: dict[tuple[str, bool], list[list[str]]] = {}
        self.failures = 0  # wrong credentials seen (for metrics / bans)

    # -- the digest server of the current realm -------------------------------------------
    def server(self, realm: str | None = None) -> DigestServer:
        realm = realm if realm is not None else self.ctx.realm
        server = self._servers.get(realm)
        if server is None:
            server = DigestServer(
                realm,
                self._secret,
                nonce_lifetime=self._lifetime,
                algorithms=tuple(self.ctx.settings.sip.digest_algorithms) or SET_SIDE_ALGORITHMS,
                replay_window=16,  # requests sharing a nonce may cross on UDP
            )
            self._servers[realm] = server
        return server

    def challenge_headers(self, *, proxy: bool, stale: bool = False) -> list[tuple[str, str]]:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        server = self.server()
        # Only the nonce differs from one challenge to the next: format the challenges
        # once per realm (format_challenge, the one formatter) and put each new nonce in
        # the nonce's place. Nonces are base64url, never quoted or escaped.
        key = (server.realm, stale)
        templates = self._templates.get(key)
        if templates is None:
            sample = server.challenges(self._clock(), stale=stale)
            templates = [format_challenge(ch).split(ch.nonce) for ch in sample]
            if any(len(parts) != 2 for parts in templates):  # nonce text seen twice: no
                return [(name, format_challenge(ch)) for ch in sample]
            self._templates[key] = templates
        nonce = server.new_nonce(self._clock())
        return [(name, nonce.join(parts)) for parts in templates]

    # -- the check -------------------------------------------------------------------------
    def verify(
        self, request: Request, *, proxy: bool
    ) -> tuple[DeviceCredentials | None, VerifyResult | None]:
        """(device, result) for the request's credentials in our realm; result None when
        the request carries none we can use. Pure apart from the digest server's nc memory."""
        server = self.server()
        try:
            offered = request.proxy_authorization if proxy else request.authorization
        except SipParseError:
            return None, None
        creds: DigestCredentials | None = next(
            (c for c in offered if c.realm == server.realm), None
        )
        if creds is None:
            return None, None
        device = self.ctx.directory.device_by_setside(creds.username)
        if creds.userhash:
            device = None  # userhash is not offered by us (RFC 7616 §3.4.4): treat as unknown
        result = server.verify(
            creds,
            method=request.method,
            now=self._clock(),
            password=device.setside_password if device is not None else None,
            body=request.body,
        )
        return device, result

    def check(
        self, txn: ServerTransaction, request: Request, source: Source, *, proxy: bool
    ) -> DeviceCredentials | None:
        """The authenticated device, or None after answering the request (401/407 with a
        challenge, or 403 for wrong credentials, the same for unknown users)."""
        device, result = self.verify(request, proxy=proxy)
        if result is VerifyResult.OK and device is not None:
            return device
        status = 407 if proxy else 401
        headers: list[tuple[str, str]]
        if result is VerifyResult.USED_NONCE:
            # A guess on a nonce that a wrong answer already burnt: no verdict, a new
            # challenge (one nonce buys one guess, DigestServer's max_failures_per_nonce).
            self._failed(request, source, proxy)
            headers = self.challenge_headers(proxy=proxy)
        elif result in (VerifyResult.BAD_RESPONSE, VerifyResult.UNKNOWN_USER):
            self._failed(request, source, proxy)
            log.info(
                "digest failure for %s %s from %s:%d",
                request.method,
                _username(request, proxy),
                *source.remote,
            )
            status, headers = 403, []
        else:
            headers = self.challenge_headers(proxy=proxy, stale=result is VerifyResult.STALE)
        self._respond(txn, request, status, headers)
        return None

    def _failed(self, request: Request, source: Source, proxy: bool) -> None:
        self.failures += 1
        if self.on_failure is not None:
            user = _username(request, proxy)
            self.on_failure(source.remote[0], None if user == "?" else user, "sip")

    def challenged_methods(self, device: DeviceCredentials) -> frozenset[str]:
        """The methods challenged for ``device``: its own list, else the global option."""
        methods = device.challenge_methods
        if not methods:  # None or empty: the global option (issue 9)
            methods = self.ctx.options.challenge_methods
        return frozenset(m.upper() for m in methods)

    def _respond(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
    ) -> None:
        # Statelessly (TransactionLayer.respond_stateless): an unauthenticated request
        # costs one answer and no state, never a retransmitted transaction (no reflection).
        respond(self.ctx, txn, request, status, None, headers, stateless=True)


def _username(request: Request, proxy: bool) -> str:
    try:
        offered = request.proxy_authorization if proxy else request.authorization
    except SipParseError:
        return "?"
    return offered[0].username if offered else "?"
