"""API fixtures: a core on a fresh SQLite store, the app, an HTTPS-addressed client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from limen.api import create_app
from limen.config import Settings
from limen.core import Core

BASE = "https://limen.test"


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
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def app(core: Core) -> FastAPI:
    return create_app(core)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


@pytest.fixture
def admin_token(core: Core) -> str:
    """A bearer API token of admin 'root' (made without the slow password hashing)."""
    from limen.store import models

    with core.store.sessions() as s, s.begin():
        s.add(models.AdminUser(username="root", password_hash="!", active=True))
    token, _record = core.store.admins.issue_token("root", name="tests")
    return token


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_core(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Core]:
    """A core on SQLite, then on a real PostgreSQL (tests that differ by backend)."""
    url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened = Core.open(
        Settings(
            config_path=str(tmp_path / "limen.toml"),
            data_dir=str(tmp_path / "data"),
            database_url=url,
            public_fqdn="limen.test",
            public_ip="127.0.0.1",
        )
    )
    try:
        yield opened
    finally:
        opened.close()


def root_token(core: Core) -> str:
    """An API token of a new admin 'root' (without the slow password hashing)."""
    from limen.store import models

    with core.store.sessions() as s, s.begin():
        s.add(models.AdminUser(username="root", password_hash="!", active=True))
    token, _record = core.store.admins.issue_token("root", name="tests")
    return token


@pytest.fixture
def any_token(any_core: Core) -> str:
    return root_token(any_core)


@pytest.fixture
async def any_http(any_core: Core, any_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app on ``any_core``, with an admin bearer token."""
    transport = httpx.ASGITransport(app=create_app(any_core))
    headers = {"Authorization": f"Bearer {any_token}"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as client:
        yield client
