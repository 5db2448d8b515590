"""``limen doctor`` and ``limen firewall``: checking a deployment, and its nftables rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from limen.commands._common import ConfigOption, JsonOption, console, fail, store_from
from limen.config import config_file_path, load_settings

_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "red"}


def doctor(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only this check (repeatable): clock, icp-sip, ..."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each network probe.", min=0.1, max=30)
    ] = 2.0,
    calls: Annotated[
        int | None,
        typer.Option(help="Simultaneous calls to size for (default: one per device).", min=0),
    ] = None,
    devices: Annotated[
        int | None,
        typer.Option(help="Devices to size RAM and CPU for (default: those configured).", min=0),
    ] = None,
) -> None:
    """Check this deployment: ICPs (SIP, provisioning link, hash, clock), public name,
    certificates, listeners and ports, RTP range, RAM/CPU, NAT and firewall hints.
    Each finding comes with a fix; the exit status is 1 when any check fails."""
    from limen.ops.doctor import CHECKS, DoctorInput, run_checks
    from limen.store.realm import recorded_realm

    wanted = set(only or [])
    if wanted - set(CHECKS):
        fail(
            f"unknown check(s) {sorted(wanted - set(CHECKS))}; known: {', '.join(CHECKS)}", as_json
        )
    settings = load_settings(config_file_path(config))
    with store_from(config) as store:
        inp = DoctorInput(
            settings=settings,
            options=store.options.get(),
            icps=store.icps.list(),
            devices=store.devices.count() if devices is None else devices,
            realm_recorded=recorded_realm(store),
            timeout=timeout,
            expected_calls=calls,
        )
    findings = run_checks(inp, wanted or None)
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": failed == 0,
                    "failures": failed,
                    "warnings": warned,
                    "findings": [f.as_dict() for f in findings],
                },
                indent=2,
            )
        )
    else:
        for f in findings:
            style = _STYLE[f.status]
            console.print(
                f"[{style}]{f.status.upper():4}[/] {f.check:12} {escape(f.subject)}: "
                f"{escape(f.message)}",
                soft_wrap=True,
                highlight=False,
            )
            if f.fix and f.status in ("warn", "fail"):
                console.print(f"     fix: {escape(f.fix)}", soft_wrap=True, highlight=False)
        console.print(f"{failed} failure(s), {warned} warning(s)", highlight=False)
    if failed:
        raise typer.Exit(1)


def firewall(
    config: ConfigOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    admin_from: Annotated[
        list[str] | None,
        typer.Option("--admin-from", help="Network allowed to the admin API (repeatable)."),
    ] = None,
    ssh_from: Annotated[
        list[str] | None,
        typer.Option(
            "--ssh-from", help="Network allowed to SSH (repeatable; default: SSH from anywhere)."
        ),
    ] = None,
    no_ssh: Annotated[bool, typer.Option("--no-ssh", help="Do not open SSH at all.")] = False,
) -> None:
    """Print an nftables rule set for the ports this configuration uses (load it with
    `nft -f FILE`; it lives in its own table, `inet limen`)."""
    from limen.ops.firewall import plan, render

    settings = load_settings(config_file_path(config))
    with store_from(config) as store:
        the_plan = plan(settings, store.options.get(), store.icps.list())
    try:
        text = render(
            the_plan,
            admin_from=admin_from,
            ssh_from=[] if no_ssh else ssh_from,
            source=f" from {config_file_path(config)}",
        )
    except ValueError as exc:
        fail(f"bad network: {exc}", False)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"wrote {escape(str(output))} (load it with: nft -f {escape(str(output))})")
