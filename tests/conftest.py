"""Shared fixtures.

``postgres_server``: a throwaway PostgreSQL cluster for the whole session (initdb +
pg_ctl in a temp dir, unix socket only, no TCP port), stopped at the end. The store
tests run against it as well as SQLite. If PostgreSQL cannot be started the tests that
need it FAIL; set ``LIMEN_TEST_NO_PG=1`` to skip them knowingly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin")
PG_TEST_USER = "limentest"


@dataclass(frozen=True)
class PgServer:
    socket_dir: str
    port: int
    superuser: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@/{database}?host={self.socket_dir}&port={self.port}"

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host=self.socket_dir,
            port=self.port,
            user=self.superuser,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


def _pg_bin(name: str) -> str:
    for folder in PG_BIN_DIRS:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} not found (set LIMEN_TEST_NO_PG=1 to skip knowingly)")
    return found


def _run_as() -> list[str]:
    """initdb refuses root: run the server as 'postgres' (or a system user we create)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", PG_TEST_USER):
        try:
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"]
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_TEST_USER],
        check=True,
    )
    return ["runuser", "-u", PG_TEST_USER, "--"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    if os.environ.get("LIMEN_TEST_NO_PG") == "1":
        pytest.skip("LIMEN_TEST_NO_PG=1: PostgreSQL tests skipped on purpose")
    prefix = _run_as()
    root = Path(tempfile.mkdtemp(prefix="limen-pg-"))
    data = root / "data"
    if prefix:
        user = prefix[2]
        shutil.chown(root, user=user)
    port = 5432
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    try:
        subprocess.run(
            [
                *prefix,
                initdb,
                "-D",
                str(data),
                "-U",
                "limen",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        options = (
            f"-k {root} -p {port} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            [
                *prefix,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(
            f"could not start PostgreSQL ({exc.cmd[len(prefix)]}): {exc.stderr}\n{log}\n"
            "(set LIMEN_TEST_NO_PG=1 to skip the PostgreSQL tests knowingly)"
        )
    try:
        yield PgServer(socket_dir=str(root), port=port, superuser="limen")
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    name = "t_" + uuid.uuid4().hex[:16]
    postgres_server.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
