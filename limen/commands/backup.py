"""``limen backup`` / ``limen restore``: one encrypted file that a fresh node starts from.

A new machine (SQLite or PostgreSQL) takes over from a backup with::

    limen restore node.limen-backup --config /etc/limen/limen.toml \\
        [--database-url postgresql+psycopg://limen@db/limen]
    limen serve --config /etc/limen/limen.toml

When the config file does not exist yet, the backup's config is written there (with
``--database-url`` replacing its database); an existing config is kept and only its
``database_url`` is changed when the option is given. See :mod:`limen.store.backup`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from limen.commands._common import ConfigOption, JsonOption, console, fail, print_json
from limen.config import config_file_path, load_settings
from limen.store.backup import BackupError, create_backup, open_backup, restore_backup

PASSPHRASE_ENV = "LIMEN_BACKUP_PASSPHRASE"

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"File whose first line is the passphrase (else ${PASSPHRASE_ENV}, else a prompt).",
    ),
]


def _passphrase(path: Path | None, confirm: bool) -> str:
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise BackupError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
        return text.splitlines()[0] if text else ""
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env is not None:
        return from_env
    if not sys.stdin.isatty():
        raise BackupError(f"no passphrase: give --passphrase-file or set ${PASSPHRASE_ENV}")
    value: str = typer.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm)
    return value


def set_toml_key(text: str, key: str, value: str) -> str:
    """``text`` with the top-level ``key = "value"`` set (replaced or added before the
    first table)."""
    line = f"{key} = {_toml_string(value)}"
    lines = text.splitlines()
    first_table = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for index in range(first_table):
        if pattern.match(lines[index]):
            lines[index] = line
            return "\n".join(lines) + "\n"
    lines.insert(first_table, line)
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def backup(
    output: Annotated[Path, typer.Argument(help="File to write (e.g. node1.limen-backup).")],
    passphrase_file: PassphraseFile = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Back up this node (store, secret key, CA and certificates, config), encrypted."""
    try:
        settings = load_settings(config_file_path(config))
        passphrase = _passphrase(passphrase_file, confirm=True)
        blob = create_backup(settings, passphrase)
        temporary = output.with_name(f".{output.name}.writing")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        temporary.replace(output)
    except BackupError as exc:
        fail(str(exc), as_json)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", as_json)
    except Exception as exc:  # a database that cannot be read: one line, not a traceback
        fail(f"backup failed: {exc}", as_json)
    if as_json:
        print_json({"file": str(output), "bytes": len(blob)})
    else:
        console.print(f"wrote encrypted backup {output} ({len(blob)} bytes)")


def restore(
    backup_file: Annotated[Path, typer.Argument(help="A file made by `limen backup`.")],
    passphrase_file: PassphraseFile = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Restore into this database (e.g. PostgreSQL) instead of the config's."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a store that already holds configuration.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup here (SQLite or PostgreSQL); a bad passphrase or file changes nothing."""
    path = config_file_path(config)
    try:
        try:
            blob = backup_file.read_bytes()
        except OSError as exc:
            raise BackupError(f"cannot read {backup_file}: {exc.strerror}") from exc
        contents = open_backup(blob, _passphrase(passphrase_file, confirm=False))
        if path.exists():
            config_text = path.read_text()
            write_config = database_url is not None
        else:
            if "files/config" not in contents.files:
                raise BackupError(f"{path} does not exist and the backup holds no config")
            config_text = contents.files["files/config"][0].decode()
            write_config = True
        if database_url is not None:
            config_text = set_toml_key(config_text, "database_url", database_url)
        # Settings are read from the config as it will be, written beside the final one
        # (relative paths resolve against the same folder), put in place at the end.
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.restoring")
        staged.write_text(config_text)
        try:
            settings = load_settings(staged)
            report = restore_backup(contents, settings, force=force)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        if write_config:
            os.chmod(staged, 0o600)
            staged.replace(path)
        else:
            staged.unlink(missing_ok=True)
    except BackupError as exc:
        fail(str(exc), as_json)
    except OSError as exc:
        fail(f"restore failed: {exc}", as_json)
    rows = sum(report.rows.values())
    if as_json:
        print_json(
            {
                "config": str(path),
                "config_written": write_config,
                "rows": report.rows,
                "files": report.files,
                "backup": contents.manifest.__dict__,
            }
        )
        return
    console.print(
        f"restored {rows} rows and {len(report.files)} files from a backup of "
        f"{contents.manifest.created_at} (Limen {contents.manifest.limen_version})"
    )
    if write_config:
        console.print(f"wrote config {path}")
    console.print(f"start the node with: limen serve --config {path}")
