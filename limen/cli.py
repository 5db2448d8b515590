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
from limen.commands import ban as ban_commands
from limen.commands import cert as cert_commands
from limen.commands import consumer as consumer_commands
from limen.commands import db as db_commands
from limen.commands import device as device_commands
from limen.commands import icp as icp_commands
from limen.commands import options as options_commands
from limen.commands import override as override_commands
from limen.commands import phone as phone_commands
from limen.commands import tma as tma_commands
from limen.commands import token as token_commands
from limen.config import config_file_path, load_settings, write_sample_config

app = typer.Typer(
    name="limen",
    help="Limen: Session Border Controller and teleworker gateway.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
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

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $LIMEN_CONFIG or ./limen.toml)."),
]


@app.command()
def version() -> None:
    """Print Limen's version."""
    console.print(f"limen {__version__}")


@app.command()
def init(
    config: ConfigOption = None,
    fqdn: Annotated[str, typer.Option(help="Public FQDN for certificates.")] = "limen.local",
    ip: Annotated[str, typer.Option(help="Public IP for certificates.")] = "127.0.0.1",
) -> None:
    """Write a sample config (if none exists), create the data folder and certificate."""
    from limen.app import prepare

    path = config_file_path(config)
    if not path.exists():
        write_sample_config(path, fqdn=fqdn, ip=ip)
        console.print(f"wrote sample config [bold]{path}[/]")
    settings = load_settings(path)
    for line in prepare(settings):
        console.print(line)


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run Limen in the foreground (SIP listeners; Ctrl-C stops it)."""
    from limen.app import prepare, run

    path = config_file_path(config)
    if not path.exists():
        write_sample_config(path)
        console.print(f"wrote sample config [bold]{path}[/]")
    settings = load_settings(path)
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
    for line in prepare(settings):
        console.print(line)
    run(settings, announce=console.print)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
