"""``limen options show|set|reset``: global options (MBG's SIP settings, seed figure 11)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from limen.commands._common import (
    CLI_ACTOR,
    ConfigOption,
    JsonOption,
    console,
    explain,
    fail,
    handle_errors,
    print_json,
    store_from,
)
from limen.store.options import GlobalOptions, canonical_option, parse_option_text

app = typer.Typer(help="Global options (SIP settings).", no_args_is_help=True)


def _shown(value: Any) -> Any:
    """A value as `set` takes it: on/off for booleans, a,b for lists."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


@app.command("show")
@handle_errors
def show(
    name: Annotated[str | None, typer.Argument(help="One option (default: all).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the global options, or one of them."""
    if name is not None:
        name = canonical_option(name)
    if name is not None and name not in GlobalOptions.model_fields:
        fail(f"unknown option {name!r} (known: {', '.join(GlobalOptions.names())})", as_json)
    with store_from(config) as store:
        values = store.options.get().model_dump(mode="json")
    defaults = GlobalOptions().model_dump(mode="json")
    if name is not None:
        values = {name: values[name]}
    if as_json:
        print_json(values)
        return
    explain(
        "Global options (`limen options set NAME VALUE`; devices may override some)",
        [
            (
                key,
                _shown(value),
                "" if value == defaults[key] else "changed",
                GlobalOptions.describe(key),
            )
            for key, value in values.items()
        ],
    )


@app.command("set")
@handle_errors
def set_(
    name: str,
    value: str,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set one option, e.g. `limen options set heartbeat_interval 30`,
    `limen options set challenge_methods INVITE,SUBSCRIBE`, `... sip_udp on`."""
    try:
        parsed = parse_option_text(name, value)
    except KeyError:
        fail(f"unknown option {name!r} (known: {', '.join(GlobalOptions.names())})", as_json)
    name = canonical_option(name)
    with store_from(config) as store:
        options = store.options.set({name: parsed}, CLI_ACTOR)
    new = options.model_dump(mode="json")[name]
    if as_json:
        print_json({name: new})
    else:
        console.print(f"{name} = [bold]{escape(str(new))}[/]")


@app.command("reset")
@handle_errors
def reset(name: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Return one option to its default."""
    name = canonical_option(name)
    with store_from(config) as store:
        options = store.options.reset([name], CLI_ACTOR)
    new = options.model_dump(mode="json")[name]
    if as_json:
        print_json({name: new})
    else:
        console.print(f"{name} = [bold]{escape(str(new))}[/] (default)")
