"""``/mslrest/mbg/v1/icps/``: the call servers (MBG's ICPs), by guid or name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Caller, CoreDep
from limen.store.schemas import IcpCreate, IcpRecord, IcpUpdate

router = APIRouter(prefix="/mslrest/mbg/v1/icps", tags=["icps"])

IfMatch = Annotated[
    str | None,
    Header(
        description="entity tag from a GET (ETag); the change is refused with 412 when the "
        "ICP changed since"
    ),
]


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
async def get_icp(key: str, core: CoreDep, caller: Caller, response: Response) -> IcpRecord:
    record, etag = await run(core.store.icps.get_tagged, key)
    response.headers["ETag"] = etag
    return record


class IcpLinkTarget(BaseModel):
    """One place the ICP is reached (an RFC 3263 target) and its state."""

    target: str  # transport:host:port
    transport: str
    host: str
    port: int
    name: str  # the SRV target or the ICP's host name it came from
    state: str  # up | down | unknown
    since: float  # Unix time of the last change
    failures: int  # consecutive
    last_error: str
    last_ok: float | None
    rtt_ms: float | None


class IcpLinkState(BaseModel):
    """The live link to one ICP (issue 15): empty targets when no gateway runs."""

    icp: str
    guid: str
    running: bool  # false: this process runs no gateway, nothing is known
    state: str  # up (a target is up) | down (all are) | unknown
    error: str
    tls: str | None  # the TLS trust mode: system | ca | pin | ca+pin | none
    targets: list[IcpLinkTarget]


@router.get("/{key}/link/", summary="The live state of the link to one ICP")
async def icp_link(key: str, core: CoreDep, caller: Caller) -> IcpLinkState:
    record = await run(core.store.icps.get, key)
    links = core.icp_links
    found = None
    if links is not None:
        found = next((s for s in links.snapshot() if s["guid"] == record.guid), None)
    if found is None:
        return IcpLinkState(
            icp=record.name,
            guid=record.guid,
            running=False,
            state="unknown",
            error="",
            tls=None,
            targets=[],
        )
    return IcpLinkState(
        icp=record.name,
        guid=record.guid,
        running=True,
        state=found["state"],
        error=found["error"],
        tls=found["tls"],
        targets=[IcpLinkTarget(**t) for t in found["targets"]],
    )


@router.post("/", status_code=201)
async def create_icp(body: IcpCreate, core: CoreDep, caller: Caller) -> IcpRecord:
    return await run(core.store.icps.create, body, caller.actor)


@router.put(
    "/{key}/",
    summary="Change some fields of an ICP",
    description="Atomic; with If-Match, refused (412) when the ICP changed since it was read.",
)
async def update_icp(
    key: str,
    body: IcpUpdate,
    core: CoreDep,
    caller: Caller,
    response: Response,
    if_match: IfMatch = None,
) -> IcpRecord:
    record, etag = await run(
        lambda: core.store.icps.update_tagged(key, body, caller.actor, if_match)
    )
    response.headers["ETag"] = etag
    return record


@router.delete("/{key}/", summary="Delete an ICP (and, with confirm=true, its devices)")
async def delete_icp(
    key: str,
    core: CoreDep,
    caller: Caller,
    confirm: Annotated[bool, Query(description="also delete the ICP's devices")] = False,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    icp = await run(core.store.icps.get, key)
    removed = await run(
        lambda: core.store.icps.delete(key, caller.actor, with_devices=confirm, if_match=if_match)
    )
    return {"deleted": icp.guid, "devices_deleted": removed}
