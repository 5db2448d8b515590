"""Console fixtures: a core on a fresh SQLite store, the API app with the console mounted,
an admin with a password, and an HTTPS-addressed client logged in through the form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from limen.api import create_app
from limen.config import Settings
from limen.core import Core
from limen.web import Console, mount_console

BASE = "https://limen.test"
ADMIN = ("admin", "correct-horse-9")


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


def csrf_of(html: str, action: str | None = None) -> str:
    """The CSRF token inside the form posting to ``action`` (any form's when None): a
    form whose own hidden field is missing or empty must fail here, as in a browser."""
    if action is not None:
        start = html.find(f'action="{action}"')
        assert start >= 0, f"no form posting to {action}"
        html = html[start : html.index("</form>", start)]
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


async def log_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"csrf_token": csrf_of(form.text), "username": user, "password": password},
    )


@pytest.fixture
async def http(anon: httpx.AsyncClient) -> httpx.AsyncClient:
    r = await log_in(anon, *ADMIN)
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    return anon


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, Any], **kw: Any
) -> httpx.Response:
    """GET ``page``, take its CSRF token, POST ``data`` to ``action`` like a browser."""
    html = (await client.get(page)).text
    return await client.post(action, data={"csrf_token": csrf_of(html, action), **data}, **kw)
