"""schemathesis against the served OpenAPI schema: no 5xx on any generated request.

Every operation of ``/openapi.json`` is fuzzed in process (ASGI), with positive and
negative (schema-violating) inputs, twice: with a valid admin bearer token, so the
handlers and the store behind them run, and without credentials. The only check is
``not_a_server_error``: bad input must get a 4xx, never a 500. Generation is
derandomized, so a run is reproducible; a failure names the operation and prints the
reproducing request.

The operations are driven by hand (``APIOperation.as_strategy`` under Hypothesis'
``@given``) rather than by ``schemathesis.pytest.from_fixture``: the latter's lazy
parametrization sets a private pytest attribute that pytest 9 no longer has.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from limen.config import Settings
from limen.core import Core
from limen.store import schemas

# Examples per operation and per generation mode (positive, negative).
MAX_EXAMPLES = 25
# The same on PostgreSQL, write operations only.
PG_EXAMPLES = 10

_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _seed(core: Core) -> dict[str, str]:
    """A little of everything, so lists have records to serialize and lookups can hit.

    Returns the keys of what it made, by the path parameter naming them."""
    icp = core.store.icps.create(
        schemas.IcpCreate(name="pbx1", address="192.0.2.10", hashes=["a1b2c3d4e5f6"])
    )
    core.store.devices.create(
        schemas.DeviceCreate(
            setside_username="1001",
            setside_password="set-secret",
            icp=icp.guid,
            icpside_username="1001",
            icpside_password="icp-secret",
            clientid="00:11:22:33:44:55",
        )
    )
    core.store.consumers.create(schemas.ConsumerCreate(name="pbx-consumer"))
    token = core.store.tokens.create_temporary(
        "pbx-consumer", "tmp-token-1", "tmp-secret", "oob", dt.timedelta(minutes=15)
    )
    override = core.store.overrides.add(
        schemas.OverrideCreate(file="aastra.cfg", section="global", parameter="x", content="1")
    )
    event = core.store.events.list(limit=1)[0]
    return {
        "/mslrest/mbg/v1/globaloptions/": "sip_udp",
        "/mslrest/mbg/v1/icps/": "pbx1",
        "/mslrest/mbg/v1/devices/sip/": "1001",
        "/mslrest/msl/v1/events/": event.guid,
        "/mslrest/limen/v1/consumers/": "pbx-consumer",
        "/mslrest/limen/v1/tokens/": token.token,
        "/mslrest/limen/v1/overrides/": override.guid,
        "/mslrest/limen/v1/tma/": "pbx1",
    }


def _known_path(operation: APIOperation, known: dict[str, str]) -> dict[str, str] | None:
    """The seeded record's key for ``operation``'s (single) path parameter, if any."""
    names = [p.name for p in operation.path_parameters]
    if len(names) != 1:
        return None
    for prefix, key in known.items():
        if operation.path.startswith(prefix):
            return {names[0]: key}
    return None


def _operations(app: FastAPI) -> list[APIOperation]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # The schema declares its security schemes (oauth1, session); the tests send their
    # own credentials, so no Authorization values are generated from those schemes.
    schema.config.generation.update(with_security_parameters=False)
    operations: list[APIOperation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # the served schema itself is broken: fail on it
            raise result.err()
        operations.append(result.ok())
    return operations


# MBG paths Limen answers with 501 "not supported by Limen: <why>" (docs/api.md).
NOT_SUPPORTED = {"/mslrest/msl/v1/sysuser/{rest}", "/mslrest/msl/v1/amc/{rest}"}


def _fuzz(
    operation: APIOperation,
    headers: Callable[[], dict[str, str]],
    path_parameters: dict[str, str] | None,
    examples: int = MAX_EXAMPLES,
) -> list[int]:
    """Run ``operation`` on generated cases; returns the status codes it answered.

    Positive and negative cases, then (``path_parameters`` given) positive cases aimed at
    a seeded record, so that PUT and friends reach the store instead of a 404."""
    statuses: list[int] = []
    passes: list[tuple[GenerationMode, dict[str, str] | None]] = [
        (GenerationMode.POSITIVE, None),
        (GenerationMode.NEGATIVE, None),
    ]
    if path_parameters is not None:
        passes.append((GenerationMode.POSITIVE, path_parameters))
    for mode, fixed in passes:
        try:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
        except Exception:
            if mode is GenerationMode.POSITIVE:
                raise
            continue  # nothing to negate (no parameters, no body)

        @settings(_SETTINGS, max_examples=examples)
        @given(case=strategy)
        def run(case: Case) -> None:
            response = case.call(headers=headers())
            statuses.append(response.status_code)
            if response.status_code == 501 and operation.path in NOT_SUPPORTED:
                return  # a documented "not supported by Limen" answer, not a failure
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Unsatisfiable:
            # Negative mode on an operation whose inputs cannot be made invalid (no
            # constrained parameter, no body): schemathesis rejects every draw.
            if mode is GenerationMode.POSITIVE:
                raise
    return statuses


def _check_all(
    app: FastAPI,
    headers_for: Callable[[APIOperation], dict[str, str]],
    known: dict[str, str],
) -> dict[str, list[int]]:
    """Fuzz every operation; fail naming each one that answered a 5xx (or raised)."""
    failures: list[str] = []
    statuses: dict[str, list[int]] = {}
    # Deletions last, so the seeded records are still there for the other operations.
    operations = sorted(_operations(app), key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) >= 40, [op.label for op in operations]
    for operation in operations:
        try:
            statuses[operation.label] = _fuzz(
                operation, functools.partial(headers_for, operation), _known_path(operation, known)
            )
        except Exception as exc:
            failures.append(f"{operation.label}:\n{exc}")
    requests = sum(len(codes) for codes in statuses.values())
    print(f"{len(operations)} operations, {requests} requests")
    assert not failures, "\n\n".join(failures)
    return statuses


# Operations anyone may call: they authenticate the caller themselves.
PUBLIC = {
    "POST /mslrest/initiate",
    "POST /mslrest/token",
    "POST /mslrest/limen/v1/session/",
}


@pytest.fixture
def known(core: Core) -> dict[str, str]:
    return _seed(core)


def test_no_server_error_as_admin(
    app: FastAPI, known: dict[str, str], core: Core, admin_token: str
) -> None:
    def headers_for(operation: APIOperation) -> dict[str, str]:
        if operation.method.upper() == "DELETE" and operation.path.endswith("/session/"):
            # Logging out revokes the token used: give each such request its own.
            token, _record = core.store.admins.issue_token("root", name="logout")
            return {"Authorization": f"Bearer {token}"}
        return {"Authorization": f"Bearer {admin_token}"}

    statuses = _check_all(app, headers_for, known)
    # The token worked: most handlers answered a success at least once (not only 401s).
    succeeded = [label for label, codes in statuses.items() if any(c < 300 for c in codes)]
    print("never succeeded:", sorted(set(statuses) - set(succeeded)))
    assert len(succeeded) >= 30, sorted(set(statuses) - set(succeeded))


def test_no_server_error_unauthenticated(app: FastAPI, known: dict[str, str]) -> None:
    statuses = _check_all(app, lambda operation: {}, known)
    # And without credentials nothing but the public operations ever succeeded.
    leaked = {
        label: sorted({c for c in codes if c < 300})
        for label, codes in statuses.items()
        if label not in PUBLIC and any(c < 300 for c in codes)
    }
    assert not leaked


@pytest.fixture
def pg_core(tmp_path: Path, postgres_url: str) -> Iterator[Core]:
    opened = Core.open(
        Settings(
            config_path=str(tmp_path / "pg" / "limen.toml"),
            data_dir=str(tmp_path / "pg" / "data"),
            database_url=postgres_url,
        )
    )
    try:
        yield opened
    finally:
        opened.close()


def test_no_server_error_writing_to_postgresql(pg_core: Core) -> None:
    """PostgreSQL refuses what SQLite stores (NUL in text, out-of-range integers): every
    operation that writes strings or numbers, fuzzed as admin against a real PostgreSQL,
    with fewer examples to keep the run short."""
    from limen.api import create_app
    from limen.store import models

    with pg_core.store.sessions() as s, s.begin():
        s.add(models.AdminUser(username="root", password_hash="!", active=True))
    token, _record = pg_core.store.admins.issue_token("root", name="tests")
    app = create_app(pg_core)
    known = _seed(pg_core)
    writes = [
        op
        for op in _operations(app)
        if op.method.upper() in ("POST", "PUT")
        and not op.path.startswith(("/mslrest/msl/v1/net", "/mslrest/limen/v1/session"))
    ]
    assert len(writes) >= 12, [op.label for op in writes]
    failures = []
    for operation in writes:
        try:
            _fuzz(
                operation,
                lambda: {"Authorization": f"Bearer {token}"},
                _known_path(operation, known),
                examples=PG_EXAMPLES,
            )
        except Exception as exc:
            failures.append(f"{operation.label}:\n{exc}")
    assert not failures, "\n\n".join(failures)


def test_strategies_are_hypothesis_strategies(app: FastAPI) -> None:
    """Guard: the hand-driven loop above really gets strategies from schemathesis."""
    operation = _operations(app)[0]
    assert isinstance(operation.as_strategy(), st.SearchStrategy)
