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
    explain,
    fail,
    handle_errors,
    print_json,
    store_from,
    table,
)
from limen.store.devices_csv import check_devices_csv, export_devices_csv
from limen.store.schemas import DEVICE_HELP, DeviceCreate, DeviceUpdate
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
KeepaliveOpt = Annotated[
    str | None,
    typer.Option("--options-hb", help="OPTIONS keepalive: Always | Only behind NAT | Never."),
]
IntervalOpt = Annotated[
    str | None, typer.Option("--heartbeat-interval", help="Keepalive interval, 1-180 s.")
]
PrackOpt = Annotated[str | None, typer.Option("--prack-support", help="PRACK: on | off.")]
SecurityOpt = Annotated[
    str | None,
    typer.Option(
        "--set-side-rtp-security", help="SRTP toward the phone: Require | Prefer | Disable."
    ),
]
CodecOpt = Annotated[
    str | None,
    typer.Option(
        "--setside-codec",
        help="Unrestricted | G.711 only | G.722 only | G.729 only | Opus only.",
    ),
]
FrameOpt = Annotated[
    str | None, typer.Option("--rtpframesize", help="Dynamic | 10 | 20 | 30 | 40 | 60.")
]

# Per-device options: the CLI flag value '' means "back to the global option" (null).
_ON = {"on", "true", "yes", "1"}
_OFF = {"off", "false", "no", "0"}


def _device_options(**values: str | None) -> dict[str, Any]:
    """Per-device option flags → DeviceCreate/DeviceUpdate fields ('' → None)."""
    out: dict[str, Any] = {}
    for name, text in values.items():
        if text is None:
            continue
        if text == "":
            out[name] = None
        elif name == "prack_support":
            lowered = text.lower()
            out[name] = True if lowered in _ON else False if lowered in _OFF else text
        elif name == "heartbeat_interval" and text.strip().isdigit():
            out[name] = int(text)  # the models are strict: a number, not its text
        else:
            out[name] = text
    return out


MaxCalls = Annotated[
    str | None,
    typer.Option(help="Calls in progress at once for this device (0: no limit; '' = global)."),
]
MaxAttempts = Annotated[
    str | None,
    typer.Option(help="Call attempts per minute for this device (0: no limit; '' = global)."),
]


def _limits(max_calls: str | None, max_call_attempts: str | None) -> dict[str, Any]:
    """The call-admission overrides given on the command line ('' = back to global)."""
    out: dict[str, Any] = {}
    for name, text in (("max_calls", max_calls), ("max_call_attempts", max_call_attempts)):
        if text is not None:
            try:
                out[name] = int(text) if text.strip() else None
            except ValueError:
                out[name] = text  # refused by the model with its reason
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
    options_hb: KeepaliveOpt = None,
    heartbeat_interval: IntervalOpt = None,
    prack_support: PrackOpt = None,
    set_side_rtp_security: SecurityOpt = None,
    setside_codec: CodecOpt = None,
    rtpframesize: FrameOpt = None,
    max_calls: MaxCalls = None,
    max_call_attempts: MaxAttempts = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a SIP device. Per-device options left out follow the global options
    (`limen device show` explains each)."""
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
        )
        | _device_options(
            challenge_methods=challenge_methods,
            options_hb=options_hb,
            heartbeat_interval=heartbeat_interval,
            prack_support=prack_support,
            set_side_rtp_security=set_side_rtp_security,
            setside_codec=setside_codec,
            rtpframesize=rtpframesize,
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


def _shown(value: Any) -> Any:
    """A value as `set` takes it: on/off for booleans, a,b for lists."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


@app.command("show")
@handle_errors
def show(key: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show one device (by guid, set-side username or MAC) with what each field means;
    passwords are not shown. An empty per-device option follows the global option."""
    with store_from(config) as store:
        record = store.devices.get(key)
        options = store.options.get().model_dump(mode="json")
    if as_json:
        print_json(record)
        return
    rows: list[tuple[str, Any, str, str]] = []
    for name, value in record.model_dump(mode="json").items():
        shown = _shown(value)
        note = ""
        if value is None and name in options:
            glob = options[name]
            shown = _shown(glob)
            note = "global option"
        rows.append((name, shown, note, DEVICE_HELP.get(name, "")))
    explain(f"device {record.setside_username} (`limen device edit` changes any field)", rows)


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
    options_hb: KeepaliveOpt = None,
    heartbeat_interval: IntervalOpt = None,
    prack_support: PrackOpt = None,
    set_side_rtp_security: SecurityOpt = None,
    setside_codec: CodecOpt = None,
    rtpframesize: FrameOpt = None,
    max_calls: MaxCalls = None,
    max_call_attempts: MaxAttempts = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change some fields of a device. --mac '' removes the MAC; '' for a per-device
    option returns it to the global option."""
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
    values |= _device_options(
        challenge_methods=challenge_methods,
        options_hb=options_hb,
        heartbeat_interval=heartbeat_interval,
        prack_support=prack_support,
        set_side_rtp_security=set_side_rtp_security,
        setside_codec=setside_codec,
        rtpframesize=rtpframesize,
    )
    values |= _limits(max_calls, max_call_attempts)
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
    else:
        for error in check.errors:
            err_console.print(
                f"[yellow]{escape(str(file))}:{error.line}: skipped:[/] {escape(error.message)}"
            )
        if imported:
            console.print(
                f"imported {imported} device(s)"
                + (f", skipped {len(check.errors)} bad row(s)" if check.errors else "")
            )
        else:
            err_console.print(f"[red]nothing imported[/] from {escape(str(file))}")
    if not imported:
        # A script must not take "no device imported" for success (issue 14).
        raise typer.Exit(1)


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
