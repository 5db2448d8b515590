"""``limen phone config|serve-configs``: the phones' configuration files."""

from __future__ import annotations

from typing import Annotated

import typer

from limen.commands._common import (
    CLI_ACTOR,
    ConfigOption,
    JsonOption,
    console,
    fail,
    handle_errors,
    print_json,
    store_from,
)
from limen.config import config_file_path, load_settings
from limen.provisioning import phoneconfig
from limen.store import open_store
from limen.store.schemas import IcpUpdate, normalise_mac

app = typer.Typer(help="Phone configuration files (Mitel/Aastra 6800i).", no_args_is_help=True)


@app.command("config")
@handle_errors
def config_file(
    mac: Annotated[str, typer.Argument(help="The phone's MAC address.")],
    shared: Annotated[
        bool, typer.Option("--shared", help="Print the aastra.cfg of the phone's ICP instead.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the <MAC>.cfg Limen renders for a phone (contains its password)."""
    try:
        normalise_mac(mac)
    except ValueError as exc:
        fail(str(exc), as_json)
    settings = load_settings(config_file_path(config))
    store = open_store(settings)
    try:
        if shared:
            device = store.devices.get(normalise_mac(mac))
            name, text = phoneconfig.shared_file(store, settings, device.icp_guid)
        else:
            name, text = phoneconfig.phone_file(store, mac)
    except ValueError as exc:
        fail(str(exc), as_json)
    finally:
        store.close()
    if as_json:
        print_json({"file": name, "content": text})
    else:
        typer.echo(text, nl=False)


@app.command("serve-configs")
@handle_errors
def serve_configs(
    icp: Annotated[str, typer.Argument(help="ICP name or guid.")],
    off: Annotated[
        bool, typer.Option("--off", help="Proxy to the ICP's config server again.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark an ICP "Limen serves configs": the provisioning port renders its phones' files."""
    with store_from(config) as store:
        record = store.icps.update(icp, IcpUpdate(serves_configs=not off), CLI_ACTOR)
    if as_json:
        print_json({"icp": record.name, "serves_configs": record.serves_configs})
    elif record.serves_configs:
        console.print(f"Limen now serves the phone files of ICP [bold]{record.name}[/]")
    else:
        console.print(f"phone files of ICP [bold]{record.name}[/] are proxied to the ICP")
