"""Fixtures for the transport tests: Limen started in-process on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from siptest_client import StartLimen, make_settings

from limen.app import RunningApp, start


@pytest.fixture
async def start_limen(tmp_path: Path) -> AsyncIterator[StartLimen]:
    """``await start_limen(max_connections=3, ...)``: Limen with those [sip] settings."""
    apps: list[RunningApp] = []

    async def factory(**sip: Any) -> RunningApp:
        app = await start(make_settings(tmp_path, **sip))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close()


@pytest.fixture
async def limen(start_limen: StartLimen) -> RunningApp:
    """Limen on 127.0.0.1 and ::1, UDP, TCP and TLS, default limits."""
    return await start_limen(bind6="::1")
