"""Admin users (argon2), bearer tokens, and ``init_data`` (what ``limen init`` adds)."""

from __future__ import annotations

import datetime as dt
import re
import stat

import pytest

from limen.config import Settings
from limen.store import Conflict, Invalid, init_data, open_store
from limen.store.repository import Store


def test_admin_password_is_argon2_hashed_and_checked(store: Store) -> None:
    store.admins.create("root", "correct horse")
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM admin_users").scalar()
    assert isinstance(stored, str) and stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert store.admins.authenticate("root", "correct horse") is not None
    assert store.admins.authenticate("root", "wrong") is None
    assert store.admins.authenticate("nobody", "correct horse") is None
    with pytest.raises(Conflict):
        store.admins.create("root", "another one")
    with pytest.raises(Invalid, match="password"):
        store.admins.create("short", "1234567")


def test_bearer_tokens_resolve_expire_and_revoke(store: Store) -> None:
    store.admins.create("root", "correct horse")
    token, record = store.admins.issue_token("root", name="ci")
    assert store.admins.resolve_token(token) == "root"
    assert store.admins.resolve_token(token + "x") is None
    old, _ = store.admins.issue_token("root", kind="session", ttl=dt.timedelta(seconds=-1))
    assert store.admins.resolve_token(old) is None
    assert [t.name for t in store.admins.list_tokens()] == ["ci"]
    store.admins.revoke_token(record.id)
    assert store.admins.resolve_token(token) is None


def test_password_change_ends_sessions(store: Store) -> None:
    store.admins.create("root", "correct horse")
    session, _ = store.admins.issue_token("root", kind="session", ttl=dt.timedelta(hours=1))
    api, _ = store.admins.issue_token("root", kind="api", name="script")
    store.admins.set_password("root", "battery staple")
    assert store.admins.resolve_token(session) is None
    assert store.admins.resolve_token(api) == "root"
    assert store.admins.authenticate("root", "battery staple") is not None


def test_init_data_creates_key_database_admin_and_certificate(settings: Settings) -> None:
    lines = init_data(settings)
    text = "\n".join(lines)
    assert stat.S_IMODE(settings.secret_key_path.stat().st_mode) == 0o600
    assert (settings.data_path / "api.crt").exists()
    assert stat.S_IMODE((settings.data_path / "api.key").stat().st_mode) == 0o600
    if not settings.database_url:
        assert stat.S_IMODE((settings.data_path / "limen.db").stat().st_mode) == 0o600
    match = re.search(r"admin user 'admin' with password (\S+)", text)
    assert match is not None
    store = open_store(settings)
    try:
        assert store.admins.authenticate("admin", match.group(1)) is not None
    finally:
        store.close()
    again = init_data(settings)
    assert not any("password" in line for line in again)
    store = open_store(settings)
    try:
        assert store.admins.count() == 1
    finally:
        store.close()
