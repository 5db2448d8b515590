"""Console fixtures: a core on a fresh SQLite store, the API app with the console mounted,
an admin with a password, and an HTTPS-addressed client logged in through the form."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from web_support import ADMIN, BASE, log_in

from limen.api import create_app
from limen.config import Settings
from limen.core import Core
from limen.web import Console, mount_console


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_fqdn="limen.test",
        public_ip="127.0.0.1",
    )


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    opened = Core.open(settings)
    opened.store.admins.create(*ADMIN)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def failures() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def app(core: Core, failures: list[tuple[Any, ...]]) -> FastAPI:
    api = create_app(core)

    def hook(ip: str, user: str, kind: str = "") -> None:
        failures.append((ip, user, kind))

    console: Console = mount_console(api, core, on_auth_failure=hook)
    api.state.console_ref = console
    return api


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


@pytest.fixture
async def http(anon: httpx.AsyncClient) -> httpx.AsyncClient:
    r = await log_in(anon, *ADMIN)
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    return anon
