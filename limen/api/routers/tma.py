"""``/mslrest/limen/v1/tma/{icp}/``: the TMA provisioning file of an ICP (seed figure 18).

Admins only: the file carries the phones' set-side passwords. ``format=csv`` (default) or
``xlsx`` returns the file as an attachment, with the skipped devices (no MAC) counted in
``X-Limen-Skipped``; ``format=json`` returns the rows, the skipped devices and warnings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Admin, CoreDep
from limen.provisioning import tma

router = APIRouter(prefix="/mslrest/limen/v1/tma", tags=["provisioning"])

Format = Annotated[Literal["csv", "xlsx", "json"], Query(description="csv, xlsx or json")]


@router.get("/{icp}/", summary="The TMA provisioning file of one ICP (name or guid)")
async def export_tma(
    icp: str,
    core: CoreDep,
    admin: Admin,
    format: Format = "csv",
    server: Annotated[str | None, Query(description="address for the system columns")] = None,
) -> Any:
    export = await run(tma.build_export, core.store, core.settings, icp, server or "")
    if format == "json":
        return export.as_dict()
    body = await run(tma.render, export, format)
    media = tma.CSV_MEDIA_TYPE if format == "csv" else tma.XLSX_MEDIA_TYPE
    filename = f"tma_{export.icp}.{format}"
    return Response(
        content=body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Limen-Skipped": str(len(export.skipped)),
        },
    )
