"""The rest of MBG's API: ``/mslrest/ping`` and the ``/mslrest/msl/v1/`` appliance paths
of the seed's permission list (seed 2.9), each answered as MBG shapes its resources
(lists wrapped in ``{"response": [...]}``, ``count/``, one object by name) or refused
with 501 and a reason where the appliance concept has no Limen equivalent. docs/api.md
lists every path and what it answers.

- ``ping``: any valid caller (signature or bearer), no permission needed.
- ``metrics/``: host CPU, memory, disk (of the data folder) and uptime, from ``/proc``.
- ``blades/``, ``installed_blades/``: Limen itself is the one blade.
- ``sysuser/``: Limen's administrators, read-only (managed with ``limen admin``).
- ``netbackup/``: POST makes an encrypted backup and returns it (``limen backup``).
- ``netrestore/``: POST checks a backup and stages it; it is applied by ``limen restore``
  on the stopped node (a running node cannot swap its key and database under itself).
- ``amc/``: 501 (Mitel's licensing server; Limen has no licences).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool as run

from limen import __version__
from limen.api.auth import Caller, CoreDep, Signed
from limen.core import Core
from limen.store.backup import BackupError, create_backup, open_backup

router = APIRouter(tags=["msl"])
MSL = "/mslrest/msl/v1"
_STARTED = time.monotonic()
BACKUP_MEDIA_TYPE = "application/octet-stream"
STAGED_RESTORE = "restore/staged.limen-backup"


def _not_supported(reason: str) -> HTTPException:
    return HTTPException(501, f"not supported by Limen: {reason}")


# -- ping -------------------------------------------------------------------------------


@router.get("/mslrest/ping", summary="Is the node up and the caller's pairing valid")
async def ping(caller: Signed) -> dict[str, Any]:
    return {
        "response": "pong",
        "product": "Limen",
        "version": __version__,
        "time": int(time.time()),
        "caller": caller.actor,
    }


# -- host metrics -------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (proc(5))."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            name, _sep, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[name] = int(parts[0]) * (1024 if parts[-1] == "kB" else 1)
    return out


def host_metrics(data_path: Path, sample: float = 0.1) -> dict[str, Any]:
    """CPU use over ``sample`` seconds, memory, the data folder's disk, uptimes."""
    busy1, total1 = _cpu_times()
    time.sleep(sample)
    busy2, total2 = _cpu_times()
    cpu_percent = 100.0 * (busy2 - busy1) / (total2 - total1) if total2 > total1 else 0.0
    memory = _meminfo()
    mem_total = memory.get("MemTotal", 0)
    mem_available = memory.get("MemAvailable", memory.get("MemFree", 0))
    disk = os.statvfs(data_path if data_path.exists() else "/")
    disk_total = disk.f_blocks * disk.f_frsize
    disk_free = disk.f_bavail * disk.f_frsize
    disk_used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    load1, load5, load15 = os.getloadavg()
    return {
        "hostname": socket.gethostname(),
        "cpu": {
            "count": os.cpu_count() or 1,
            "percent": round(cpu_percent, 1),
            "load_1": load1,
            "load_5": load5,
            "load_15": load15,
        },
        "memory": {
            "total": mem_total,
            "available": mem_available,
            "used": mem_total - mem_available,
            "percent": round(100.0 * (mem_total - mem_available) / mem_total, 1)
            if mem_total
            else 0.0,
        },
        "disk": {
            "path": str(data_path),
            "total": disk_total,
            "used": disk_used,
            "free": disk_free,
            "percent": round(100.0 * disk_used / disk_total, 1) if disk_total else 0.0,
        },
        "uptime": int(uptime),
        "limen_uptime": int(time.monotonic() - _STARTED),
    }


@router.get(f"{MSL}/metrics/", summary="Host CPU, memory, disk and uptime")
async def msl_metrics(core: CoreDep, caller: Caller) -> dict[str, Any]:
    return await run(host_metrics, core.settings.data_path)


# -- blades -------------------------------------------------------------------------------


def _blade() -> dict[str, Any]:
    return {
        "name": "Limen",
        "version": __version__,
        "description": "SIP Session Border Controller and teleworker gateway (MBG-compatible)",
        "vendor": "Limen project",
        "installed": True,
        "status": "running",
    }


def _blade_routes(kind: str) -> None:
    @router.get(f"{MSL}/{kind}/", summary=f"{kind}: Limen is the one blade")
    async def blades(caller: Caller) -> dict[str, list[dict[str, Any]]]:
        return {"response": [_blade()]}

    @router.get(f"{MSL}/{kind}/count/")
    async def blades_count(caller: Caller) -> dict[str, int]:
        return {"count": 1}

    @router.get(f"{MSL}/{kind}/{{name}}/")
    async def one_blade(name: str, caller: Caller) -> dict[str, Any]:
        if name.lower() != "limen":
            raise HTTPException(404, f"no blade {name!r} (Limen is the only one)")
        return _blade()

    for handler in (blades, blades_count, one_blade):
        handler.__name__ = f"{kind}_{handler.__name__}"


_blade_routes("blades")
_blade_routes("installed_blades")


# -- system users -------------------------------------------------------------------------


@router.get(f"{MSL}/sysuser/", summary="Limen's administrators (read-only)")
async def sysusers(core: CoreDep, caller: Caller) -> dict[str, list[dict[str, Any]]]:
    admins = await run(core.store.admins.list)
    return {"response": [a.model_dump(mode="json") for a in admins]}


@router.get(f"{MSL}/sysuser/count/")
async def sysusers_count(core: CoreDep, caller: Caller) -> dict[str, int]:
    return {"count": await run(core.store.admins.count)}


@router.get(f"{MSL}/sysuser/{{username}}/")
async def sysuser(username: str, core: CoreDep, caller: Caller) -> dict[str, Any]:
    for admin in await run(core.store.admins.list):
        if admin.username == username:
            return admin.model_dump(mode="json")
    raise HTTPException(404, f"no system user {username!r}")


async def sysuser_change(rest: str, caller: Caller) -> None:
    raise _not_supported(
        "system users are Limen's administrators; add, change or remove them with "
        "`limen admin add|passwd|remove` on the node"
    )


for _method in ("POST", "PUT", "DELETE"):
    router.add_api_route(
        f"{MSL}/sysuser/{{rest:path}}",
        sysuser_change,
        methods=[_method],
        operation_id=f"sysuser_{_method.lower()}_not_supported",
        summary="Not supported: administrators are managed with `limen admin`",
        status_code=501,
    )


# -- backup and restore -------------------------------------------------------------------


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    passphrase: str = Field(min_length=8, max_length=1024)


@router.get(f"{MSL}/netbackup/", summary="How to take a backup")
async def netbackup_info(caller: Caller) -> dict[str, Any]:
    return {
        "supported": True,
        "method": "POST",
        "body": {"passphrase": "at least 8 characters"},
        "returns": BACKUP_MEDIA_TYPE,
        "format": "limen-backup 1: scrypt + AES-256-GCM over the store, key, CA, "
        "certificates and config",
    }


@router.post(
    f"{MSL}/netbackup/",
    summary="An encrypted backup of this node (as `limen backup`)",
    response_class=Response,
    responses={200: {"content": {BACKUP_MEDIA_TYPE: {}}}},
)
async def netbackup(body: BackupRequest, core: CoreDep, caller: Caller) -> Response:
    try:
        blob = await run(
            lambda: create_backup(core.settings, body.passphrase, engine=core.store.engine)
        )
    except BackupError as exc:
        raise HTTPException(422, str(exc)) from exc
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    await run(
        lambda: core.store.events.add(
            "backup taken through the API", kind="audit", severity="info", source="backup",
            actor=caller.actor,
        )
    )  # fmt: skip
    return Response(
        blob,
        media_type=BACKUP_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="limen-{stamp}.limen-backup"',
            "Cache-Control": "no-store",
        },
    )


@router.get(f"{MSL}/netrestore/", summary="How to restore; whether a restore is staged")
async def netrestore_info(core: CoreDep, caller: Caller) -> dict[str, Any]:
    staged = core.settings.data_path / STAGED_RESTORE
    return {
        "supported": "staged",
        "method": "POST",
        "body": BACKUP_MEDIA_TYPE + ", passphrase in the X-Limen-Passphrase header",
        "staged": str(staged) if staged.exists() else None,
        "apply": _apply_hint(core),
    }


def _apply_hint(core: Core) -> str:
    staged = core.settings.data_path / STAGED_RESTORE
    config = core.settings.config_path or "limen.toml"
    return (
        f"stop limen, run `limen restore {staged} --force --config {config}`, start limen "
        "(a running node cannot replace its own key and database)"
    )


@router.post(
    f"{MSL}/netrestore/",
    status_code=202,
    summary="Check a backup and stage it for `limen restore`",
    openapi_extra={"requestBody": {"content": {BACKUP_MEDIA_TYPE: {"schema": {"type": "string"}}}}},
)
async def netrestore(
    request: Request,
    core: CoreDep,
    caller: Caller,
    passphrase: Annotated[str, Header(alias="X-Limen-Passphrase", min_length=1)],
) -> dict[str, Any]:
    blob = await request.body()
    try:
        contents = await run(open_backup, blob, passphrase)
    except BackupError as exc:
        raise HTTPException(422, f"{exc}; nothing was staged") from exc
    staged = core.settings.data_path / STAGED_RESTORE

    def stage() -> None:
        staged.parent.mkdir(parents=True, exist_ok=True)
        temporary = staged.with_name(staged.name + ".writing")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        temporary.replace(staged)
        core.store.events.add(
            "backup staged for restore through the API",
            kind="audit",
            severity="info",
            source="backup",
            actor=caller.actor,
        )

    await run(stage)
    return {
        "status": "staged",
        "backup": contents.manifest.__dict__,
        "staged": str(staged),
        "apply": _apply_hint(core),
    }


# -- AMC ----------------------------------------------------------------------------------


async def amc(rest: str, caller: Caller) -> None:
    raise _not_supported(
        "the AMC is Mitel's licensing and software server; Limen needs no licence and "
        "is updated as a Python package"
    )


for _method in ("GET", "POST", "PUT", "DELETE"):
    router.add_api_route(
        f"{MSL}/amc/{{rest:path}}",
        amc,
        methods=[_method],
        operation_id=f"amc_{_method.lower()}_not_supported",
        summary="Not supported: Mitel's licensing (AMC)",
        status_code=501,
    )
