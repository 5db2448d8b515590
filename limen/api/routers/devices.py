"""``/mslrest/mbg/v1/devices/sip/``: SIP devices by guid, set-side username or MAC.

Passwords are write-only: accepted in POST/PUT, never returned.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Caller, CoreDep
from limen.store.schemas import MAX_PAGE, DeviceCreate, DeviceRecord, DeviceUpdate

router = APIRouter(prefix="/mslrest/mbg/v1/devices/sip", tags=["devices"])

IfMatch = Annotated[
    str | None,
    Header(
        description="entity tag from a GET (ETag); the change is refused with 412 when the "
        "device changed since"
    ),
]
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
async def get_device(key: str, core: CoreDep, caller: Caller, response: Response) -> DeviceRecord:
    record, etag = await run(core.store.devices.get_tagged, key)
    response.headers["ETag"] = etag
    return record


@router.post("/", status_code=201)
async def create_device(body: DeviceCreate, core: CoreDep, caller: Caller) -> DeviceRecord:
    return await run(core.store.devices.create, body, caller.actor)


@router.put(
    "/{key}/",
    summary="Change some fields; null resets a per-device option",
    description="Atomic: concurrent changes of one device are applied one after another. "
    "With If-Match, refused (412) when the device changed since it was read.",
)
async def update_device(
    key: str,
    body: DeviceUpdate,
    core: CoreDep,
    caller: Caller,
    response: Response,
    if_match: IfMatch = None,
) -> DeviceRecord:
    record, etag = await run(
        lambda: core.store.devices.update_tagged(key, body, caller.actor, if_match)
    )
    response.headers["ETag"] = etag
    return record


@router.delete("/{key}/")
async def delete_device(
    key: str, core: CoreDep, caller: Caller, if_match: IfMatch = None
) -> dict[str, str]:
    device = await run(core.store.devices.get, key)
    await run(lambda: core.store.devices.delete(device.guid, caller.actor, if_match))
    return {"deleted": device.guid}
