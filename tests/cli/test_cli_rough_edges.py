"""Issue 14's rough edges of the CLI: the verifier shown until used, unknown filter
values refused, an import that imports nothing fails, and a missing or wrong key file is
one line on stderr (exit 1) for every command that opens the store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from test_cli_commands import HEADER, Limen, setup_icp

from limen.config import load_settings
from limen.store import open_store
from limen.store.schemas import ConsumerCreate


def test_token_list_shows_the_verifier_until_the_token_is_used(limen: Limen, config: Path) -> None:
    limen("consumer", "add", "mv5000", "--mbg-defaults")
    store = open_store(load_settings(config))
    try:
        store.tokens.create_temporary("mv5000", "t" * 24, "s" * 20, "oob", dt.timedelta(minutes=5))
    finally:
        store.close()
    listed = json.loads(limen("token", "list", "--json").stdout)
    assert listed[0]["verifier"] is None  # pending: no verifier yet
    verifier = json.loads(limen("token", "approve", "t" * 24, "--json").stdout)["verifier"]
    listed = json.loads(limen("token", "list", "--status", "approved", "--json").stdout)
    assert [t["verifier"] for t in listed] == [verifier]
    assert verifier in limen("token", "list").stdout
    store = open_store(load_settings(config))
    try:
        store.tokens.exchange("mv5000", "t" * 24, verifier, "f" * 24, "x" * 20, dt.timedelta(1))
    finally:
        store.close()
    listed = json.loads(limen("token", "list", "--kind", "temporary", "--json").stdout)
    assert listed[0]["status"] == "used" and listed[0]["verifier"] is None
    assert verifier not in limen("token", "list").stdout


def test_unknown_filter_values_are_errors(limen: Limen) -> None:
    r = limen("token", "list", "--status", "bogus", code=1)
    assert "unknown token status 'bogus'" in r.stderr and "pending" in r.stderr
    r = limen("token", "list", "--kind", "bogus", code=1)
    assert "unknown token kind" in r.stderr
    r = limen("token", "list", "--kind", "access", "--status", "pending", code=1)
    assert "active, revoked" in r.stderr
    assert limen("token", "list", "--kind", "access", "--status", "active").exit_code == 0


def test_skip_invalid_fails_when_nothing_was_imported(limen: Limen, tmp_path: Path) -> None:
    setup_icp(limen)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\n1001,,mv5000,,,,\n1002,pw,nosuchicp,,,,\n")
    r = limen("device", "import", str(bad), "--skip-invalid", code=1)
    assert "nothing imported" in r.stderr
    r = limen("device", "import", str(bad), "--skip-invalid", "--json", code=1)
    assert json.loads(r.stdout)["imported"] == 0
    good = tmp_path / "good.csv"
    good.write_text(f"{HEADER}\n1001,pw,mv5000,,,,\n1002,pw,nosuchicp,,,,\n")
    r = limen("device", "import", str(good), "--skip-invalid")
    assert "imported 1 device(s)" in r.stdout


def test_consumer_permission_mode_is_case_insensitive_and_paths_must_exist(
    limen: Limen,
) -> None:
    out = json.loads(limen("consumer", "add", "mv5000", "-p", "/mbg/v1/icps/:RW", "--json").stdout)
    assert out["permissions"] == [{"path": "/mbg/v1/icps/", "read": True, "write": True}]
    r = limen("consumer", "add", "other", "-p", "/mbg/v1/icp/:r", code=1)
    assert "matches no resource" in r.stderr
    r = limen("consumer", "add", "ab", code=1)
    assert "consumer id" in r.stderr


COMMANDS = [
    ("icp", "list"),
    ("device", "list"),
    ("token", "list"),
    ("consumer", "list"),
    ("options", "show"),
    ("override", "list"),
    ("admin", "list"),
    ("init",),
    ("serve",),
]


@pytest.mark.parametrize("damage", ["missing", "garbage", "other key", "directory"])
def test_a_missing_or_wrong_key_file_is_one_line(limen: Limen, config: Path, damage: str) -> None:
    settings = load_settings(config)
    store = open_store(settings)
    try:
        store.consumers.create(ConsumerCreate(name="mv5000"))  # a secret under the key
    finally:
        store.close()
    key = settings.secret_key_path
    key.unlink()
    if damage == "garbage":
        key.write_text("not a key\n")
    elif damage == "other key":
        key.write_bytes(Fernet.generate_key())
    elif damage == "directory":
        key.mkdir()
    for command in COMMANDS:
        r = limen(*command, code=1)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (command, r.stderr)
        assert str(key) in lines[0] and "Traceback" not in r.stdout + r.stderr
