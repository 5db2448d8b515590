"""``limen db upgrade|current``: schema migrations (also applied at every start)."""

from __future__ import annotations

import typer

from limen.commands._common import ConfigOption, JsonOption, console, handle_errors, print_json
from limen.config import config_file_path, load_settings
from limen.store.db import current_revision, head_revision, make_engine, upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
@handle_errors
def upgrade_(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Apply pending migrations."""
    settings = load_settings(config_file_path(config))
    engine = make_engine(settings.db_url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if as_json:
        print_json({"from": before, "to": after})
    else:
        console.print(f"schema at revision {after} (was {before or 'empty'})")


@app.command("current")
@handle_errors
def current(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the schema revision and the latest one."""
    settings = load_settings(config_file_path(config))
    engine = make_engine(settings.db_url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if as_json:
        print_json({"current": revision, "head": head})
    else:
        state = "up to date" if revision == head else "upgrade pending"
        console.print(f"revision {revision or 'none'} (latest {head}): {state}")
