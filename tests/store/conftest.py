"""Store fixtures: every store test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from limen.config import Settings
from limen.store import Store, open_store


def make_settings(tmp_path: Path, database_url: str = "") -> Settings:
    return Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        database_url=database_url,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return make_settings(tmp_path, url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings for the embedded default (SQLite file in the data dir)."""
    return make_settings(tmp_path)
