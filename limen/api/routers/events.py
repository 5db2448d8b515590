"""``/mslrest/msl/v1/events/``: alarms and the audit log; PUT clears alarms."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Caller, CoreDep
from limen.store.schemas import MAX_PAGE, EventRecord

router = APIRouter(prefix="/mslrest/msl/v1/events", tags=["events"])

Kind = Annotated[Literal["alarm", "audit"] | None, Query()]
Cleared = Annotated[bool | None, Query()]


class ClearBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    cleared: Literal[True]


@router.get("/")
async def list_events(
    core: CoreDep,
    caller: Caller,
    kind: Kind = None,
    cleared: Cleared = None,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, list[EventRecord]]:
    events = await run(
        lambda: core.store.events.list(kind=kind, cleared=cleared, offset=offset, limit=limit)
    )
    return {"response": events}


@router.get("/count/")
async def count_events(
    core: CoreDep, caller: Caller, kind: Kind = None, cleared: Cleared = None
) -> dict[str, int]:
    return {"count": await run(lambda: core.store.events.count(kind=kind, cleared=cleared))}


@router.get("/{guid}/")
async def get_event(guid: str, core: CoreDep, caller: Caller) -> EventRecord:
    return await run(core.store.events.get, guid)


@router.put("/", summary="Clear every alarm")
async def clear_all(body: ClearBody, core: CoreDep, caller: Caller) -> dict[str, int]:
    return {"cleared": await run(lambda: core.store.events.clear(None, caller.actor))}


@router.put("/{guid}/", summary="Clear one alarm")
async def clear_one(guid: str, body: ClearBody, core: CoreDep, caller: Caller) -> EventRecord:
    await run(lambda: core.store.events.clear(guid, caller.actor))
    return await run(core.store.events.get, guid)
