"""Bans in force (issue 10): ``/mslrest/limen/v1/bans/`` — list, ban, lift. Admins only.

The same operations as ``limen ban list|add|remove``. An API that runs without a SIP side
(no guard in this process) lists no bans and answers 409 to changes.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from limen.api.auth import Admin, CoreDep
from limen.core import Core, SecurityHooks

router = APIRouter(prefix="/mslrest/limen/v1", tags=["security"])


class BanOut(BaseModel):
    address: str
    reason: str = Field(description="auth, user-guess, flood or manual")
    since: float = Field(description="Unix time the ban started")
    until: float = Field(description="Unix time the ban ends")
    offences: int = Field(description="Bans of this source within the repeat memory")
    detail: str


class BanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(description="IPv4 or IPv6 address to ban")
    seconds: float | None = Field(
        default=None,
        gt=0,
        le=365 * 86400,
        allow_inf_nan=False,
        description="Ban length; default: the configured ban_time",
    )
    detail: str = Field(default="", max_length=200)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip().strip("[]")))
        except ValueError:
            raise ValueError("an IPv4 or IPv6 address") from None


def _guard(core: Core) -> SecurityHooks:
    if core.security is None:
        raise HTTPException(409, "no SIP side in this process: bans cannot be changed here")
    return core.security


def _out(ban: Any) -> BanOut:
    return BanOut(
        address=ban.address,
        reason=str(ban.reason),
        since=ban.since,
        until=ban.until,
        offences=ban.offences,
        detail=ban.detail,
    )


@router.get("/bans/", summary="Bans in force, newest first")
async def list_bans(core: CoreDep, admin: Admin) -> dict[str, list[BanOut]]:
    guard = core.security
    return {"response": [_out(b) for b in guard.list_bans()] if guard is not None else []}


@router.post("/bans/", status_code=201, summary="Ban an address")
async def add_ban(body: BanIn, core: CoreDep, admin: Admin) -> BanOut:
    detail = body.detail or f"manual ({admin.actor})"
    return _out(_guard(core).ban(body.address, body.seconds, detail))


@router.delete("/bans/{address}/", summary="Lift a ban")
async def remove_ban(
    address: Annotated[str, Path(max_length=64)], core: CoreDep, admin: Admin
) -> dict[str, str]:
    guard = _guard(core)
    try:
        canonical = str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        raise HTTPException(422, f"not an IP address: {address!r}") from None
    if not guard.unban(canonical):
        raise HTTPException(404, f"{canonical} is not banned")
    return {"address": canonical, "status": "lifted"}
