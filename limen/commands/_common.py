"""Helpers shared by the command groups: options, opening the store, output, errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from limen.config import config_file_path, load_settings
from limen.store import Conflict, Invalid, NotFound, Store, StoreError, open_store

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $LIMEN_CONFIG or ./limen.toml)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

CLI_ACTOR = "cli"

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def store_from(config: Path | None) -> Iterator[Store]:
    settings = load_settings(config_file_path(config))
    store = open_store(settings)
    try:
        yield store
    finally:
        store.close()


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    out = Table(title=title)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(Text("" if v is None else str(v)) for v in row))
    console.print(out)


def show_record(title: str, record: BaseModel) -> None:
    out = Table(title=title, show_header=False)
    out.add_column("field", style="bold")
    out.add_column("value")
    for key, value in record.model_dump(mode="json").items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        out.add_row(key, Text("" if value is None else str(value)))
    console.print(out)


def explain(title: str, rows: Sequence[tuple[str, Any, str, str]]) -> None:
    """Settings with what each means: ``name = value  (note)`` then the explanation,
    indented, on its own line (a table column would be too narrow to read)."""
    console.print(Text(title, style="bold"))
    for name, value, note, help_text in rows:
        line = Text("  ")
        line.append(name, style="bold")
        line.append(f" = {'' if value is None else value}")
        if note:
            line.append(f"  ({note})", style="dim")
        console.print(line, soft_wrap=True)
        if help_text:
            console.print(Text(f"      {help_text}"), soft_wrap=True, highlight=False)


def fail(message: str, as_json: bool, code: int = 1) -> None:
    if as_json:
        typer.echo(json.dumps({"error": message}))
    else:
        err_console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn store and validation errors into a message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            fail(_validation_text(exc), as_json)
        except (NotFound, Conflict, Invalid, StoreError) as exc:
            fail(str(exc), as_json)
        raise AssertionError("unreachable")

    return wrapper
