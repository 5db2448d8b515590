"""The ``limen`` command (Typer + Rich).

Sub-command groups live in their own modules and are attached here with
``app.add_typer``; this file only holds the top-level commands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from limen import __version__
from limen.commands import admin as admin_commands
from limen.commands import backup as backup_commands
from limen.commands import ban as ban_commands
from limen.commands import cert as cert_commands
from limen.commands import consumer as consumer_commands
from limen.commands import db as db_commands
from limen.commands import device as device_commands
from limen.commands import icp as icp_commands
from limen.commands import operations as ops_commands
from limen.commands import options as options_commands
from limen.commands import override as override_commands
from limen.commands import phone as phone_commands
from limen.commands import tma as tma_commands
from limen.commands import token as token_commands
from limen.commands._common import handle_errors
from limen.config import (
    Settings,
    config_file_path,
    default_public_ip,
    load_settings,
    write_sample_config,
)

app = typer.Typer(
    name="limen",
    help="Limen: Session Border Controller and teleworker gateway.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
# One line per message, never wrapped: a wrapped one-time password cannot be copied.
out_console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
app.add_typer(icp_commands.app, name="icp")
app.add_typer(device_commands.app, name="device")
app.add_typer(options_commands.app, name="options")
app.add_typer(override_commands.app, name="override")
app.add_typer(consumer_commands.app, name="consumer")
app.add_typer(token_commands.app, name="token")
app.add_typer(admin_commands.app, name="admin")
app.add_typer(db_commands.app, name="db")
app.add_typer(cert_commands.app, name="cert")
app.add_typer(tma_commands.app, name="tma")
app.add_typer(phone_commands.app, name="phone")
app.add_typer(ban_commands.app, name="ban")
app.command("doctor")(ops_commands.doctor)
app.command("firewall")(ops_commands.firewall)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $LIMEN_CONFIG or ./limen.toml)."),
]


@app.command()
def version() -> None:
    """Print Limen's version."""
    console.print(f"limen {__version__}")


@app.command()
@handle_errors
def init(
    config: ConfigOption = None,
    ip: Annotated[
        str | None,
        typer.Option(
            help="Public IP address phones reach Limen at (default: this machine's "
            "address toward the internet)."
        ),
    ] = None,
    fqdn: Annotated[
        str,
        typer.Option(help="Public DNS name, for certificates (optional)."),
    ] = "",
    fqdn_for_phones: Annotated[
        bool,
        typer.Option(
            "--fqdn-for-phones",
            help="Give phones the FQDN instead of the IP (only if it resolves for them).",
        ),
    ] = False,
    realm: Annotated[
        str, typer.Option(help="Digest realm, fixed once (default: the FQDN, else 'limen').")
    ] = "",
) -> None:
    """Write a config (if none exists), create the data folder, key, CA and certificates."""
    from limen.app import prepare

    path = config_file_path(config)
    if not path.exists():
        if fqdn_for_phones and not fqdn:
            _die("--fqdn-for-phones needs --fqdn")
        address = ip or default_public_ip()
        write_sample_config(
            path, fqdn=fqdn, ip=address, realm=realm, fqdn_for_phones=fqdn_for_phones
        )
        out_console.print(
            f"wrote config {path} (phones are given {fqdn if fqdn_for_phones else address})"
        )
    elif ip or fqdn or realm or fqdn_for_phones:
        out_console.print(f"{path} exists: --ip/--fqdn/--realm not applied (edit the file)")
    settings = _settings_or_die(path)
    try:
        lines = prepare(settings)
    except Exception as exc:
        _explain_or_raise(exc, settings)
    for line in lines:
        out_console.print(line, markup=False)


def _die(message: str) -> None:
    err_console.print(f"error: {message}", markup=False)
    raise typer.Exit(1)


def _settings_or_die(path: Path) -> Settings:
    from limen.ops.errors import config_error

    try:
        return load_settings(path)
    except Exception as exc:
        message = config_error(path, exc)
        if message is None:
            raise
        _die(message)
        raise AssertionError("unreachable") from None


def _explain_or_raise(exc: BaseException, settings: Settings | None = None) -> None:
    from limen.ops.errors import startup_error

    message = startup_error(exc, settings.secret_key_path if settings is not None else None)
    if message is None:
        raise exc
    _die(message)


@app.command()
@handle_errors
def serve(config: ConfigOption = None) -> None:
    """Run Limen in the foreground (SIP listeners; Ctrl-C stops it)."""
    from limen.app import prepare, run
    from limen.ops.listeners import busy_listeners, describe_bind_error

    path = config_file_path(config)
    if not path.exists():
        write_sample_config(path, ip=default_public_ip())
        out_console.print(f"wrote sample config {path}", markup=False)
    settings = _settings_or_die(path)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from limen.logs import install

    install(settings.security.log_rate)  # a flood must not flood the log too
    # Migration chatter on every start says nothing an operator needs.
    logging.getLogger("alembic").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )
    busy = busy_listeners(settings)
    if busy:
        for listener, exc in busy[1:]:
            err_console.print(f"error: {describe_bind_error(listener, exc)}", markup=False)
        _die(describe_bind_error(*busy[0]))
    try:
        for line in prepare(settings):
            out_console.print(line, markup=False)
        run(settings, announce=lambda line: out_console.print(line, markup=False))
    except Exception as exc:
        _explain_or_raise(exc, settings)


app.command("backup")(backup_commands.backup)
app.command("restore")(backup_commands.restore)


def main() -> None:
    from limen.store.errors import StoreError

    try:
        app()
    except (StoreError, OSError) as exc:
        # Every command already answers its own errors in one line; this is the net
        # for anything that escapes (a key file that cannot be read, a full disk).
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
