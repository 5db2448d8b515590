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

from fastapi import Depends, HTTPException, Request
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


def request_uri(request: Request) -> str:
    """The URI as the client signed it (scheme, host and port as the client saw them)."""
    return str(request.url)


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


Caller = Annotated[Principal, Depends(authenticate)]
Admin = Annotated[Principal, Depends(authenticate_admin)]
CoreDep = Annotated[Core, Depends(get_core)]
OAuthDep = Annotated[OAuthServer, Depends(get_oauth)]
