"""Backup and restore of a Limen node: the store, the secret key, the CA and certificates,
and the config, in one file encrypted with a passphrase.

File format (``limen-backup`` version 1)::

    b"LIMENBK1" | scrypt salt (16) | log2 N (1) | r (1) | p (1) | nonce (12) | ciphertext

The key is scrypt(passphrase, salt, N, r, p) (RFC 7914), 32 bytes; the ciphertext is
AES-256-GCM over a gzip'd tar, with the header before it as associated data, so a wrong
passphrase and any changed byte are both detected (the tag fails) before anything is
read. The tar holds:

- ``manifest.json``: format, Limen version, schema revision, when, row counts;
- ``store.json``: every table's rows, read in one consistent snapshot (SQLite: one read
  transaction, which in WAL mode sees one committed state; PostgreSQL: REPEATABLE READ).
  Rows, not a database file, so a backup taken on SQLite restores onto PostgreSQL;
- ``files/data/...``: the files of the data folder except the SQLite database itself
  (the secret key, Limen's CA, listener certificates and keys);
- ``files/config``: the config file; ``files/abs/...``: key and certificate files the
  config names outside the data folder.

Restore checks everything (passphrase, integrity, format, schema) before it changes
anything; it then replaces every table's rows in one transaction, and puts the files in
place (written beside, then renamed) only once that transaction has committed.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from limen import __version__
from limen.config import Settings
from limen.store import models
from limen.store.db import current_revision, head_revision, make_engine, upgrade

MAGIC = b"LIMENBK1"
FORMAT = "limen-backup"
VERSION = 1
# scrypt cost: N = 2**15, r = 8, p = 1 (RFC 7914 §2's interactive figure, ~32 MiB, ~0.1 s).
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
_HEADER = len(MAGIC) + 16 + 3 + 12
# A passphrase shorter than this is refused when a backup is made.
MIN_PASSPHRASE = 8
# The SQLite database files are in the store's rows; never copied as files.
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class BackupError(Exception):
    """The backup cannot be made or restored; nothing was changed by a restore."""


def _derive(passphrase: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    if not 10 <= log_n <= 20 or not 1 <= r <= 16 or not 1 <= p <= 4:
        raise BackupError("not a Limen backup (unexpected key derivation parameters)")
    return Scrypt(salt=salt, length=32, n=1 << log_n, r=r, p=p).derive(passphrase.encode())


def encrypt(payload: bytes, passphrase: str) -> bytes:
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    header = MAGIC + salt + bytes([SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P]) + nonce
    key = _derive(passphrase, salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
    return header + AESGCM(key).encrypt(nonce, payload, header)


def decrypt(blob: bytes, passphrase: str) -> bytes:
    if len(blob) < _HEADER + 16 or not blob.startswith(MAGIC):
        raise BackupError("not a Limen backup file (bad header)")
    header = blob[:_HEADER]
    salt = header[len(MAGIC) : len(MAGIC) + 16]
    log_n, r, p = header[len(MAGIC) + 16 : len(MAGIC) + 19]
    nonce = header[len(MAGIC) + 19 :]
    key = _derive(passphrase, salt, log_n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, blob[_HEADER:], header)
    except InvalidTag:
        raise BackupError(
            "wrong passphrase, or the backup file is corrupted (authentication failed)"
        ) from None


# -- rows ---------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$dt"}:
        return dt.datetime.fromisoformat(value["$dt"])
    return value


def _tables() -> list[Any]:
    return list(models.Base.metadata.sorted_tables)


def _snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows as of one instant."""
    out: dict[str, list[dict[str, Any]]] = {}
    if engine.dialect.name == "sqlite":
        conn_cm = engine.connect()
    else:
        conn_cm = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with conn_cm as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite opens no transaction for SELECTs by itself: without this, each
            # table would be read at a different moment.
            conn.exec_driver_sql("BEGIN")
        try:
            for table in _tables():
                order = list(table.primary_key.columns)
                rows = conn.execute(select(table).order_by(*order)).mappings().all()
                out[table.name] = [{k: _encode(v) for k, v in row.items()} for row in rows]
        finally:
            conn.rollback()
    return out


# -- files --------------------------------------------------------------------------------


def _sqlite_files(settings: Settings) -> set[Path]:
    url = settings.db_url
    if not url.startswith("sqlite") or "///" not in url:
        return set()
    base = url.split("///", 1)[1].split("?", 1)[0]
    if not base or base == ":memory:":
        return set()
    return {Path(base + suffix).resolve() for suffix in _SQLITE_SUFFIXES}


def _external_files(settings: Settings) -> list[Path]:
    """Key and certificate files the config names outside the data folder."""
    names = [
        settings.secret_key_file,
        settings.sip.tls_cert,
        settings.sip.tls_key,
        settings.api.tls_cert,
        settings.api.tls_key,
        settings.provisioning.tls_cert,
        settings.provisioning.tls_key,
    ]
    data = settings.data_path.resolve()
    out = []
    for name in names:
        if not name:
            continue
        path = settings.resolve(name).resolve()
        if not path.is_relative_to(data) and path.is_file():
            out.append(path)
    return out


def _data_files(settings: Settings) -> Iterator[tuple[str, Path]]:
    data = settings.data_path.resolve()
    skip = _sqlite_files(settings)
    if not data.is_dir():
        return
    for path in sorted(data.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.resolve() not in skip:
            yield path.relative_to(data).as_posix(), path


# -- backup -------------------------------------------------------------------------------


@dataclass
class Manifest:
    format: str
    version: int
    limen_version: str
    created_at: str
    dialect: str
    schema_revision: str | None
    rows: dict[str, int]
    files: list[str] = field(default_factory=list)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def create_backup(settings: Settings, passphrase: str, engine: Engine | None = None) -> bytes:
    """An encrypted backup of the node described by ``settings`` (its store, key, CA,
    certificates and config)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    if not settings.secret_key_path.is_file():
        raise BackupError(
            f"secret key file {settings.secret_key_path} is missing: a backup without it "
            "could not give back any stored password"
        )
    own = engine is None
    engine = engine or make_engine(settings.db_url)
    try:
        rows = _snapshot(engine)
        revision = current_revision(engine)
        dialect = engine.dialect.name
    finally:
        if own:
            engine.dispose()
    files: list[tuple[str, bytes, int]] = []
    for relative, path in _data_files(settings):
        files.append((f"files/data/{relative}", path.read_bytes(), path.stat().st_mode & 0o777))
    config = Path(settings.config_path) if settings.config_path else None
    if config is not None and config.is_file():
        files.append(("files/config", config.read_bytes(), 0o600))
    for path in _external_files(settings):
        files.append((f"files/abs{path}", path.read_bytes(), path.stat().st_mode & 0o777))
    manifest = Manifest(
        format=FORMAT,
        version=VERSION,
        limen_version=__version__,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        dialect=dialect,
        schema_revision=revision,
        rows={name: len(items) for name, items in rows.items()},
        files=[name for name, _data, _mode in files],
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "manifest.json", json.dumps(manifest.__dict__, indent=1).encode())
        _add(tar, "store.json", json.dumps(rows, separators=(",", ":")).encode())
        for name, data, mode in files:
            _add(tar, name, data, mode)
    return encrypt(gzip.compress(buffer.getvalue(), 6), passphrase)


# -- restore ------------------------------------------------------------------------------


@dataclass
class Contents:
    manifest: Manifest
    rows: dict[str, list[dict[str, Any]]]
    files: dict[str, tuple[bytes, int]]


def open_backup(blob: bytes, passphrase: str) -> Contents:
    """Decrypt and check a backup; raises :class:`BackupError` for anything wrong."""
    plain = decrypt(blob, passphrase)
    try:
        tar_bytes = gzip.decompress(plain)
        files: dict[str, tuple[bytes, int]] = {}
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = member.name
                if name.startswith("/") or ".." in Path(name).parts:
                    raise BackupError(f"unsafe path in backup: {name!r}")
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[name] = (extracted.read(), member.mode & 0o777)
        manifest = Manifest(**json.loads(files.pop("manifest.json")[0]))
        rows = json.loads(files.pop("store.json")[0])
    except BackupError:
        raise
    except (OSError, EOFError, KeyError, ValueError, TypeError, tarfile.TarError) as exc:
        raise BackupError(f"backup file is damaged: {exc}") from exc
    if manifest.format != FORMAT or manifest.version != VERSION:
        raise BackupError(
            f"unsupported backup format {manifest.format!r} version {manifest.version}"
        )
    known = {table.name: table for table in _tables()}
    for name, items in rows.items():
        table = known.get(name)
        if table is None:
            raise BackupError(f"backup has a table this Limen does not know: {name!r}")
        columns = set(table.columns.keys())
        for item in items:
            extra = set(item) - columns
            if extra:
                raise BackupError(f"backup rows of {name!r} have unknown columns {sorted(extra)}")
    return Contents(manifest, rows, files)


def _store_has_data(conn: Connection) -> bool:
    for model in (models.Icp, models.SipDevice, models.Consumer):
        if conn.scalar(select(func.count()).select_from(model)):
            return True
    return False


def _load_rows(conn: Connection, rows: dict[str, list[dict[str, Any]]]) -> None:
    tables = _tables()
    for table in reversed(tables):
        conn.execute(delete(table))
    for table in tables:
        items = [{k: _decode(v) for k, v in item.items()} for item in rows.get(table.name, [])]
        if items:
            conn.execute(insert(table), items)
    if conn.dialect.name == "postgresql":
        # Rows kept their ids; move each id sequence past them.
        for table in tables:
            column = table.columns.get("id")
            if column is None or not column.primary_key or not column.autoincrement:
                continue
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table.name}"
                )
            )


@dataclass
class RestoreReport:
    rows: dict[str, int]
    files: list[str]
    config_written: bool


def _target_path(settings: Settings, name: str) -> Path | None:
    if name.startswith("files/data/"):
        return settings.data_path / name.removeprefix("files/data/")
    if name.startswith("files/abs/"):
        return Path("/" + name.removeprefix("files/abs/"))
    return None


def restore_backup(
    contents: Contents, settings: Settings, *, force: bool = False, write_config: bool = False
) -> RestoreReport:
    """Put ``contents`` in place for the node ``settings`` describes: its database (made
    or migrated to the current schema first) and its files. With ``write_config``, the
    backup's config file is written to ``settings.config_path`` too.

    A store that already holds ICPs, devices or consumers is only replaced with
    ``force``. Everything is checked before anything changes."""
    revision = contents.manifest.schema_revision
    if revision is not None:
        from alembic.script import ScriptDirectory

        from limen.store.db import alembic_config

        scripts = ScriptDirectory.from_config(alembic_config())
        try:
            scripts.get_revision(revision)
        except Exception as exc:  # alembic raises several kinds for unknown revisions
            raise BackupError(
                f"backup has schema revision {revision!r}, which this Limen does not know "
                "(restore with the same or a newer Limen)"
            ) from exc
    settings.data_path.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    staged: list[tuple[Path, Path]] = []
    try:
        try:
            upgrade(engine)
        except Exception as exc:
            raise BackupError(f"cannot prepare the database: {exc}") from exc
        if current_revision(engine) != head_revision():
            raise BackupError("the target database is not at this Limen's schema")
        # Files first, beside their targets: a full disk fails here, before the store.
        for name, (data, mode) in contents.files.items():
            if name == "files/config":
                if not write_config:
                    continue
                target: Path | None = Path(settings.config_path)
            else:
                target = _target_path(settings, name)
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.restoring")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode or 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            staged.append((temporary, target))
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                if _store_has_data(conn) and not force:
                    raise BackupError(
                        "the target store already holds ICPs, devices or consumers; "
                        "restore into an empty store, or pass --force to replace them"
                    )
                _load_rows(conn, contents.rows)
        except BackupError:
            raise
        except Exception as exc:
            raise BackupError(f"restoring the store failed, nothing was changed: {exc}") from exc
    except BaseException:
        for temporary, _target in staged:
            temporary.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    for temporary, target in staged:
        temporary.replace(target)
    for database in _sqlite_files(settings):
        if database.exists():
            database.chmod(0o600)  # admin password hashes and encrypted secrets
    return RestoreReport(
        rows={name: len(items) for name, items in contents.rows.items()},
        files=[str(target) for _temporary, target in staged],
        config_written=write_config and "files/config" in contents.files,
    )
