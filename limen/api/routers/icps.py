"""``/mslrest/mbg/v1/icps/``: the call servers (MBG's ICPs), by guid or name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Caller, CoreDep
from limen.store.schemas import IcpCreate, IcpRecord, IcpUpdate

router = APIRouter(prefix="/mslrest/mbg/v1/icps", tags=["icps"])


@router.get("/", summary="ICP names and guids")
async def list_icps(core: CoreDep, caller: Caller) -> dict[str, Any]:
    icps = await run(core.store.icps.list)
    return {"response": [{"guid": i.guid, "name": i.name} for i in icps]}


@router.get("/count/")
async def count_icps(core: CoreDep, caller: Caller) -> dict[str, int]:
    return {"count": await run(core.store.icps.count)}


@router.get("/all/", summary="Every ICP, in full")
async def all_icps(core: CoreDep, caller: Caller) -> dict[str, list[IcpRecord]]:
    return {"response": await run(core.store.icps.list)}


@router.get("/{key}/", summary="One ICP by guid or name")
async def get_icp(key: str, core: CoreDep, caller: Caller) -> IcpRecord:
    return await run(core.store.icps.get, key)


@router.post("/", status_code=201)
async def create_icp(body: IcpCreate, core: CoreDep, caller: Caller) -> IcpRecord:
    return await run(core.store.icps.create, body, caller.actor)


@router.put("/{key}/", summary="Change some fields of an ICP")
async def update_icp(key: str, body: IcpUpdate, core: CoreDep, caller: Caller) -> IcpRecord:
    return await run(core.store.icps.update, key, body, caller.actor)


@router.delete("/{key}/", summary="Delete an ICP (and, with confirm=true, its devices)")
async def delete_icp(
    key: str,
    core: CoreDep,
    caller: Caller,
    confirm: Annotated[bool, Query(description="also delete the ICP's devices")] = False,
) -> dict[str, Any]:
    icp = await run(core.store.icps.get, key)
    removed = await run(lambda: core.store.icps.delete(key, caller.actor, with_devices=confirm))
    return {"deleted": icp.guid, "devices_deleted": removed}
