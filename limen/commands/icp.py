"""``limen icp add|list|show|edit|remove``: the call servers (PBXs) Limen serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from limen.commands._common import (
    CLI_ACTOR,
    ConfigOption,
    JsonOption,
    config_file_path,
    console,
    handle_errors,
    print_json,
    show_record,
    store_from,
    table,
)
from limen.config import load_settings
from limen.control import ask
from limen.store.schemas import IcpCreate, IcpUpdate

app = typer.Typer(help="ICPs: the call servers (PBXs) behind Limen.", no_args_is_help=True)

Transport = Annotated[str | None, typer.Option(help="SIP transport toward the ICP: udp|tcp|tls.")]
Hashes = Annotated[list[str] | None, typer.Option("--hash", help="Provisioning hash (repeat).")]
Caps = Annotated[
    str | None, typer.Option("--capabilities", help="SIP transports the ICP accepts: udp,tcp,tls.")
]
XmlListen = Annotated[
    int | None,
    typer.Option("--xml-listen-port", help="Port Limen listens on for the XML link (4445)."),
]
XmlDest = Annotated[
    int | None,
    typer.Option(
        "--xml-destination-port",
        help="Port of the PBX's config server / XML link (4445): where phone files come from.",
    ),
]
Link = Annotated[
    bool | None, typer.Option("--link/--no-link", help="XML/provisioning link enabled.")
]

TlsVerify = Annotated[
    bool | None,
    typer.Option(
        "--tls-verify/--no-tls-verify",
        help="Verify the ICP's TLS certificate (--no-tls-verify: explicit, warned on use).",
    ),
]
TlsCa = Annotated[
    str | None, typer.Option("--tls-ca", help="CA file the ICP's chain must verify against.")
]
TlsPin = Annotated[
    str | None, typer.Option("--tls-pin", help="SHA-256 fingerprint of the ICP's certificate.")
]
TlsName = Annotated[
    str | None,
    typer.Option("--tls-server-name", help="Name the certificate must carry (default: the host)."),
]
TlsClientCert = Annotated[
    str | None, typer.Option("--tls-client-cert", help="Mutual TLS: certificate Limen presents.")
]
TlsClientKey = Annotated[str | None, typer.Option("--tls-client-key", help="Its private key.")]
OptionsInterval = Annotated[
    int | None,
    typer.Option("--options-interval", help="Seconds between OPTIONS pings per target (0: off)."),
]


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("add")
@handle_errors
def add(
    name: str,
    address: Annotated[str, typer.Option(help="Host name or IP address of the ICP.")],
    port: Annotated[int | None, typer.Option(help="SIP port (default 5060).")] = None,
    transport: Transport = None,
    icp_type: Annotated[str | None, typer.Option("--type", help="e.g. 'MiVoice 5000'.")] = None,
    capabilities: Caps = None,
    hashes: Hashes = None,
    domain: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    tls: Annotated[bool | None, typer.Option("--tls/--no-tls", help="HTTPS XML link.")] = None,
    serves_configs: Annotated[
        bool | None,
        typer.Option(
            "--serves-configs/--proxies-configs",
            help="Limen renders this ICP's phone files itself instead of proxying its server.",
        ),
    ] = None,
    tls_verify: TlsVerify = None,
    tls_ca: TlsCa = None,
    tls_pin: TlsPin = None,
    tls_server_name: TlsName = None,
    tls_client_cert: TlsClientCert = None,
    tls_client_key: TlsClientKey = None,
    options_interval: OptionsInterval = None,
    xml_listen_port: XmlListen = None,
    xml_destination_port: XmlDest = None,
    link: Link = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add an ICP."""
    data = IcpCreate.model_validate(
        _fields(
            name=name,
            address=address,
            port=port,
            transport=transport,
            type=icp_type,
            sip_capabilities=capabilities,
            hashes=hashes,
            domain=domain,
            description=description,
            tls=tls,
            serves_configs=serves_configs,
            tls_verify=tls_verify,
            tls_ca_file=tls_ca,
            tls_pin_sha256=tls_pin,
            tls_server_name=tls_server_name,
            tls_client_cert=tls_client_cert,
            tls_client_key=tls_client_key,
            options_interval=options_interval,
            xml_listen_port=xml_listen_port,
            xml_destination_port=xml_destination_port,
            link_enabled=link,
        )
    )
    with store_from(config) as store:
        record = store.icps.create(data, CLI_ACTOR)
    if as_json:
        print_json(record)
    else:
        console.print(f"added ICP [bold]{record.name}[/] ({record.guid})")


@app.command("list")
@handle_errors
def list_(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the ICPs."""
    with store_from(config) as store:
        icps = store.icps.list()
    if as_json:
        print_json(icps)
        return
    table(
        "ICPs",
        ["name", "address", "port", "transport", "type", "devices", "guid"],
        [[i.name, i.address, i.port, i.transport, i.type, i.device_count, i.guid] for i in icps],
    )


@app.command("show")
@handle_errors
def show(key: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show one ICP (by name or guid)."""
    with store_from(config) as store:
        record = store.icps.get(key)
    link = _live_link(config, record.guid)
    if as_json:
        print_json({**record.model_dump(), "link": link})
        return
    show_record(f"ICP {record.name}", record)
    if link is None:
        console.print("link: unknown (limen serve is not running)")
        return
    console.print(f"link: [bold]{link['state']}[/] (TLS trust: {link['tls'] or 'n/a'})")
    if link["error"]:
        console.print(f"  {link['error']}")
    table(
        "targets",
        ["target", "name", "state", "failures", "rtt ms", "last error"],
        [
            [t["target"], t["name"], t["state"], t["failures"], t["rtt_ms"], t["last_error"]]
            for t in link["targets"]
        ],
    )


def _live_link(config: Path | None, guid: str) -> dict[str, Any] | None:
    """The ICP's link state from the running ``limen serve`` (control socket), if any."""
    try:
        answer = ask(load_settings(config_file_path(config)), {"op": "icp_links"}, timeout=3.0)
    except (OSError, ValueError):
        return None
    if not answer or not answer.get("ok"):
        return None
    return next((lk for lk in answer.get("links", []) if lk.get("guid") == guid), None)


@app.command("edit")
@handle_errors
def edit(
    key: str,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    address: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    transport: Transport = None,
    icp_type: Annotated[str | None, typer.Option("--type")] = None,
    capabilities: Caps = None,
    hashes: Hashes = None,
    domain: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    tls: Annotated[bool | None, typer.Option("--tls/--no-tls")] = None,
    serves_configs: Annotated[
        bool | None,
        typer.Option(
            "--serves-configs/--proxies-configs",
            help="Limen renders this ICP's phone files itself instead of proxying its server.",
        ),
    ] = None,
    tls_verify: TlsVerify = None,
    tls_ca: TlsCa = None,
    tls_pin: TlsPin = None,
    tls_server_name: TlsName = None,
    tls_client_cert: TlsClientCert = None,
    tls_client_key: TlsClientKey = None,
    options_interval: OptionsInterval = None,
    xml_listen_port: XmlListen = None,
    xml_destination_port: XmlDest = None,
    link: Link = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change some fields of an ICP (others stay as they are)."""
    data = IcpUpdate.model_validate(
        _fields(
            name=name,
            address=address,
            port=port,
            transport=transport,
            type=icp_type,
            sip_capabilities=capabilities,
            hashes=hashes,
            domain=domain,
            description=description,
            tls=tls,
            serves_configs=serves_configs,
            tls_verify=tls_verify,
            tls_ca_file=tls_ca,
            tls_pin_sha256=tls_pin,
            tls_server_name=tls_server_name,
            tls_client_cert=tls_client_cert,
            tls_client_key=tls_client_key,
            options_interval=options_interval,
            xml_listen_port=xml_listen_port,
            xml_destination_port=xml_destination_port,
            link_enabled=link,
        )
    )
    with store_from(config) as store:
        record = store.icps.update(key, data, CLI_ACTOR)
    if as_json:
        print_json(record)
    else:
        console.print(f"updated ICP [bold]{record.name}[/]")


@app.command("remove")
@handle_errors
def remove(
    key: str,
    with_devices: Annotated[
        bool, typer.Option("--with-devices", help="Also delete the ICP's devices.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove an ICP; one that has devices needs --with-devices (they go too)."""
    with store_from(config) as store:
        record = store.icps.get(key)
        removed = store.icps.delete(key, CLI_ACTOR, with_devices=with_devices)
    if as_json:
        print_json({"deleted": record.guid, "devices_deleted": removed})
    else:
        console.print(f"removed ICP [bold]{record.name}[/] and {removed} device(s)")
