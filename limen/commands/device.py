"""``limen device add|list|show|edit|remove|import|export``: SIP devices (phones)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from limen.commands._common import (
    CLI_ACTOR,
    ConfigOption,
    JsonOption,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
    show_record,
    store_from,
    table,
)
from limen.store.devices_csv import check_devices_csv, export_devices_csv
from limen.store.schemas import DeviceCreate, DeviceUpdate
from limen.store.secrets import random_password

app = typer.Typer(help="SIP devices: set-side and ICP-side credentials.", no_args_is_help=True)

Mac = Annotated[str | None, typer.Option("--mac", help="MAC address (MBG's clientid).")]
Methods = Annotated[
    str | None,
    typer.Option(
        help="Methods always challenged for this device, e.g. INVITE,SUBSCRIBE; '' = use "
        "the global option. Other requests pass without digest only from the device's "
        "registration binding.",
    ),
]


MaxCalls = Annotated[
    int | None,
    typer.Option(help="Calls in progress at once for this device (0: no limit; -1: global)."),
]
MaxAttempts = Annotated[
    int | None,
    typer.Option(help="Call attempts per minute for this device (0: no limit; -1: global)."),
]


def _limits(max_calls: int | None, max_call_attempts: int | None) -> dict[str, Any]:
    """The call-admission overrides given on the command line (-1 = back to global)."""
    out: dict[str, Any] = {}
    for name, value in (("max_calls", max_calls), ("max_call_attempts", max_call_attempts)):
        if value is not None:
            out[name] = None if value == -1 else value
    return out


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("add")
@handle_errors
def add(
    username: Annotated[str, typer.Argument(help="Set-side username (the phone's).")],
    icp: Annotated[str, typer.Option(help="ICP name or guid.")],
    password: Annotated[
        str | None, typer.Option(help="Set-side password (generated when omitted).")
    ] = None,
    icpside_username: Annotated[str | None, typer.Option(help="Default: the username.")] = None,
    icpside_password: Annotated[str | None, typer.Option(help="Default: the password.")] = None,
    mac: Mac = None,
    description: Annotated[str | None, typer.Option()] = None,
    challenge_methods: Methods = None,
    max_calls: MaxCalls = None,
    max_call_attempts: MaxAttempts = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a SIP device."""
    generated = password is None
    secret = password if password is not None else random_password(16)
    data = DeviceCreate.model_validate(
        _fields(
            setside_username=username,
            setside_password=secret,
            icp=icp,
            icpside_username=icpside_username,
            icpside_password=icpside_password,
            clientid=mac,
            description=description,
            challenge_methods=challenge_methods,
        )
        | _limits(max_calls, max_call_attempts)
    )
    with store_from(config) as store:
        record = store.devices.create(data, CLI_ACTOR)
    if as_json:
        out = record.model_dump(mode="json")
        if generated:
            out["setside_password"] = secret
        print_json(out)
        return
    console.print(f"added device [bold]{record.setside_username}[/] on {record.icp}")
    if generated:
        console.print(f"set-side password: [bold]{secret}[/] (shown once)")


@app.command("list")
@handle_errors
def list_(
    icp: Annotated[str | None, typer.Option(help="Only this ICP's devices.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List SIP devices."""
    with store_from(config) as store:
        devices = store.devices.list(icp=icp)
    if as_json:
        print_json(devices)
        return
    table(
        f"SIP devices ({len(devices)})",
        ["set-side user", "ICP-side user", "ICP", "MAC", "description"],
        [
            [d.setside_username, d.icpside_username, d.icp, d.clientid, d.description]
            for d in devices
        ],
    )


@app.command("show")
@handle_errors
def show(key: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show one device (by guid, set-side username or MAC); passwords are not shown."""
    with store_from(config) as store:
        record = store.devices.get(key)
    if as_json:
        print_json(record)
    else:
        show_record(f"device {record.setside_username}", record)


@app.command("edit")
@handle_errors
def edit(
    key: str,
    username: Annotated[
        str | None, typer.Option("--username", help="New set-side username.")
    ] = None,
    password: Annotated[str | None, typer.Option(help="New set-side password.")] = None,
    icp: Annotated[str | None, typer.Option()] = None,
    icpside_username: Annotated[str | None, typer.Option()] = None,
    icpside_password: Annotated[str | None, typer.Option()] = None,
    mac: Mac = None,
    description: Annotated[str | None, typer.Option()] = None,
    challenge_methods: Methods = None,
    max_calls: MaxCalls = None,
    max_call_attempts: MaxAttempts = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change some fields of a device. --mac '' removes the MAC."""
    values = _fields(
        setside_username=username,
        setside_password=password,
        icp=icp,
        icpside_username=icpside_username,
        icpside_password=icpside_password,
        description=description,
    )
    if mac is not None:
        values["clientid"] = mac or None
    if challenge_methods is not None:
        values["challenge_methods"] = challenge_methods or None
    values.update(_limits(max_calls, max_call_attempts))
    data = DeviceUpdate.model_validate(values)
    with store_from(config) as store:
        record = store.devices.update(key, data, CLI_ACTOR)
    if as_json:
        print_json(record)
    else:
        console.print(f"updated device [bold]{record.setside_username}[/]")


@app.command("remove")
@handle_errors
def remove(key: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Remove a device."""
    with store_from(config) as store:
        record = store.devices.get(key)
        store.devices.delete(record.guid, CLI_ACTOR)
    if as_json:
        print_json({"deleted": record.guid})
    else:
        console.print(f"removed device [bold]{record.setside_username}[/]")


@app.command("import")
@handle_errors
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the good rows, report the bad ones.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import devices from a devices_mbg.csv file (see docs/devices_csv.md).

    Every row is checked first; if any is bad, each is reported by line number and
    nothing is imported, unless --skip-invalid.
    """
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})", as_json)
    with store_from(config) as store:
        check = check_devices_csv(text, store)
        errors = [{"line": e.line, "error": e.message} for e in check.errors]
        if check.errors and not skip_invalid:
            if as_json:
                print_json({"imported": 0, "errors": errors})
            else:
                for error in check.errors:
                    err_console.print(
                        f"[red]{escape(str(file))}:{error.line}:[/] {escape(error.message)}"
                    )
                err_console.print(
                    f"[red]{len(check.errors)} bad row(s); nothing imported[/] "
                    "(fix them, or use --skip-invalid)"
                )
            raise typer.Exit(1)
        devices = [device for _line, device in check.rows]
        if as_json or not devices:
            imported = store.devices.create_many(devices, CLI_ACTOR)
        else:
            with Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("import", total=len(devices))
                imported = store.devices.create_many(
                    devices, CLI_ACTOR, progress=lambda n: progress.advance(task, n)
                )
    if as_json:
        print_json({"imported": imported, "errors": errors})
        return
    for error in check.errors:
        err_console.print(
            f"[yellow]{escape(str(file))}:{error.line}: skipped:[/] {escape(error.message)}"
        )
    console.print(
        f"imported {imported} device(s)"
        + (f", skipped {len(check.errors)} bad row(s)" if check.errors else "")
    )


@app.command("export")
@handle_errors
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    icp: Annotated[str | None, typer.Option(help="Only this ICP's devices.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export devices in the devices_mbg.csv layout (contains passwords: keep it safe)."""
    with store_from(config) as store:
        records = store.devices.list(icp=icp)
        wanted = {r.guid for r in records}
        creds = [c for c in store.devices.all_credentials() if c.guid in wanted]
    text = export_devices_csv(creds, records)
    if output is not None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if as_json:
            print_json({"file": str(output), "exported": len(creds)})
        else:
            console.print(f"exported {len(creds)} device(s) to {escape(str(output))}")
    elif as_json:
        print_json(
            [
                {
                    **c.model_dump(mode="json", exclude={"guid"}),
                    "description": next(r.description for r in records if r.guid == c.guid),
                }
                for c in creds
            ]
        )
    else:
        typer.echo(text, nl=False)
