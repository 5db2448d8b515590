"""``limen tma export``: the PBX's TMA provisioning file (seed figure 18)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from limen.commands._common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
)
from limen.config import config_file_path, load_settings
from limen.provisioning import tma
from limen.store import open_store

app = typer.Typer(help="TMA: the PBX's per-MAC provisioning file.", no_args_is_help=True)


@app.command("export")
@handle_errors
def export(
    icp: Annotated[str, typer.Option(help="ICP name or guid.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or xlsx.")] = "csv",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: stdout; xlsx needs one)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Address for the proxy/registrar/https server columns."),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export the TMA rows of the ICP's devices that have a MAC (contains passwords)."""
    fmt = fmt.lower()
    if fmt not in ("csv", "xlsx"):
        fail(f"unknown format {fmt!r} (csv or xlsx)", as_json)
    if fmt == "xlsx" and output is None:
        fail("an xlsx export needs --output FILE", as_json)
    settings = load_settings(config_file_path(config))
    store = open_store(settings)
    try:
        data = tma.build_export(store, settings, icp, server or "")
    finally:
        store.close()
    if output is not None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(tma.render(data, fmt))
    if as_json:
        payload = data.as_dict()
        payload |= {"format": fmt, "file": str(output) if output is not None else None}
        print_json(payload)
        return
    for skipped in data.skipped:
        err_console.print(
            f"skipped {escape(skipped.setside_username)} ({skipped.guid}): {skipped.reason}"
        )
    for warning in data.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    if output is not None:
        console.print(
            f"exported {len(data.rows)} phone(s) of ICP {escape(data.icp)} to "
            f"{escape(str(output))} ({fmt}); {len(data.skipped)} skipped"
        )
    else:
        typer.echo(tma.to_csv(data), nl=False)
