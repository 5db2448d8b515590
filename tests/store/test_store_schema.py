"""Schema, migrations, secret key handling and encryption at rest."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from limen.config import Settings
from limen.store import StoreError, open_store
from limen.store.db import current_revision, downgrade, head_revision, upgrade
from limen.store.models import Base
from limen.store.repository import Store
from limen.store.schemas import DeviceCreate, IcpCreate


def test_migrations_build_exactly_the_models_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert current_revision(store.engine) == head_revision()


def test_sqlite_default_is_a_wal_file_in_the_data_dir(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    store = open_store(sqlite_settings)
    try:
        assert store.engine.url.database == str(tmp_path / "data" / "limen.db")
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        store.close()


def test_downgrade_to_base_and_upgrade_again(store: Store) -> None:
    downgrade(store.engine, "base")
    with store.engine.connect() as conn:
        assert "icps" not in conn.dialect.get_table_names(conn)
    upgrade(store.engine)
    assert current_revision(store.engine) == head_revision()


def test_reopening_keeps_data_and_key(settings: Settings) -> None:
    first = open_store(settings)
    first.icps.create(IcpCreate(name="mv5000", address="100.100.100.71"))
    first.close()
    key = settings.secret_key_path.read_bytes()
    second = open_store(settings)
    assert [i.name for i in second.icps.list()] == ["mv5000"]
    assert settings.secret_key_path.read_bytes() == key
    second.close()


def test_key_file_is_created_private(store: Store, settings: Settings) -> None:
    mode = stat.S_IMODE(settings.secret_key_path.stat().st_mode)
    assert mode == 0o600


def test_missing_key_file_with_existing_secrets_is_an_error(settings: Settings) -> None:
    open_store(settings).close()
    settings.secret_key_path.unlink()
    with pytest.raises(StoreError, match="missing"):
        open_store(settings)
    assert not settings.secret_key_path.exists()


def test_wrong_key_file_is_detected(settings: Settings) -> None:
    from cryptography.fernet import Fernet

    open_store(settings).close()
    settings.secret_key_path.write_bytes(Fernet.generate_key())
    with pytest.raises(StoreError, match="does not match"):
        open_store(settings)


def test_sip_passwords_are_encrypted_at_rest(store: Store) -> None:
    store.icps.create(IcpCreate(name="mv5000", address="100.100.100.71"))
    store.devices.create(
        DeviceCreate(
            setside_username="7000",
            setside_password="set-side-Secret-1",
            icp="mv5000",
            icpside_password="icp-side-Secret-2",
        )
    )
    with store.engine.connect() as conn:
        row = conn.execute(
            text("SELECT setside_password_enc, icpside_password_enc FROM sip_devices")
        ).one()
    assert "Secret" not in row[0] and "Secret" not in row[1]
    creds = store.devices.credentials("7000")
    assert (creds.setside_password, creds.icpside_password) == (
        "set-side-Secret-1",
        "icp-side-Secret-2",
    )
    if store.engine.dialect.name == "sqlite":
        store.close()
        database = store.engine.url.database
        assert database is not None
        raw = b"".join(
            p.read_bytes() for p in Path(database).parent.glob("limen.db*") if p.is_file()
        )
        assert b"set-side-Secret-1" not in raw
