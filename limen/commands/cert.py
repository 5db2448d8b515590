"""``limen cert show|renew|ca|check``: Limen's CA and its listeners' certificates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from limen import certs
from limen.commands._common import (
    ConfigOption,
    JsonOption,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
)
from limen.config import config_file_path, load_settings
from limen.store import open_store

app = typer.Typer(
    help="Certificates: Limen's CA, SIP/TLS, provisioning, admin API.", no_args_is_help=True
)

Names = Annotated[
    list[str] | None,
    typer.Argument(help="Which: ca, sip, provisioning, api (default: all)."),
]


def _check_names(names: list[str] | None, as_json: bool, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(names or []) - set(allowed))
    if unknown:
        fail(f"unknown certificate(s) {', '.join(unknown)} (known: {', '.join(allowed)})", as_json)


@app.command("show")
@handle_errors
def show(names: Names = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Subject, names, issuer, validity and SHA-256 fingerprint of each certificate."""
    _check_names(names, as_json, ("ca", *certs.SLOT_NAMES))
    settings = load_settings(config_file_path(config))
    infos, problems = certs.certificate_report(settings)
    if names:
        infos = [i for i in infos if i.name in names]
        problems = [p for p in problems if p.split(":", 1)[0] in names]
    if as_json:
        print_json({"certificates": [i.as_dict() for i in infos], "problems": problems})
        return
    for info in infos:
        out = Table(title=f"certificate {info.name}", show_header=False)
        out.add_column("field", style="bold")
        out.add_column("value")
        left = f"{info.days_left} days left" if info.days_left >= 0 else "EXPIRED"
        for key, value in (
            ("file", info.path),
            ("subject", info.subject),
            ("names", ", ".join(info.sans)),
            ("issuer", info.issuer),
            ("valid from", f"{info.not_before:%Y-%m-%d %H:%M} UTC"),
            ("valid until", f"{info.not_after:%Y-%m-%d %H:%M} UTC ({left})"),
            ("SHA-256", info.fingerprint_sha256),
            ("source", "operator file" if info.operator else "Limen's CA"),
        ):
            out.add_row(key, Text(value))
        console.print(out)
    for problem in problems:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}")


@app.command("renew")
@handle_errors
def renew(
    names: Names = None,
    ca: Annotated[
        bool, typer.Option("--ca", help="Make a new CA first (phones need the new CA).")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue the generated certificates again (operator files are left alone)."""
    _check_names(names, as_json, certs.SLOT_NAMES)
    settings = load_settings(config_file_path(config))
    store = open_store(settings)
    try:
        lines = certs.renew_certificates(settings, store, only=names or None, ca=ca)
    finally:
        store.close()
    if as_json:
        print_json({"lines": lines})
    else:
        for line in lines:
            console.print(escape(line))


@app.command("ca")
@handle_errors
def export_ca(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The CA certificate (PEM) for phones' trust lists; the CA is made if missing."""
    settings = load_settings(config_file_path(config))
    authority, created = certs.ensure_ca(settings)
    pem = authority.pem.decode()
    if output is not None:
        output.write_text(pem)
    if as_json:
        print_json(
            {
                "file": str(output) if output is not None else None,
                "created": created,
                "fingerprint_sha256": certs.fingerprint_sha256(authority.cert),
                "pem": pem,
            }
        )
    elif output is not None:
        console.print(f"wrote Limen's CA certificate to {escape(str(output))}")
    else:
        typer.echo(pem, nl=False)


@app.command("check")
@handle_errors
def check(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Warn (log and alarm event) about certificates expiring soon; exit 1 if any."""
    settings = load_settings(config_file_path(config))
    store = open_store(settings)
    try:
        expiring = certs.check_certificate_expiry(settings, store)
    finally:
        store.close()
    if as_json:
        print_json(
            {
                "warn_days": settings.certs.warn_days,
                "expiring": [i.as_dict() for i in expiring],
            }
        )
    else:
        now = dt.datetime.now(dt.UTC)
        for info in expiring:
            err_console.print(
                f"[yellow]warning:[/] {info.name} ({escape(info.path)}) expires "
                f"{info.not_after:%Y-%m-%d} ({(info.not_after - now).days} days)"
            )
        if not expiring:
            console.print(f"no certificate expires within {settings.certs.warn_days} days")
    if expiring:
        raise typer.Exit(1)
