"""Who is calling: an admin (bearer session or API token) or an OAuth 1.0a consumer.

- Admins get a bearer token from ``POST /mslrest/limen/v1/session/`` (username and
  password, argon2-checked) or from ``limen admin token add`` (for scripts). Admins may
  use every endpoint.
- Consumers sign each request (OAuth 1.0a with their final token) and may only use the
  paths their permissions grant: Read for GET/HEAD, Write for POST/PUT/DELETE; a 403
  names the missing permission. Inactive consumers are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from fastapi.security.http import HTTPBase
from starlette.concurrency import run_in_threadpool

from limen.api.oauth import OAuthServer, permitted
from limen.core import Core

API_PREFIX = "/mslrest"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["admin", "consumer"]
    name: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


# Declared for the OpenAPI document only (the checks are below): "OAuth" is the HTTP
# authentication scheme RFC 5849 §3.5.1 registers; "Bearer" carries admin sessions.
oauth1_scheme = HTTPBase(
    scheme="OAuth",
    scheme_name="oauth1",
    description="OAuth 1.0a (RFC 5849) signed request: HMAC-SHA1, HMAC-SHA256 or RSA-SHA1, "
    "with a final token from the pairing (/mslrest/initiate, admin approval, /mslrest/token). "
    "The signature covers the URI as sent (percent-encoded path).",
    auto_error=False,
)
session_scheme = HTTPBearer(
    scheme_name="session",
    description="Admin bearer token: POST /mslrest/limen/v1/session/ (username, password) "
    "or `limen admin token add`.",
    auto_error=False,
)


def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def get_oauth(request: Request) -> OAuthServer:
    server: OAuthServer = request.app.state.oauth
    return server


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail=reason,
        headers={"WWW-Authenticate": 'OAuth realm="limen", Bearer realm="limen"'},
    )


def raw_path(request: Request) -> str:
    """The path exactly as it was on the request line, percent-encoding untouched.

    The route sees the decoded path (``/devices/sip/a+1/``) but a client signs what it
    sends (``/devices/sip/a%2B1/``): RFC 5849 §3.4.1.2 builds the base string URI from
    the request as sent. Bytes outside printable ASCII (an HTTP request line should have
    none) are percent-encoded as a client would have."""
    raw = request.scope.get("raw_path")
    if not raw:
        return quote(request.scope.get("path", "/"), safe="/!$&'()*+,;=:@~-._%")
    return "".join(chr(b) if 0x20 < b < 0x7F else f"%{b:02X}" for b in raw)


def request_uri(request: Request) -> str:
    """The URI as the client signed it: scheme, host and port as the client saw them
    (Host header), the raw path and the query string as sent."""
    url = request.url
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{url.scheme}://{url.netloc}{raw_path(request)}" + (f"?{query}" if query else "")


async def oauth_inputs(request: Request) -> tuple[str, str, str, dict[str, str]]:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    # Only form bodies take part in OAuth 1.0a signatures (RFC 5849 §3.4.1.3.1).
    text = body.decode("utf-8", "replace") if "x-www-form-urlencoded" in content_type else ""
    headers = {k: v for k, v in request.headers.items()}
    return request_uri(request), request.method, text, headers


def client_address(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def auth_failed(request: Request, core: Core, user: str | None, kind: str) -> None:
    """Count a failed authentication of this request's source toward bans (issue 10)."""
    core.auth_failure(client_address(request), user, kind)


async def _admin_from_bearer(core: Core, token: str, request: Request) -> Principal:
    username = await run_in_threadpool(core.store.admins.resolve_token, token)
    if username is None:
        auth_failed(request, core, None, "api-token")
        raise _unauthorized("unknown or expired admin token")
    return Principal("admin", username)


def _has_oauth(request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    return auth[:6].lower() == "oauth " or "oauth_signature" in request.query_params


async def authenticate(
    request: Request,
    core: Annotated[Core, Depends(get_core)],
    oauth: Annotated[OAuthServer, Depends(get_oauth)],
) -> Principal:
    """Any caller allowed by its credentials and, for consumers, by its permissions."""
    return await _authenticate(request, core, oauth, check_permissions=True)


async def authenticate_signed(
    request: Request,
    core: Annotated[Core, Depends(get_core)],
    oauth: Annotated[OAuthServer, Depends(get_oauth)],
) -> Principal:
    """Any caller with valid credentials, whatever its permissions (``/mslrest/ping``:
    MBG's client checks its pairing with it, and no permission of the seed's list
    names it)."""
    return await _authenticate(request, core, oauth, check_permissions=False)


async def _authenticate(
    request: Request, core: Core, oauth: OAuthServer, *, check_permissions: bool
) -> Principal:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return await _admin_from_bearer(core, auth[7:].strip(), request)
    if not _has_oauth(request):
        raise _unauthorized("authentication required: an OAuth 1.0a signature or a bearer token")
    uri, method, body, headers = await oauth_inputs(request)
    result = await run_in_threadpool(oauth.verify, uri, method, body, headers)
    if result.status != 200 or result.consumer is None:
        auth_failed(request, core, None, "api-signature")
        raise _unauthorized(result.reason or "invalid signature")
    consumer = result.consumer
    if not consumer.active:
        raise HTTPException(403, f"consumer {consumer.name!r} is inactive")
    if check_permissions:
        path = request.url.path.removeprefix(API_PREFIX) or "/"
        missing = permitted(consumer.permissions, path, request.method)
        if missing is not None:
            raise HTTPException(403, f"consumer {consumer.name!r} lacks {missing}")
    return Principal("consumer", consumer.name)


async def authenticate_admin(
    request: Request, core: Annotated[Core, Depends(get_core)]
) -> Principal:
    """Admins only (bearer token): consumer and token management, overrides, metrics."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() != "bearer ":
        if _has_oauth(request):
            raise HTTPException(403, "this endpoint is for admins, not consumers")
        raise _unauthorized("admin authentication required (bearer token)")
    return await _admin_from_bearer(core, auth[7:].strip(), request)


async def _any_scheme(
    _oauth: Annotated[object, Depends(oauth1_scheme)],
    _session: Annotated[object, Depends(session_scheme)],
) -> None:
    return None


async def _session_scheme(_session: Annotated[object, Depends(session_scheme)]) -> None:
    return None


async def _caller(
    principal: Annotated[Principal, Depends(authenticate)],
    _schemes: Annotated[None, Depends(_any_scheme)],
) -> Principal:
    return principal


async def _signed(
    principal: Annotated[Principal, Depends(authenticate_signed)],
    _schemes: Annotated[None, Depends(_any_scheme)],
) -> Principal:
    return principal


async def _admin(
    principal: Annotated[Principal, Depends(authenticate_admin)],
    _schemes: Annotated[None, Depends(_session_scheme)],
) -> Principal:
    return principal


Caller = Annotated[Principal, Depends(_caller)]
Signed = Annotated[Principal, Depends(_signed)]
Admin = Annotated[Principal, Depends(_admin)]
CoreDep = Annotated[Core, Depends(get_core)]
OAuthDep = Annotated[OAuthServer, Depends(get_oauth)]
