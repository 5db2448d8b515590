"""``/mslrest/mbg/v1/globaloptions/``: MBG's SIP settings (defaults: seed figure 11)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Caller, CoreDep
from limen.store.options import GlobalOptions, canonical_option

router = APIRouter(prefix="/mslrest/mbg/v1/globaloptions", tags=["globaloptions"])


@router.get("/")
async def get_options(core: CoreDep, caller: Caller) -> GlobalOptions:
    return await run(core.store.options.get)


@router.get("/{prop}/", summary="One option as a name/value pair")
async def get_option(prop: str, core: CoreDep, caller: Caller) -> dict[str, Any]:
    prop = canonical_option(prop)  # pre-issue-11 names still answer
    if prop not in GlobalOptions.model_fields:
        raise HTTPException(404, f"no global option {prop!r}")
    options = await run(core.store.options.get)
    return {"name": prop, "value": options.model_dump(mode="json")[prop]}


@router.put(
    "/",
    summary="Set options",
    description='Either an object {"name": value, ...} or a list [{"name": n, "value": v}].',
)
async def set_options(
    core: CoreDep,
    caller: Caller,
    body: Annotated[dict[str, Any] | list[dict[str, Any]], Body()],
) -> GlobalOptions:
    if isinstance(body, list):
        pairs: dict[str, Any] = {}
        for index, item in enumerate(body):
            if set(item) != {"name", "value"} or not isinstance(item["name"], str):
                raise HTTPException(
                    422, f"item {index}: expected an object with exactly 'name' and 'value'"
                )
            pairs[item["name"]] = item["value"]
        body = pairs
    if not body:
        raise HTTPException(422, "no option given")
    return await run(lambda: core.store.options.set(body, caller.actor, strict=True))
