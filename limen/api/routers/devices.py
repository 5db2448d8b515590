"""``/mslrest/mbg/v1/devices/sip/``: SIP devices by guid, set-side username or MAC.

Passwords are write-only: accepted in POST/PUT, never returned.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Caller, CoreDep
from limen.store.schemas import MAX_PAGE, DeviceCreate, DeviceRecord, DeviceUpdate

router = APIRouter(prefix="/mslrest/mbg/v1/devices/sip", tags=["devices"])

IcpFilter = Annotated[str | None, Query(description="only devices of this ICP (guid or name)")]


@router.get("/", summary="Device guids, usernames and MACs")
async def list_devices(core: CoreDep, caller: Caller, icp: IcpFilter = None) -> dict[str, Any]:
    devices = await run(lambda: core.store.devices.list(icp=icp))
    return {
        "response": [
            {"guid": d.guid, "setside_username": d.setside_username, "clientid": d.clientid}
            for d in devices
        ]
    }


@router.get("/count/")
async def count_devices(core: CoreDep, caller: Caller, icp: IcpFilter = None) -> dict[str, int]:
    return {"count": await run(lambda: core.store.devices.count(icp=icp))}


@router.get("/all/", summary="Every device, in full (paged with offset/limit)")
async def all_devices(
    core: CoreDep,
    caller: Caller,
    icp: IcpFilter = None,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=100000)] = None,
) -> dict[str, list[DeviceRecord]]:
    devices = await run(lambda: core.store.devices.list(icp=icp, offset=offset, limit=limit))
    return {"response": devices}


@router.get("/{key}/", summary="One device by guid, set-side username or MAC")
async def get_device(key: str, core: CoreDep, caller: Caller) -> DeviceRecord:
    return await run(core.store.devices.get, key)


@router.post("/", status_code=201)
async def create_device(body: DeviceCreate, core: CoreDep, caller: Caller) -> DeviceRecord:
    return await run(core.store.devices.create, body, caller.actor)


@router.put("/{key}/", summary="Change some fields; null resets a per-device option")
async def update_device(
    key: str, body: DeviceUpdate, core: CoreDep, caller: Caller
) -> DeviceRecord:
    return await run(core.store.devices.update, key, body, caller.actor)


@router.delete("/{key}/")
async def delete_device(key: str, core: CoreDep, caller: Caller) -> dict[str, str]:
    device = await run(core.store.devices.get, key)
    await run(core.store.devices.delete, device.guid, caller.actor)
    return {"deleted": device.guid}
