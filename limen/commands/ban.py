"""``limen ban``: the bans in force — list, add, remove (issue 10).

Talks to the running ``limen serve`` through its control socket (``data/limen.ctl``); when
none runs, edits the saved bans file that serve restores when it starts.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.table import Table

from limen.commands._common import ConfigOption, JsonOption, console, err_console, print_json
from limen.config import config_file_path, load_settings
from limen.control import ask, offline

app = typer.Typer(help="Banned source addresses (failed authentication, floods, manual).")


def _request(config: Any, request: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    settings = load_settings(config_file_path(config))
    answer = ask(settings, request)
    if answer is not None:
        return answer, True
    return offline(settings, request), False


def _fail(answer: dict[str, Any]) -> None:
    if not answer.get("ok"):
        err_console.print(f"error: {answer.get('error', 'failed')}")
        raise typer.Exit(2)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command("list")
def list_bans(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The bans in force, newest first."""
    answer, live = _request(config, {"op": "bans"})
    _fail(answer)
    bans = answer["bans"]
    if as_json:
        print_json(bans)
        return
    table = Table("address", "reason", "since", "until", "offences", "detail")
    for ban in bans:
        table.add_row(
            ban["address"],
            ban["reason"],
            _when(ban["since"]),
            _when(ban["until"]),
            str(ban["offences"]),
            ban["detail"],
        )
    console.print(table)
    if not live:
        console.print("(limen serve is not running: saved bans)")


@app.command("add")
def add(
    address: Annotated[str, typer.Argument(help="IPv4 or IPv6 address.")],
    seconds: Annotated[
        float | None, typer.Option(help="Ban length (default: security.ban_time).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ban an address: it gets no answer on any listener until the ban ends."""
    answer, _ = _request(config, {"op": "ban", "address": address, "seconds": seconds})
    _fail(answer)
    ban = answer["bans"][0]
    if as_json:
        print_json(ban)
    else:
        console.print(f"banned {ban['address']} until {_when(ban['until'])}")


@app.command("remove")
def remove(
    address: Annotated[str, typer.Argument(help="IPv4 or IPv6 address.")],
    config: ConfigOption = None,
) -> None:
    """Lift a ban (and forget the address's failures)."""
    answer, _ = _request(config, {"op": "unban", "address": address})
    _fail(answer)
    if not answer.get("lifted"):
        err_console.print(f"{address} is not banned")
        raise typer.Exit(1)
    console.print(f"lifted the ban of {address}")
