"""``limen token list|approve|reject|renew|revoke``: OAuth pairing tokens (seed 2.9)."""

from __future__ import annotations

import datetime as dt
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
from limen.config import config_file_path, load_settings

app = typer.Typer(
    help="Pairing tokens: approve a PBX's request, renew final tokens.", no_args_is_help=True
)


@app.command("list")
@handle_errors
def list_(
    status: Annotated[
        str | None,
        typer.Option(help="pending, approved, rejected, used (temporary); active, revoked"),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="temporary or access")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens (consumer, token id, expiry), like MBG's pairing screen."""
    with store_from(config) as store:
        tokens = store.tokens.list(kind=kind, status=status)
    if as_json:
        print_json(tokens)
        return
    table(
        "Tokens",
        ["consumer", "token", "kind", "status", "verifier", "expires", ""],
        [
            [
                t.consumer,
                t.token,
                t.kind,
                t.status,
                t.verifier or "",
                f"{t.expires_at:%Y-%m-%d %H:%M} UTC",
                "expired" if t.expired else "",
            ]
            for t in tokens
        ],
    )


@app.command("approve")
@handle_errors
def approve(token: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Approve a pending temporary token: prints the 6-digit verifier for the PBX."""
    with store_from(config) as store:
        verifier = store.tokens.approve(token, CLI_ACTOR)
        record = store.tokens.get(token)
    if as_json:
        print_json({"token": token, "consumer": record.consumer, "verifier": verifier})
        return
    console.print(f"approved the request of consumer [bold]{record.consumer}[/]")
    console.print(f"verifier: [bold green]{verifier}[/] (type it into the PBX)")


@app.command("reject")
@handle_errors
def reject(token: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Reject a pending temporary token."""
    with store_from(config) as store:
        store.tokens.reject(token, CLI_ACTOR)
    if as_json:
        print_json({"token": token, "status": "rejected"})
    else:
        console.print("rejected")


@app.command("renew")
@handle_errors
def renew(token: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Extend a final token to 12 months (api.access_token_days) from now."""
    settings = load_settings(config_file_path(config))
    with store_from(config) as store:
        record = store.tokens.renew(
            token, dt.timedelta(days=settings.api.access_token_days), CLI_ACTOR
        )
    if as_json:
        print_json(record)
    else:
        console.print(f"renewed until {record.expires_at:%Y-%m-%d %H:%M} UTC")


@app.command("revoke")
@handle_errors
def revoke(token: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Delete a token (a revoked final token stops working at once)."""
    with store_from(config) as store:
        store.tokens.revoke(token, CLI_ACTOR)
    if as_json:
        print_json({"deleted": token})
    else:
        console.print("revoked")
