"""The ``devices_mbg.csv`` layout: bulk import and export of SIP devices.

See ``docs/devices_csv.md``. Import is two-phase: :func:`check_devices_csv` validates
every row (fields, duplicates inside the file, ICP references, clashes with devices
already stored) and reports each bad row by its line number; the caller then imports the
good rows in one transaction, or nothing when any row is bad (unless told to skip them).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from limen.store.repository import Store
from limen.store.schemas import DeviceCreate, DeviceCredentials, DeviceRecord

COLUMNS = (
    "setside_username",
    "setside_password",
    "icp",
    "icpside_username",
    "icpside_password",
    "clientid",
    "description",
)
REQUIRED = ("setside_username", "setside_password", "icp")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True)
class CsvCheck:
    """The outcome of checking a file: good rows (with their line) and bad ones."""

    rows: list[tuple[int, DeviceCreate]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def check_devices_csv(text: str, store: Store) -> CsvCheck:
    """Validate every row of a ``devices_mbg.csv`` text against the format and the store."""
    result = CsvCheck()
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        result.errors.append(RowError(1, "empty file: expected a header row"))
        return result
    except csv.Error as exc:
        result.errors.append(RowError(1, f"unreadable CSV: {exc}"))
        return result
    names = [h.strip().lower() for h in header]
    unknown = [h for h in names if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in names]
    duplicated = sorted({h for h in names if names.count(h) > 1})
    if unknown or missing or duplicated:
        reasons = []
        if unknown:
            reasons.append(f"unknown column(s) {', '.join(unknown)}")
        if missing:
            reasons.append(f"missing column(s) {', '.join(missing)}")
        if duplicated:
            reasons.append(f"repeated column(s) {', '.join(duplicated)}")
        result.errors.append(RowError(1, "; ".join(reasons) + f" (columns: {', '.join(COLUMNS)})"))
        return result

    icp_keys: set[str] = set()
    for icp in store.icps.list():
        icp_keys.update((icp.name, icp.guid))
    parsed: list[tuple[int, DeviceCreate]] = []
    seen_users: dict[str, int] = {}
    seen_macs: dict[str, int] = {}
    line = 1
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(RowError(start, f"unreadable CSV: {exc}"))
            break
        line = start
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            result.errors.append(RowError(line, f"expected {len(names)} fields, found {len(row)}"))
            continue
        values = {
            name: cell.strip() for name, cell in zip(names, row, strict=True) if cell.strip() != ""
        }
        try:
            device = DeviceCreate.model_validate(values)
        except ValidationError as exc:
            result.errors.append(RowError(line, _validation_message(exc)))
            continue
        problems = []
        if device.icp not in icp_keys:
            problems.append(f"icp: no ICP {device.icp!r}")
        first = seen_users.setdefault(device.setside_username, line)
        if first != line:
            problems.append(f"setside_username {device.setside_username!r} repeats line {first}")
        if device.clientid is not None:
            first = seen_macs.setdefault(device.clientid, line)
            if first != line:
                problems.append(f"clientid {device.clientid} repeats line {first}")
        if problems:
            result.errors.append(RowError(line, "; ".join(problems)))
            continue
        parsed.append((line, device))

    taken_users, taken_macs = store.devices.existing(
        (d.setside_username for _, d in parsed), (d.clientid for _, d in parsed if d.clientid)
    )
    for line, device in parsed:
        problems = []
        if device.setside_username in taken_users:
            problems.append(f"setside_username {device.setside_username!r} already exists")
        if device.clientid in taken_macs:
            problems.append(f"clientid {device.clientid} already exists")
        if problems:
            result.errors.append(RowError(line, "; ".join(problems)))
        else:
            result.rows.append((line, device))
    result.errors.sort(key=lambda e: e.line)
    return result


def export_devices_csv(
    credentials: Iterable[DeviceCredentials], records: Iterable[DeviceRecord]
) -> str:
    """Write devices in the ``devices_mbg.csv`` layout (passwords in clear: it is what the
    PBX's TMA import needs; treat the file as a secret)."""
    descriptions = {r.guid: r.description for r in records}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in credentials:
        writer.writerow(
            [
                c.setside_username,
                c.setside_password,
                c.icp,
                c.icpside_username,
                c.icpside_password,
                c.clientid or "",
                descriptions.get(c.guid, ""),
            ]
        )
    return out.getvalue()
