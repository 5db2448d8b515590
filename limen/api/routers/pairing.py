"""OAuth 1.0a pairing (MBG's web-services consumers, seed 2.9).

- ``POST /mslrest/initiate`` (signed by the consumer, ``oauth_callback=oob``): a temporary
  token, pending an admin's approval.
- ``GET /mslrest/authorize?oauth_token=...`` (admin): the token, its consumer, expiry.
- ``POST /mslrest/authorize?oauth_token=...&action=approve|reject`` (admin): approval
  returns the 6-digit verifier to type into the PBX.
- ``POST /mslrest/token`` (signed with the temporary token and ``oauth_verifier``): the
  final token, valid 12 months.
- ``POST /mslrest/managetoken/renew/`` (signed with the final token; needs Write on
  ``Base/managetoken/``): extends it by another 12 months.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Admin, Caller, CoreDep, OAuthDep, oauth1_scheme, oauth_inputs
from limen.store.schemas import TokenRecord

router = APIRouter(prefix="/mslrest", tags=["pairing"])

_FORM = "application/x-www-form-urlencoded"


def _token_reply(status: int, body: str, reason: str) -> Response:
    if status == 200:
        return Response(body, media_type=_FORM)
    raise HTTPException(status, reason, headers={"WWW-Authenticate": 'OAuth realm="limen"'})


@router.post(
    "/initiate",
    summary="Temporary token (OAuth 1.0a temporary credentials)",
    dependencies=[Depends(oauth1_scheme)],
)
async def initiate(request: Request, oauth: OAuthDep) -> Response:
    result = await run(oauth.initiate, *await oauth_inputs(request))
    return _token_reply(result.status, result.body, result.reason)


@router.post(
    "/token",
    summary="Final token in exchange for an approved temporary token",
    dependencies=[Depends(oauth1_scheme)],
)
async def token(request: Request, oauth: OAuthDep) -> Response:
    result = await run(oauth.token, *await oauth_inputs(request))
    return _token_reply(result.status, result.body, result.reason)


@router.get("/authorize", summary="A temporary token awaiting approval (admin)")
async def show_temporary(
    core: CoreDep, admin: Admin, oauth_token: Annotated[str, Query()]
) -> TokenRecord:
    record = await run(core.store.tokens.get, oauth_token)
    if record.kind != "temporary":
        raise HTTPException(404, "not a temporary token")
    return record


@router.post("/authorize", summary="Approve (giving the verifier) or reject a temporary token")
async def authorize(
    core: CoreDep,
    admin: Admin,
    oauth_token: Annotated[str, Query()],
    action: Annotated[Literal["approve", "reject"], Query()] = "approve",
) -> dict[str, Any]:
    if action == "reject":
        await run(core.store.tokens.reject, oauth_token, admin.actor)
        return {"oauth_token": oauth_token, "status": "rejected"}
    verifier = await run(core.store.tokens.approve, oauth_token, admin.actor)
    return {"oauth_token": oauth_token, "oauth_verifier": verifier, "status": "approved"}


@router.post("/managetoken/renew/", summary="Renew the final token this request is signed with")
async def renew(request: Request, core: CoreDep, caller: Caller) -> TokenRecord:
    if caller.kind != "consumer":
        raise HTTPException(422, "admins renew tokens at /mslrest/limen/v1/tokens/{token}/renew/")
    from oauthlib.oauth1.rfc5849.utils import (  # type: ignore[import-untyped]
        parse_authorization_header,
    )

    header = request.headers.get("authorization", "")
    params: dict[str, str] = {}
    if header[:6].lower() == "oauth ":
        try:
            params = dict(parse_authorization_header(header))
        except ValueError as exc:  # verified already, so not expected; never a 500
            raise HTTPException(401, f"malformed OAuth header: {exc}") from exc
    access = params.get("oauth_token") or request.query_params.get("oauth_token", "")
    lifetime = dt.timedelta(days=core.settings.api.access_token_days)
    return await run(lambda: core.store.tokens.renew(access, lifetime, caller.actor))
