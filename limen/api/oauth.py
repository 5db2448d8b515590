"""OAuth 1.0a (RFC 5849) server side on ``oauthlib``, as MBG uses it to pair a PBX.

Three-legged, out-of-band flow (seed 2.9):

1. the consumer (PBX) signs ``POST /mslrest/initiate`` with ``oauth_callback=oob`` and
   gets a *temporary token*, pending for ``api.temporary_token_ttl`` (15 min);
2. an admin approves it (CLI ``limen token approve``, API ``POST /mslrest/authorize``),
   which produces a 6-digit *verifier* the admin types into the PBX;
3. the consumer signs ``POST /mslrest/token`` with the temporary token and verifier and
   gets the *final token*, valid ``api.access_token_days`` (12 months), renewable.

Signature methods: HMAC-SHA1 (what MBG clients use), HMAC-SHA256, and RSA-SHA1 when
the consumer has an RSA public key (verified with ``cryptography``: oauthlib's own RSA
path needs PyJWT, which Limen does not ship). Nonces are remembered within the timestamp
window, so a replayed request fails. Failures carry a reason (``OAuthResult.reason``).
"""

from __future__ import annotations

import binascii
import contextvars
import datetime as dt
import hmac
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from oauthlib.common import Request as OAuthRequest  # type: ignore[import-untyped]
from oauthlib.oauth1 import (  # type: ignore[import-untyped]
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    SIGNATURE_RSA,
    AccessTokenEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)
from oauthlib.oauth1.rfc5849 import errors, signature  # type: ignore[import-untyped]

from limen.config import Settings
from limen.store import Store
from limen.store.repository import ConsumerAuth, TokenState
from limen.store.schemas import Permission

_reasons: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "limen_oauth_reasons", default=None
)


def _refuse(reason: str) -> bool:
    found = _reasons.get()
    if found is not None:
        found.append(reason)
    return False


def verify_rsa_sha1(request: OAuthRequest, public_key_pem: str | None) -> bool:
    """RFC 5849 §3.4.3 verification with ``cryptography`` (RSASSA-PKCS1-v1_5, SHA-1)."""
    if not public_key_pem:
        return _refuse("consumer has no RSA public key for RSA-SHA1")
    base = signature.signature_base_string(
        request.http_method,
        signature.base_string_uri(request.uri),
        signature.normalize_parameters(request.params),
    )
    try:
        key = load_pem_public_key(public_key_pem.encode())
        sig = binascii.a2b_base64(request.signature.encode("ascii"))
    except (ValueError, binascii.Error):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(sig, base.encode("ascii"), padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return False
    return True


_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


def _normal_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def uri_spellings(uri: str) -> list[str]:
    """The request URI as sent, then (if different) its path in RFC 3986 §6.2.2 normal
    form: escapes of unreserved characters decoded, other escapes in upper-case hex.
    Scheme, host and default port are normalised by the base string rules themselves
    (RFC 5849 §3.4.1.2)."""
    head, sep, query = uri.partition("?")
    normal = _PCT.sub(_normal_escape, head) + sep + query
    return [uri] if normal == uri else [uri, normal]


class _RsaByCryptography:
    """Mixin for oauthlib endpoints: RSA-SHA1 checked with cryptography, rest unchanged."""

    request_validator: LimenValidator

    def _check_signature(self, request: OAuthRequest, is_token_request: bool = False) -> bool:
        # The URI as sent first; then its RFC 3986 §6.2.2 normal form, for a client that
        # signed the normal form while its HTTP library sent another spelling of the
        # same URI (%7e for ~, lower-case hex). Both are the same resource.
        sent = request.uri
        for uri in uri_spellings(sent):
            request.uri = uri
            if request.signature_method == SIGNATURE_RSA:
                valid = verify_rsa_sha1(
                    request, self.request_validator.get_rsa_key(request.client_key, request)
                )
            else:
                valid = super()._check_signature(request, is_token_request)  # type: ignore[misc]
            if valid:
                return True
        request.uri = sent
        return _refuse("invalid signature")


class _RequestTokenEndpoint(_RsaByCryptography, RequestTokenEndpoint):
    pass


class _AccessTokenEndpoint(_RsaByCryptography, AccessTokenEndpoint):
    pass


class _ResourceEndpoint(_RsaByCryptography, ResourceEndpoint):
    pass


_DUMMY = "dummy"


class LimenValidator(RequestValidator):
    """oauthlib's questions answered from the store. Every "no" records its reason."""

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__()
        self.store = store
        self.settings = settings

    # -- formats -------------------------------------------------------------------------
    allowed_signature_methods = (SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256, SIGNATURE_RSA)
    safe_characters = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    client_key_length = (3, 64)
    request_token_length = (20, 64)
    access_token_length = (20, 64)
    nonce_length = (6, 128)
    verifier_length = (6, 6)
    enforce_ssl = True

    @property
    def timestamp_lifetime(self) -> int:  # type: ignore[override]
        return self.settings.api.timestamp_lifetime

    @property
    def dummy_client(self) -> str:
        return "dummy_client"

    @property
    def dummy_request_token(self) -> str:
        return "dummy_request_token_000000"

    @property
    def dummy_access_token(self) -> str:
        return "dummy_access_token_0000000"

    def check_nonce(self, nonce: str) -> bool:
        lower, upper = self.nonce_length
        return lower <= len(nonce) <= upper and all(33 <= ord(c) < 127 for c in nonce)

    # -- consumers -----------------------------------------------------------------------
    def _consumer(self, client_key: str, request: OAuthRequest) -> ConsumerAuth | None:
        cache: dict[str, ConsumerAuth | None] = request.__dict__.setdefault("_limen_consumers", {})
        if client_key not in cache:
            cache[client_key] = self.store.consumers.auth(client_key)
        return cache[client_key]

    def validate_client_key(self, client_key: str, request: OAuthRequest) -> bool:
        consumer = self._consumer(client_key, request)
        if consumer is None:
            return _refuse(f"unknown consumer {client_key!r}")
        if not consumer.active:
            return _refuse(f"consumer {consumer.name!r} is inactive")
        return True

    def get_client_secret(self, client_key: str, request: OAuthRequest) -> str:
        consumer = self._consumer(client_key, request)
        return consumer.secret if consumer is not None else _DUMMY

    def get_rsa_key(self, client_key: str, request: OAuthRequest) -> str | None:
        consumer = self._consumer(client_key, request)
        return consumer.rsa_public_key if consumer is not None else None

    # -- tokens --------------------------------------------------------------------------
    def _token(self, token: str, request: OAuthRequest) -> TokenState | None:
        cache: dict[str, TokenState | None] = request.__dict__.setdefault("_limen_tokens", {})
        if token not in cache:
            cache[token] = self.store.tokens.state(token)
        return cache[token]

    def _token_secret(self, client_key: str, token: str, request: OAuthRequest, kind: str) -> str:
        state = self._token(token, request)
        if state is None or state.consumer_key != client_key or state.kind != kind:
            return _DUMMY
        return state.secret

    def get_request_token_secret(self, client_key: str, token: str, request: OAuthRequest) -> str:
        return self._token_secret(client_key, token, request, "temporary")

    def get_access_token_secret(self, client_key: str, token: str, request: OAuthRequest) -> str:
        return self._token_secret(client_key, token, request, "access")

    def validate_request_token(self, client_key: str, token: str, request: OAuthRequest) -> bool:
        state = self._token(token, request)
        if state is None or state.kind != "temporary" or state.consumer_key != client_key:
            return _refuse("unknown temporary token")
        if state.expired(dt.datetime.now(dt.UTC)):
            return _refuse("temporary token has expired; request a new one")
        if state.status == "pending":
            return _refuse("temporary token is not approved yet")
        if state.status != "approved":
            return _refuse(f"temporary token is {state.status}")
        return True

    def validate_access_token(self, client_key: str, token: str, request: OAuthRequest) -> bool:
        state = self._token(token, request)
        if state is None or state.kind != "access" or state.consumer_key != client_key:
            return _refuse("unknown or revoked access token")
        if state.status != "active":
            return _refuse(f"access token is {state.status}")
        if state.expired(dt.datetime.now(dt.UTC)):
            return _refuse("access token has expired; pair again or have an admin renew it")
        return True

    def validate_verifier(
        self, client_key: str, token: str, verifier: str, request: OAuthRequest
    ) -> bool:
        state = self._token(token, request)
        if state is None or state.verifier is None:
            return _refuse("no verifier was issued for this token")
        if not hmac.compare_digest(state.verifier, verifier):
            return _refuse("wrong verifier")
        return True

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: OAuthRequest,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        fresh = self.store.nonces.use(
            client_key,
            nonce,
            int(timestamp),
            request_token or access_token or "",
            self.settings.api.timestamp_lifetime,
        )
        return fresh or _refuse("nonce already used: replayed request")

    def validate_redirect_uri(self, client_key: str, redirect_uri: str, request: Any) -> bool:
        return redirect_uri == "oob" or _refuse("only oauth_callback=oob is supported")

    def get_redirect_uri(self, token: str, request: OAuthRequest) -> str:
        return "oob"

    # -- realms (unused: permissions are per path) ---------------------------------------
    def get_default_realms(self, client_key: str, request: OAuthRequest) -> list[str]:
        return []

    def get_realms(self, token: str, request: OAuthRequest) -> list[str]:
        return []

    def validate_requested_realms(
        self, client_key: str, realms: list[str], request: OAuthRequest
    ) -> bool:
        return True

    def validate_realms(self, *args: Any, **kwargs: Any) -> bool:
        return True

    # -- saving --------------------------------------------------------------------------
    def save_request_token(self, token: dict[str, str], request: OAuthRequest) -> None:
        self.store.tokens.create_temporary(
            request.client_key,
            token["oauth_token"],
            token["oauth_token_secret"],
            request.redirect_uri or "oob",
            dt.timedelta(seconds=self.settings.api.temporary_token_ttl),
        )

    def save_access_token(self, token: dict[str, str], request: OAuthRequest) -> None:
        self.store.tokens.exchange(
            request.client_key,
            request.resource_owner_key,
            request.verifier,
            token["oauth_token"],
            token["oauth_token_secret"],
            dt.timedelta(days=self.settings.api.access_token_days),
        )

    def invalidate_request_token(
        self, client_key: str, request_token: str, request: OAuthRequest
    ) -> None:
        # Already done atomically by save_access_token (TokenRepository.exchange).
        return None

    def save_verifier(self, token: str, verifier: dict[str, str], request: OAuthRequest) -> None:
        raise NotImplementedError("verifiers are issued by an admin's approval")


@dataclass(frozen=True, slots=True)
class OAuthResult:
    status: int
    body: str = ""
    headers: dict[str, str] | None = None
    reason: str = ""
    consumer: ConsumerAuth | None = None


class OAuthServer:
    """The three endpoints and resource verification, all synchronous (run them in a
    worker thread: they touch the store)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.validator = LimenValidator(store, settings)
        self.settings = settings
        self._request_token = _RequestTokenEndpoint(self.validator)
        self._access_token = _AccessTokenEndpoint(self.validator)
        self._resource = _ResourceEndpoint(self.validator)
        self.store = store

    @staticmethod
    def _collect() -> tuple[list[str], contextvars.Token[list[str] | None]]:
        found: list[str] = []
        return found, _reasons.set(found)

    def _token_response(
        self, endpoint: Any, uri: str, method: str, body: str, headers: dict[str, str], **kw: Any
    ) -> OAuthResult:
        found, reset = self._collect()
        try:
            out_headers, out_body, status = endpoint(uri, method, body, headers, **kw)
        except Exception as exc:  # a race with another exchange, or a store conflict
            return OAuthResult(401, reason=str(exc))
        finally:
            _reasons.reset(reset)
        if status == 200:
            return OAuthResult(200, out_body or "", out_headers)
        reason = found[0] if found else _error_description(out_body) or "request refused"
        return OAuthResult(status, reason=reason)

    def initiate(self, uri: str, method: str, body: str, headers: dict[str, str]) -> OAuthResult:
        return self._token_response(
            self._request_token.create_request_token_response, uri, method, body, headers
        )

    def token(self, uri: str, method: str, body: str, headers: dict[str, str]) -> OAuthResult:
        lifetime = dt.timedelta(days=self.settings.api.access_token_days)
        return self._token_response(
            self._access_token.create_access_token_response,
            uri,
            method,
            body,
            headers,
            credentials={"oauth_expires_in": str(int(lifetime.total_seconds()))},
        )

    def verify(self, uri: str, method: str, body: str, headers: dict[str, str]) -> OAuthResult:
        """Check a signed request to a protected resource (signature, nonce, token)."""
        found, reset = self._collect()
        try:
            try:
                request = self._resource._create_request(uri, method, body, headers)
                self._resource._check_transport_security(request)
                self._resource._check_mandatory_parameters(request)
            except errors.OAuth1Error as exc:
                return OAuthResult(exc.status_code, reason=exc.description or exc.error)
            except ValueError as exc:
                # oauthlib's parsers raise bare ValueErrors on a malformed Authorization
                # header or query ("Malformed authorization header", bad %-escapes).
                return OAuthResult(401, reason=str(exc) or "malformed OAuth parameters")
            if not request.resource_owner_key:
                return OAuthResult(401, reason="no oauth_token: pair first (/mslrest/initiate)")
            valid, request = self._resource.validate_protected_resource_request(
                uri, method, body, headers
            )
        finally:
            _reasons.reset(reset)
        if not valid or request is None:
            return OAuthResult(401, reason=found[0] if found else "invalid signature")
        consumer = self.store.consumers.auth(request.client_key)
        return OAuthResult(200, consumer=consumer)


def _error_description(body: str | None) -> str:
    if not body:
        return ""
    from urllib.parse import parse_qs

    fields = parse_qs(body)
    return (fields.get("error_description") or fields.get("error") or [""])[0]


def permitted(permissions: tuple[Permission, ...], path: str, method: str) -> str | None:
    """None when a consumer with ``permissions`` may ``method`` the ``path`` (relative to
    ``/mslrest``); otherwise the name of the missing permission for the 403 message."""
    write = method.upper() not in ("GET", "HEAD", "OPTIONS")
    wanted = "Write" if write else "Read"
    candidate = path if path.endswith("/") else path + "/"
    for permission in permissions:
        if candidate.startswith(permission.path) and (
            permission.write if write else permission.read
        ):
            return None
    return f"{wanted} permission on {path}"
