"""``/mslrest/mbg/v1/metrics/`` (MBG's gauges) and ``/metrics`` (Prometheus text).

The numbers come from ``core.metrics``: under ``limen serve`` the gateway's
:class:`limen.gateway.metrics.GatewayMetrics` (live gauges, bandwidth and calls per hour
from sampled counters, 24 h of history); an API started without the SIP side (tests,
tools) has :class:`limen.core.NullMetrics`, all zeros.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool as run

from limen.api.auth import Admin, Caller, CoreDep

router = APIRouter(tags=["metrics"])


@router.get("/mslrest/mbg/v1/metrics/")
async def current_metrics(core: CoreDep, caller: Caller) -> dict[str, Any]:
    return dataclasses.asdict(core.metrics.current())


# Epoch seconds of 9999-12-31T23:59:59Z: later ones overflow floats and datetimes.
MAX_EPOCH = 253_402_300_799
Epoch = Annotated[int, Path(ge=0, le=MAX_EPOCH, description="epoch seconds")]


@router.get("/mslrest/mbg/v1/metrics/{start}/{end}/", summary="Samples between two epochs")
async def metrics_history(
    start: Epoch, end: Epoch, core: CoreDep, caller: Caller
) -> dict[str, Any]:
    if end < start:
        raise HTTPException(422, "start and end are epoch seconds with start <= end")
    samples = core.metrics.history(float(start), float(end))
    return {"response": [dataclasses.asdict(s) for s in samples]}


@router.get("/mslrest/limen/v1/calls/", summary="Calls in progress with media statistics")
async def calls_in_progress(core: CoreDep, admin: Admin) -> dict[str, Any]:
    """Each call's legs (Call-IDs per side), state, device and the relay's per-stream
    statistics: packets, bytes, lost, jitter, RTT, MOS, drops by reason."""
    return {"response": core.metrics.calls()}


@router.get("/mslrest/limen/v1/calls/count/", summary="Number of calls in progress")
async def calls_count(core: CoreDep, admin: Admin) -> dict[str, int]:
    return {"count": len(core.metrics.calls())}


# The label each counter is split by (Prometheus exposition).
_LABELS = {
    "sip_messages_total": "direction",
    "sip_errors_total": "kind",
    "calls_total": "event",
    "media_packets_dropped_total": "reason",
    "sip_transactions_total": "method",
    "security_bans_total": "reason",
    "security_dropped_total": "why",
    "auth_failures_total": "kind",
    "icp_link_changes_total": "change",
    "icp_failovers_total": "icp",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus exposition")
async def prometheus(core: CoreDep, admin: Admin) -> PlainTextResponse:
    sample = core.metrics.current()
    devices = await run(core.store.devices.count)
    lines: list[str] = []
    gauges = {
        "limen_registrations": ("Phones registered", sample.registrations),
        "limen_active_calls": ("Calls in progress", sample.active_calls),
        "limen_active_connections": ("Open SIP connections", sample.active_connections),
        "limen_configured_devices": ("SIP devices in the store", devices),
    }
    for name, (help_text, value) in gauges.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    links = core.icp_links
    if links is not None:  # 1 per ICP target that is up (issue 15)
        name = "limen_icp_target_up"
        lines += [
            f"# HELP {name} ICP target reachable (OPTIONS, transactions)",
            f"# TYPE {name} gauge",
        ]
        for label_value, value in sorted(links.gauges().items()):
            lines.append(f'{name}{{target="{_escape(label_value)}"}} {value}')
    for counter, by_label in core.metrics.counters().items():
        name = f"limen_{counter}"
        label = _LABELS.get(counter, "kind")
        lines += [f"# HELP {name} {counter.replace('_', ' ')}", f"# TYPE {name} counter"]
        for label_value, value in sorted(by_label.items()):
            lines.append(f'{name}{{{label}="{_escape(label_value)}"}} {value}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
