"""``limen backup`` / ``limen restore``: a populated node (ICPs, devices, consumers, OAuth
tokens, registration bindings, CA and certificates) restored into fresh folders on
SQLite and on PostgreSQL gives back the same data, and ``limen serve`` starts on it with
the same certificate and the PBX's final token still valid. A wrong passphrase or a
damaged file is refused with nothing changed."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from oauthlib.oauth1 import Client
from typer.testing import CliRunner

from limen.app import prepare
from limen.cli import app
from limen.config import Settings, load_settings
from limen.store import open_store
from limen.store.bindings import BindingRepository, StoredBinding
from limen.store.schemas import (
    ConsumerCreate,
    DeviceCreate,
    IcpCreate,
    OverrideCreate,
    Permission,
)

CONFIG = """\
data_dir = "data"
public_fqdn = "limen.test"
public_ip = "127.0.0.1"

[sip]
bind = "127.0.0.1"
udp_port = 0
tcp_port = 0
tls_port = 0

[api]
bind = "127.0.0.1"
port = 0

[provisioning]
bind = "127.0.0.1"
port = 0
"""
PASSPHRASE = "correct horse battery staple"


def run(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def populate(settings: Settings) -> dict[str, str]:
    """A node with something in every table; returns the PBX's final token and secrets."""
    prepare(settings)
    store = open_store(settings)
    try:
        store.icps.create(
            IcpCreate(name="mv5000", address="192.0.2.10", hashes=["16a78df75f29020a"])
        )
        store.icps.create(IcpCreate(name="lab", address="192.0.2.20", domain="lab.example"))
        guids = [
            store.devices.create(
                DeviceCreate(
                    setside_username=user,
                    setside_password=f"set-{user}",
                    icpside_password=f"icp-{user}",
                    icp="mv5000",
                    clientid=mac,
                )
            ).guid
            for user, mac in (("+15551001", "00085D000001"), ("7002", None), ("a*3", None))
        ]
        store.options.set({"options_interval": 45, "challenge_methods": ["INVITE"]})
        store.overrides.add(
            OverrideCreate(
                file="tug.ini", section="proxy::sip_tls", parameter="secure_in::ssl::use_cert"
            )
        )
        _record, secret = store.consumers.create(
            ConsumerCreate(
                name="mv5000-pbx",
                permissions=[Permission(path="/mbg/v1/devices/", read=True, write=True)],
            )
        )
        store.tokens.create_temporary(
            "mv5000-pbx", "t" * 24, "temporary-secret", "oob", dt.timedelta(minutes=15)
        )
        verifier = store.tokens.approve("t" * 24)
        store.tokens.exchange(
            "mv5000-pbx", "t" * 24, verifier, "f" * 24, "final-secret", dt.timedelta(days=365)
        )
        store.tokens.create_temporary(
            "mv5000-pbx", "p" * 24, "pending-secret", "oob", dt.timedelta(minutes=15)
        )
        expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
        BindingRepository(store).apply(
            [
                StoredBinding(
                    guids[0],
                    "sip:+15551001@limen.test",
                    "<sip:+15551001@198.51.100.7:5061;transport=tls>",
                    "tls",
                    "198.51.100.7",
                    40123,
                    "127.0.0.1",
                    5061,
                    True,
                    "call-id-1@phone",
                    7,
                    expires,
                )
            ],
            [],
        )
    finally:
        store.close()
    return {"consumer": "mv5000-pbx", "secret": secret, "token": "f" * 24}


def dump(settings: Settings) -> dict[str, Any]:
    """Everything a node relies on, secrets in clear, in comparable form."""
    store = open_store(settings)
    try:
        now = dt.datetime.now(dt.UTC)
        consumers = store.consumers.list()
        return {
            "icps": [r.model_dump() for r in store.icps.list()],
            "devices": [r.model_dump() for r in store.devices.all_credentials()],
            "options": store.options.get().model_dump(),
            "overrides": [r.model_dump() for r in store.overrides.list()],
            "consumers": [r.model_dump() for r in consumers],
            "secrets": [store.consumers.auth(c.consumer_key) for c in consumers],
            "tokens": [r.model_dump(exclude={"expired"}) for r in store.tokens.list()],
            "token_secrets": [store.tokens.state(t.token) for t in store.tokens.list()],
            "bindings": BindingRepository(store).live(now),
            "admins": [r.username for r in store.admins.list()],
            "events": store.events.count(),
        }
    finally:
        store.close()


def site(folder: Path, config: str | None = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "limen.toml"
    if config is not None:
        path.write_text(config)
    return path


@pytest.fixture
def node_a(tmp_path: Path) -> tuple[Path, dict[str, str], Path, Path]:
    config = site(tmp_path / "a")
    pairing = populate(load_settings(config))
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "node-a.limen-backup"
    out = run("backup", str(backup), "--passphrase-file", str(passphrase), "--config", str(config))
    assert "wrote encrypted backup" in out.stdout
    return config, pairing, backup, passphrase


def test_restore_on_sqlite_gives_back_everything(
    node_a: tuple[Path, dict[str, str], Path, Path], tmp_path: Path
) -> None:
    config_a, _pairing, backup, passphrase = node_a
    assert os.stat(backup).st_mode & 0o777 == 0o600
    assert b"set-+15551001" not in backup.read_bytes()  # encrypted, not just packed
    config_b = site(tmp_path / "b", config=None)
    r = run("restore", str(backup), "--passphrase-file", str(passphrase), "--config", str(config_b))
    assert "wrote config" in r.stdout
    assert config_b.read_text() == config_a.read_text()
    a, b = load_settings(config_a), load_settings(config_b)
    assert dump(b) == dump(a)
    for name in ("secret.key", "api.crt", "api.key", "tls/ca.pem"):
        source = a.data_path / name
        if source.exists():
            assert (b.data_path / name).read_bytes() == source.read_bytes(), name
    assert (b.data_path / "secret.key").stat().st_mode & 0o777 == 0o600

    # A second restore onto a node that has data is refused, and changes nothing...
    before = dump(b)
    r = run(
        "restore",
        str(backup),
        "--passphrase-file",
        str(passphrase),
        "--config",
        str(config_b),
        code=1,
    )
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    assert dump(b) == before
    # ...unless forced.
    run(
        "restore",
        str(backup),
        "--passphrase-file",
        str(passphrase),
        "--force",
        "--config",
        str(config_b),
    )
    assert dump(b) == before


def test_wrong_passphrase_or_damaged_file_changes_nothing(
    node_a: tuple[Path, dict[str, str], Path, Path], tmp_path: Path
) -> None:
    config_a, _pairing, backup, passphrase = node_a
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    fresh = tmp_path / "fresh" / "limen.toml"
    r = run("restore", str(backup), "--passphrase-file", str(wrong), "--config", str(fresh), code=1)
    assert "wrong passphrase" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not fresh.parent.exists()

    blob = bytearray(backup.read_bytes())
    for position in (len(blob) // 2, len(blob) - 1, 10):
        damaged = tmp_path / f"damaged-{position}"
        copy = bytearray(blob)
        copy[position] ^= 0x01
        damaged.write_bytes(bytes(copy))
        r = run(
            "restore",
            str(damaged),
            "--passphrase-file",
            str(passphrase),
            "--config",
            str(fresh),
            code=1,
        )
        assert "corrupted" in r.stderr or "not a Limen backup" in r.stderr, r.stderr
        assert not fresh.parent.exists()
    truncated = tmp_path / "truncated"
    truncated.write_bytes(bytes(blob[:40]))
    r = run(
        "restore", str(truncated), "--passphrase-file", str(passphrase), "--config", str(fresh),
        code=1,
    )  # fmt: skip
    assert not fresh.parent.exists()

    # An existing node is left exactly as it was by a refused restore.
    a = load_settings(config_a)
    before = dump(a)
    key = (a.data_path / "secret.key").read_bytes()
    r = run(
        "restore", str(damaged), "--passphrase-file", str(passphrase), "--force",
        "--config", str(config_a), code=1,
    )  # fmt: skip
    assert dump(a) == before and (a.data_path / "secret.key").read_bytes() == key


def _wait_for_api(process: subprocess.Popen[str], deadline: float) -> int:
    assert process.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"admin API on https://[^:]+:(\d+)/", line)
        if found:
            return int(found.group(1))
    raise AssertionError("limen serve did not start:\n" + "".join(seen))


def test_restore_from_sqlite_onto_postgresql_and_serve(
    node_a: tuple[Path, dict[str, str], Path, Path], tmp_path: Path, postgres_url: str
) -> None:
    config_a, pairing, backup, passphrase = node_a
    config_c = site(tmp_path / "c", config=None)
    run(
        "restore",
        str(backup),
        "--passphrase-file",
        str(passphrase),
        "--database-url",
        postgres_url,
        "--config",
        str(config_c),
    )
    c = load_settings(config_c)
    assert c.db_url == postgres_url
    assert dump(c) == dump(load_settings(config_a))
    # New rows after the restore get new ids (sequences moved past the restored rows).
    store = open_store(c)
    try:
        store.devices.create(DeviceCreate(setside_username="8000", setside_password="x", icp="lab"))
        assert store.devices.count() == 4
    finally:
        store.close()

    process = subprocess.Popen(
        [sys.executable, "-m", "limen.cli", "serve", "--config", str(config_c)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        port = _wait_for_api(process, time.monotonic() + 60)
        # The restored node shows the certificate of the original one, and the PBX's
        # final token, secret and permissions still work against it.
        context = ssl.create_default_context(
            cafile=str(load_settings(config_a).data_path / "api.crt")
        )
        client = Client(
            pairing["consumer"],
            client_secret=pairing["secret"],
            resource_owner_key=pairing["token"],
            resource_owner_secret="final-secret",
        )
        base = f"https://127.0.0.1:{port}"
        uri, headers, _ = client.sign(f"{base}/mslrest/mbg/v1/devices/sip/%2B15551001/")
        with httpx.Client(verify=context) as http:
            r = http.get(uri, headers=headers)
        assert r.status_code == 200, r.text
        assert json.loads(r.text)["clientid"] == "00085D000001"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
