"""``limen override add|list|remove``: configuration overrides (MBG's tug.ini rows)."""

from __future__ import annotations

from typing import Annotated

import typer

from limen.commands._common import (
    CLI_ACTOR,
    ConfigOption,
    JsonOption,
    console,
    handle_errors,
    print_json,
    store_from,
    table,
)
from limen.store.schemas import OverrideCreate

app = typer.Typer(
    help="Configuration overrides (file, order, section, parameter, content).", no_args_is_help=True
)


@app.command("add")
@handle_errors
def add(
    section: str,
    parameter: str,
    content: str,
    file: Annotated[str, typer.Option(help="Configuration file.")] = "tug.ini",
    sort_order: Annotated[int, typer.Option(help="Order within the file.")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add an override, e.g. `limen override add proxy::sip_tls secure_in::ssl::use_cert 0`."""
    data = OverrideCreate(
        file=file, sort_order=sort_order, section=section, parameter=parameter, content=content
    )
    with store_from(config) as store:
        record = store.overrides.add(data, CLI_ACTOR)
    if as_json:
        print_json(record)
    else:
        console.print(f"added override {record.guid}")


@app.command("list")
@handle_errors
def list_(
    file: Annotated[str | None, typer.Option(help="Only this file's overrides.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List overrides in the order they apply."""
    with store_from(config) as store:
        rows = store.overrides.list(file)
    if as_json:
        print_json(rows)
        return
    table(
        "Overrides",
        ["file", "order", "section", "parameter", "content", "guid"],
        [[r.file, r.sort_order, r.section, r.parameter, r.content, r.guid] for r in rows],
    )


@app.command("remove")
@handle_errors
def remove(guid: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Remove an override by guid."""
    with store_from(config) as store:
        store.overrides.remove(guid, CLI_ACTOR)
    if as_json:
        print_json({"deleted": guid})
    else:
        console.print(f"removed override {guid}")
