"""CLI fixtures: a config file in a temp folder and a runner for the ``limen`` command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from limen.cli import app

Limen = Callable[..., Result]


def make_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "limen.toml"
    config.write_text('data_dir = "data"\npublic_fqdn = "limen.test"\n')
    return config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_config(tmp_path / "site")


@pytest.fixture
def new_config(tmp_path: Path) -> Callable[[str], Path]:
    """Make another site's config file (another data dir, another store)."""
    return lambda name: make_config(tmp_path / name)


@pytest.fixture
def limen(config: Path, monkeypatch: pytest.MonkeyPatch) -> Limen:
    """Run ``limen ARGS... --config <tmp config>``; asserts the exit code (default 0)."""
    monkeypatch.delenv("LIMEN_CONFIG", raising=False)
    runner = CliRunner()

    def run(*args: str, code: int = 0, config_path: Path | None = None) -> Result:
        result = runner.invoke(app, [*args, "--config", str(config_path or config)])
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return run
