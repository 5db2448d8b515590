"""Limen's configuration store (SQLAlchemy 2 + Alembic; SQLite WAL or PostgreSQL).

Entry points:

- :func:`open_store` — connect, apply pending migrations, load the secret key; returns a
  :class:`Store` whose repositories (``store.icps``, ``store.devices``, ``store.options``,
  ``store.overrides``, ``store.consumers``, ``store.tokens``, ``store.events``,
  ``store.admins``) are used by the API, the CLI and the gateway.
- :func:`init_data` — what ``limen init`` adds: key file, database, first admin, API
  certificate; returns lines to print.
"""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError

from limen.certs import api_tls_paths, ensure_self_signed
from limen.config import Settings
from limen.store import models
from limen.store.db import make_engine, upgrade
from limen.store.errors import Conflict, Invalid, NotFound, StoreError
from limen.store.options import GlobalOptions
from limen.store.repository import Change, Store
from limen.store.secrets import SecretBox, create_key_file, random_password, read_key_file

__all__ = [
    "Change",
    "Conflict",
    "GlobalOptions",
    "Invalid",
    "NotFound",
    "Store",
    "StoreError",
    "api_tls_paths",
    "init_data",
    "open_store",
]

_KEY_CHECK = "key_check"
_KEY_CHECK_TEXT = "limen-secret-key-check"


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """Open the store named by ``settings`` and bring its schema to the latest revision.

    The secret key file (``settings.secret_key_path``) is created when the database holds
    no secrets yet; when the database already has secrets, a missing or different key file
    is an error (:class:`StoreError`) rather than a silent loss of every password.
    """
    engine = make_engine(settings.db_url)
    try:
        if migrate:
            upgrade(engine)
        with engine.connect() as conn:
            check = conn.scalar(select(models.Meta.value).where(models.Meta.key == _KEY_CHECK))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open the database {engine.url!r}: {exc}") from exc
    key_path = settings.secret_key_path
    if key_path.exists():
        key = read_key_file(key_path)
    elif check is None:
        key = create_key_file(key_path)
    else:
        engine.dispose()
        raise StoreError(
            f"secret key file {key_path} is missing but the database holds encrypted "
            "secrets: restore the key file (on a cluster, copy it from the first node)"
        )
    try:
        box = SecretBox(key)
    except StoreError as exc:
        engine.dispose()
        raise StoreError(f"secret key file {key_path} is not a Limen key: {exc}") from None
    if check is None:
        with engine.begin() as conn:
            conn.execute(
                insert(models.Meta).values(key=_KEY_CHECK, value=box.encrypt(_KEY_CHECK_TEXT))
            )
    else:
        try:
            box.decrypt(check)
        except StoreError:
            engine.dispose()
            raise StoreError(f"secret key file {key_path} does not match this database") from None
    return Store(engine, box)


def init_data(settings: Settings, admin_username: str = "admin") -> list[str]:
    """Create what a fresh installation needs; safe to run again. Returns lines to print:
    the key file (mode 0600), the database at the latest schema, the admin API
    certificate, and — only when no admin exists yet — a first admin with a generated
    password, printed once."""
    from pathlib import Path

    lines: list[str] = []
    settings.data_path.mkdir(parents=True, exist_ok=True)
    had_key = settings.secret_key_path.exists()
    store = open_store(settings)
    try:
        if not had_key:
            lines.append(f"created secret key file {settings.secret_key_path} (mode 0600)")
        lines.append(f"database ready: {store.engine.url.render_as_string(hide_password=True)}")
        cert, key = api_tls_paths(settings)
        if ensure_self_signed(
            Path(cert), Path(key), settings.public_fqdn or "limen.local", settings.public_ip
        ):
            lines.append(f"created admin API certificate {cert}")
        database = store.engine.url.database
        if store.engine.dialect.name == "sqlite" and database:
            # The database holds admin password hashes and encrypted secrets.
            Path(database).chmod(0o600)
        if store.admins.count() == 0:
            password = random_password(20)
            store.admins.create(admin_username, password, actor="limen init")
            lines.append(
                f"created admin user {admin_username!r} with password {password} "
                "(shown once; change it with `limen admin passwd`)"
            )
    finally:
        store.close()
    return lines
