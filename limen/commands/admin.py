"""``limen admin ...``: admin users (argon2 passwords) and their API tokens."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

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
from limen.store.secrets import random_password

app = typer.Typer(help="Admin users of the API (and later the UI).", no_args_is_help=True)
tokens = typer.Typer(help="API tokens for scripts (bearer).", no_args_is_help=True)
app.add_typer(tokens, name="token")

PasswordOption = Annotated[
    str | None, typer.Option(help="Password (default: generated and printed once).")
]


@app.command("add")
@handle_errors
def add(
    username: str,
    password: PasswordOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add an admin."""
    secret = password or random_password(20)
    with store_from(config) as store:
        store.admins.create(username, secret, CLI_ACTOR)
    if as_json:
        print_json({"username": username, **({} if password else {"password": secret})})
    else:
        console.print(f"added admin [bold]{escape(username)}[/]")
        if not password:
            console.print(f"password: [bold]{secret}[/] (shown once)")


@app.command("passwd")
@handle_errors
def passwd(
    username: str,
    password: PasswordOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change an admin's password (ends the admin's sessions)."""
    secret = password or random_password(20)
    with store_from(config) as store:
        store.admins.set_password(username, secret, CLI_ACTOR)
    if as_json:
        print_json({"username": username, **({} if password else {"password": secret})})
    else:
        console.print(f"password of [bold]{escape(username)}[/] changed")
        if not password:
            console.print(f"new password: [bold]{secret}[/] (shown once)")


@app.command("list")
@handle_errors
def list_(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List admins."""
    with store_from(config) as store:
        admins = store.admins.list()
    if as_json:
        print_json(admins)
        return
    table(
        "Admins",
        ["username", "active", "last login"],
        [[a.username, a.active, a.last_login] for a in admins],
    )


@app.command("remove")
@handle_errors
def remove(username: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Remove an admin and its tokens."""
    with store_from(config) as store:
        store.admins.delete(username, CLI_ACTOR)
    if as_json:
        print_json({"deleted": username})
    else:
        console.print(f"removed admin [bold]{escape(username)}[/]")


@tokens.command("add")
@handle_errors
def token_add(
    username: str, name: str, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Issue an API token (Authorization: Bearer ...) for USERNAME, named NAME."""
    with store_from(config) as store:
        token, record = store.admins.issue_token(username, kind="api", name=name, actor=CLI_ACTOR)
    if as_json:
        print_json({"id": record.id, "username": username, "name": name, "token": token})
    else:
        console.print(
            f"token {record.id} for [bold]{escape(username)}[/]: [bold]{token}[/] (shown once)"
        )


@tokens.command("list")
@handle_errors
def token_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List API tokens (not their values)."""
    with store_from(config) as store:
        records = store.admins.list_tokens()
    if as_json:
        print_json(records)
        return
    table(
        "API tokens",
        ["id", "admin", "name", "created", "last used"],
        [[t.id, t.username, t.name, t.created_at, t.last_used] for t in records],
    )


@tokens.command("revoke")
@handle_errors
def token_revoke(token_id: int, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Revoke an API token by id."""
    with store_from(config) as store:
        store.admins.revoke_token(token_id, actor=CLI_ACTOR)
    if as_json:
        print_json({"deleted": token_id})
    else:
        console.print(f"revoked token {token_id}")
