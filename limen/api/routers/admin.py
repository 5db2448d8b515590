"""Limen's own admin resources (not in MBG's API): sessions, consumers, tokens, overrides.

All under ``/mslrest/limen/v1/``; everything but opening a session needs an admin bearer
token. Shared secrets are shown once, when a consumer is created.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Admin, CoreDep, auth_failed, client_address
from limen.store.schemas import (
    ConsumerCreate,
    ConsumerRecord,
    OverrideCreate,
    OverrideRecord,
    Permission,
    TokenRecord,
    TokenStatus,
)

log = logging.getLogger("limen.api")

router = APIRouter(prefix="/mslrest/limen/v1", tags=["admin"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class Session(BaseModel):
    token: str
    expires_at: dt.datetime | None


@router.post("/session/", summary="Open an admin session with a password")
async def login(body: Login, core: CoreDep, request: Request) -> Session:
    if core.security is not None and core.security.banned(client_address(request) or ""):
        raise HTTPException(403, "this address is banned")  # no argon2 work for it
    admin = await run(core.store.admins.authenticate, body.username, body.password)
    if admin is None:
        auth_failed(request, core, body.username, "login")
        log.warning("admin login failed for %r from %s", body.username, client_address(request))
        raise HTTPException(401, "wrong username or password")
    ttl = dt.timedelta(seconds=core.settings.api.session_ttl)
    token, record = await run(
        lambda: core.store.admins.issue_token(body.username, kind="session", ttl=ttl)
    )
    return Session(token=token, expires_at=record.expires_at)


@router.delete("/session/", summary="Close the session this request uses")
async def logout(request: Request, core: CoreDep, admin: Admin) -> dict[str, str]:
    token = request.headers["authorization"][7:].strip()
    await run(lambda: core.store.admins.revoke_token(token=token, actor=admin.actor))
    return {"status": "closed"}


# -- consumers -------------------------------------------------------------------------


class ConsumerCreated(ConsumerRecord):
    shared_secret: str


class ConsumerChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    active: bool | None = None
    permissions: list[Permission] | None = None
    shared_secret: str | None = Field(None, min_length=8, max_length=128)


@router.get("/consumers/")
async def list_consumers(core: CoreDep, admin: Admin) -> dict[str, list[ConsumerRecord]]:
    return {"response": await run(core.store.consumers.list)}


@router.get("/consumers/{key}/")
async def get_consumer(key: str, core: CoreDep, admin: Admin) -> ConsumerRecord:
    return await run(core.store.consumers.get, key)


@router.post("/consumers/", status_code=201, summary="Add a consumer (secret shown once)")
async def create_consumer(body: ConsumerCreate, core: CoreDep, admin: Admin) -> ConsumerCreated:
    record, secret = await run(core.store.consumers.create, body, admin.actor)
    return ConsumerCreated(**record.model_dump(), shared_secret=secret)


@router.put("/consumers/{key}/")
async def update_consumer(
    key: str, body: ConsumerChange, core: CoreDep, admin: Admin
) -> ConsumerRecord:
    return await run(
        lambda: core.store.consumers.update(
            key,
            active=body.active,
            permissions=body.permissions,
            shared_secret=body.shared_secret,
            actor=admin.actor,
        )
    )


@router.delete("/consumers/{key}/")
async def delete_consumer(key: str, core: CoreDep, admin: Admin) -> dict[str, str]:
    record = await run(core.store.consumers.get, key)
    await run(core.store.consumers.delete, record.guid, admin.actor)
    return {"deleted": record.guid}


# -- tokens ----------------------------------------------------------------------------


@router.get("/tokens/")
async def list_tokens(
    core: CoreDep,
    admin: Admin,
    kind: Annotated[Literal["temporary", "access"] | None, Query()] = None,
    status: Annotated[TokenStatus | None, Query()] = None,
) -> dict[str, list[TokenRecord]]:
    return {"response": await run(lambda: core.store.tokens.list(kind=kind, status=status))}


@router.get("/tokens/{token}/")
async def get_token(token: str, core: CoreDep, admin: Admin) -> TokenRecord:
    return await run(core.store.tokens.get, token)


@router.post("/tokens/{token}/approve/", summary="Approve; returns the 6-digit verifier")
async def approve_token(token: str, core: CoreDep, admin: Admin) -> dict[str, Any]:
    verifier = await run(core.store.tokens.approve, token, admin.actor)
    return {"oauth_token": token, "oauth_verifier": verifier, "status": "approved"}


@router.post("/tokens/{token}/reject/")
async def reject_token(token: str, core: CoreDep, admin: Admin) -> dict[str, Any]:
    await run(core.store.tokens.reject, token, admin.actor)
    return {"oauth_token": token, "status": "rejected"}


@router.post("/tokens/{token}/renew/", summary="Extend a final token by 12 months from now")
async def renew_token(token: str, core: CoreDep, admin: Admin) -> TokenRecord:
    lifetime = dt.timedelta(days=core.settings.api.access_token_days)
    return await run(lambda: core.store.tokens.renew(token, lifetime, admin.actor))


@router.delete("/tokens/{token}/", summary="Revoke a token")
async def revoke_token(token: str, core: CoreDep, admin: Admin) -> dict[str, str]:
    await run(core.store.tokens.revoke, token, admin.actor)
    return {"deleted": token}


# -- overrides -------------------------------------------------------------------------


@router.get("/overrides/")
async def list_overrides(
    core: CoreDep, admin: Admin, file: Annotated[str | None, Query()] = None
) -> dict[str, list[OverrideRecord]]:
    return {"response": await run(lambda: core.store.overrides.list(file))}


@router.post("/overrides/", status_code=201)
async def add_override(body: OverrideCreate, core: CoreDep, admin: Admin) -> OverrideRecord:
    return await run(core.store.overrides.add, body, admin.actor)


@router.delete("/overrides/{guid}/")
async def remove_override(guid: str, core: CoreDep, admin: Admin) -> dict[str, str]:
    await run(core.store.overrides.remove, guid, admin.actor)
    return {"deleted": guid}
