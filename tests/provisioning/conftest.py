"""Provisioning fixtures: a store, the fake PBX (see ``prov_support``), Limen's
provisioning proxy on a free port, the admin API app, and the ``limen`` CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prov_support import HASH, FakePbx, Limen, MakeProxy, make_settings, running_pbx
from typer.testing import CliRunner, Result

from limen.config import ProvisioningSettings, Settings
from limen.core import Core
from limen.provisioning import ProvisioningServer
from limen.store import Store, open_store
from limen.store.schemas import DeviceCreate, IcpCreate


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "limen")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def core(settings: Settings, store: Store) -> Core:
    return Core(settings=settings, store=store)


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[FakePbx]:
    with running_pbx(tmp_path / "pbx") as state:
        yield state


@pytest.fixture
def icp(store: Store, pbx: FakePbx) -> str:
    store.icps.create(
        IcpCreate(
            name="mv5000",
            address="127.0.0.1",
            xml_destination_port=pbx.port,
            hashes=[HASH],
        )
    )
    store.devices.create(
        DeviceCreate(
            setside_username="7000",
            setside_password="password1",
            icp="mv5000",
            clientid="00:08:5d:43:30:b8",
        )
    )
    return "mv5000"


@pytest.fixture
async def make_proxy(settings: Settings, store: Store, pbx: FakePbx) -> AsyncIterator[MakeProxy]:
    """Start a proxy with these provisioning settings (upstream pinned to the fake PBX
    unless told otherwise); every one is stopped at the end."""
    started: list[ProvisioningServer] = []

    async def make(**values: Any) -> ProvisioningServer:
        base: dict[str, Any] = {
            "upstream_pin_sha256": pbx.fingerprint,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "rate_limit_burst": 1000,
            "guess_limit": 1000,
        }
        prov = ProvisioningSettings(**(base | values))
        custom = settings.model_copy(update={"provisioning": prov})
        server = ProvisioningServer(Core(settings=custom, store=store), "127.0.0.1", 0)
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


# -- the admin API and the CLI -------------------------------------------------------------------


@pytest.fixture
def app(core: Core) -> FastAPI:
    from limen.api import create_app

    return create_app(core)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://limen.test") as client:
        yield client


@pytest.fixture
def admin(store: Store) -> dict[str, str]:
    """Bearer header of an admin (made without the slow password hashing)."""
    from limen.store import models

    with store.sessions() as s, s.begin():
        s.add(models.AdminUser(username="root", password_hash="!", active=True))
    token, _record = store.admins.issue_token("root", name="tests")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    config = folder / "limen.toml"
    # fqdn_for_phones: these sites declare that phones resolve the name (issue 11).
    config.write_text(
        'data_dir = "data"\npublic_fqdn = "limen.test"\npublic_ip = "203.0.113.5"\n'
        "fqdn_for_phones = true\n"
    )
    return config


@pytest.fixture
def limen(cli_config: Path, monkeypatch: pytest.MonkeyPatch) -> Limen:
    """Run ``limen ARGS... --config <tmp config>``; asserts the exit code (default 0)."""
    from limen.cli import app as cli_app

    monkeypatch.delenv("LIMEN_CONFIG", raising=False)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli_app, [*args, "--config", str(cli_config)])
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return run


@pytest.fixture
def cli_settings(cli_config: Path) -> Settings:
    from limen.config import load_settings

    return load_settings(cli_config)
