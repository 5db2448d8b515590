"""``limen consumer add|list|show|edit|remove``: API clients (e.g. the PBX), OAuth 1.0a."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from limen.commands._common import (
    CLI_ACTOR,
    ConfigOption,
    JsonOption,
    console,
    handle_errors,
    print_json,
    show_record,
    store_from,
    table,
)
from limen.store.errors import Invalid
from limen.store.schemas import MBG_PBX_PERMISSIONS, ConsumerCreate, Permission

app = typer.Typer(
    help="Web-services consumers (OAuth 1.0a clients such as the PBX).", no_args_is_help=True
)


PermOption = Annotated[
    list[str] | None,
    typer.Option(
        "--permission",
        "-p",
        help="PATH or PATH:r / PATH:w / PATH:rw (default rw). Repeat for several.",
    ),
]


def parse_permission(text: str) -> Permission:
    path, sep, mode = text.rpartition(":")
    mode = mode.lower()
    if not sep or mode not in ("r", "w", "rw", "wr"):
        path, mode = text, "rw"
    return Permission(path=path, read="r" in mode, write="w" in mode)


def _permissions(items: list[str] | None, mbg_defaults: bool) -> list[Permission]:
    perms = [parse_permission(p) for p in items or []]
    if mbg_defaults:
        perms += [Permission(path=p, read=True, write=True) for p in MBG_PBX_PERMISSIONS]
    return perms


@app.command("add")
@handle_errors
def add(
    name: str,
    consumer_id: Annotated[
        str | None, typer.Option("--id", help="Consumer id (default: name).")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Shared secret (default: generated hex).")
    ] = None,
    rsa_key: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="RSA public key (PEM).")
    ] = None,
    permissions: PermOption = None,
    mbg_defaults: Annotated[
        bool, typer.Option("--mbg-defaults", help="Grant the seed's PBX paths (Read/Write).")
    ] = False,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it disabled.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a consumer; prints its shared secret once."""
    data = ConsumerCreate(
        name=name,
        consumer_key=consumer_id,
        shared_secret=secret,
        rsa_public_key=rsa_key.read_text() if rsa_key else None,
        active=not inactive,
        permissions=_permissions(permissions, mbg_defaults),
    )
    with store_from(config) as store:
        record, shared = store.consumers.create(data, CLI_ACTOR)
    if as_json:
        print_json({**record.model_dump(mode="json"), "shared_secret": shared})
        return
    console.print(f"added consumer [bold]{record.name}[/] (id {record.consumer_key})")
    console.print(f"shared secret: [bold]{shared}[/] (shown once)")


@app.command("list")
@handle_errors
def list_(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List consumers."""
    with store_from(config) as store:
        consumers = store.consumers.list()
    if as_json:
        print_json(consumers)
        return
    table(
        "Consumers",
        ["name", "id", "active", "rsa", "permissions"],
        [[c.name, c.consumer_key, c.active, c.has_rsa_key, len(c.permissions)] for c in consumers],
    )


@app.command("show")
@handle_errors
def show(key: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show a consumer and its permissions (never its secret)."""
    with store_from(config) as store:
        record = store.consumers.get(key)
    if as_json:
        print_json(record)
        return
    show_record(f"consumer {record.name}", record.model_copy(update={"permissions": []}))
    table(
        "permissions",
        ["path", "read", "write"],
        [[p.path, p.read, p.write] for p in record.permissions],
    )


@app.command("edit")
@handle_errors
def edit(
    key: str,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    permissions: PermOption = None,
    mbg_defaults: Annotated[bool, typer.Option("--mbg-defaults")] = False,
    secret: Annotated[str | None, typer.Option(help="New shared secret.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enable/disable a consumer, replace its permissions or its secret."""
    perms = _permissions(permissions, mbg_defaults) if permissions or mbg_defaults else None
    if active is None and perms is None and secret is None:
        raise Invalid("consumer", "nothing to change (--active/--inactive, -p, --secret)")
    with store_from(config) as store:
        record = store.consumers.update(
            key, active=active, permissions=perms, shared_secret=secret, actor=CLI_ACTOR
        )
    if as_json:
        print_json(record)
    else:
        console.print(f"updated consumer [bold]{record.name}[/]")


@app.command("remove")
@handle_errors
def remove(key: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Remove a consumer and all its tokens."""
    with store_from(config) as store:
        record = store.consumers.get(key)
        store.consumers.delete(record.guid, CLI_ACTOR)
    if as_json:
        print_json({"deleted": record.guid})
    else:
        console.print(f"removed consumer [bold]{record.name}[/]")
