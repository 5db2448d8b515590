"""The PBX's TMA provisioning file (seed 2.10, figure 18): one row per phone of an ICP.

Columns, in the template's order::

    MAC_ADDRESS, !sip line1 user name, !sip line1 auth name, !sip line1 password,
    !sip proxy ip, !sip registrar ip, !https server, !https path

The first four are per terminal (MAC normalised to 12 upper-case hex digits, the
**set-side** username twice and the set-side password, as MBG's ``devices_mbg.csv``
gives them); the last four are the same on every row: Limen's public FQDN (else its public
IP) three times and the ICP's provisioning hash. Devices without a MAC cannot be
provisioned by MAC and are listed as skipped.

CSV (RFC 4180, CRLF line ends, header row first). Spreadsheet formula injection (OWASP
"CSV Injection"): a cell starting with ``=``, ``+``, ``-``, ``@``, TAB or CR is prefixed
with a single quote — except a plain number such as ``+33123456789`` or ``-5``, which no
spreadsheet runs as a formula and which must reach the PBX intact (E.164 user names).
Every altered cell is reported in :attr:`TmaExport.warnings` (the PBX would import the
quote, so such a password should be changed).

XLSX (openpyxl): the template's layout — a group row (``TERMINAL - SUBSCRIBER`` /
``SYSTEM``) then the header row starting with ``MAC_ADDRESS`` and the data rows. Every cell
is written as a text cell, values unchanged: a text cell is never evaluated, so no prefix
is needed there.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limen.provisioning.phoneconfig import public_address
from limen.store.errors import Invalid
from limen.store.schemas import normalise_mac

if TYPE_CHECKING:
    from limen.config import Settings
    from limen.store import Store

COLUMNS = (
    "MAC_ADDRESS",
    "!sip line1 user name",
    "!sip line1 auth name",
    "!sip line1 password",
    "!sip proxy ip",
    "!sip registrar ip",
    "!https server",
    "!https path",
)
SHEET_TITLE = "TMA"
GROUPS = (("TERMINAL - SUBSCRIBER", 1), ("SYSTEM", 5))
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class TmaRow:
    mac: str
    user_name: str
    auth_name: str
    password: str
    proxy: str
    registrar: str
    https_server: str
    https_path: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.mac,
            self.user_name,
            self.auth_name,
            self.password,
            self.proxy,
            self.registrar,
            self.https_server,
            self.https_path,
        )


@dataclass(frozen=True, slots=True)
class SkippedDevice:
    setside_username: str
    guid: str
    reason: str


@dataclass
class TmaExport:
    icp: str
    rows: list[TmaRow] = field(default_factory=list)
    skipped: list[SkippedDevice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "icp": self.icp,
            "columns": list(COLUMNS),
            "rows": [dict(zip(COLUMNS, r.cells(), strict=True)) for r in self.rows],
            "skipped": [
                {"setside_username": s.setside_username, "guid": s.guid, "reason": s.reason}
                for s in self.skipped
            ],
            "warnings": list(self.warnings),
        }


def csv_safe(value: str) -> str:
    """OWASP CSV-injection guard (see the module docstring)."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def build_export(store: Store, settings: Settings, icp: str, server: str = "") -> TmaExport:
    """The TMA rows of every device of ``icp`` (name or guid) that has a MAC.

    ``server`` replaces Limen's public address in the three system columns. Raises the
    store's NotFound for an unknown ICP, Invalid when the ICP has no hash or Limen no
    public address.
    """
    record = store.icps.get(icp)
    if not record.hashes:
        raise Invalid("icp", f"ICP {record.name} has no provisioning hash (see `limen icp edit`)")
    if not server:
        try:
            server = public_address(settings)
        except ValueError as exc:
            raise Invalid("public_fqdn", str(exc)) from None
    export = TmaExport(icp=record.name)
    credentials = {c.guid: c for c in store.devices.all_credentials() if c.icp == record.name}
    for device in store.devices.list(icp=record.guid):
        if not device.clientid:
            export.skipped.append(SkippedDevice(device.setside_username, device.guid, "no MAC"))
            continue
        cred = credentials[device.guid]
        export.rows.append(
            TmaRow(
                mac=normalise_mac(device.clientid),
                user_name=cred.setside_username,
                auth_name=cred.setside_username,
                password=cred.setside_password,
                proxy=server,
                registrar=server,
                https_server=server,
                https_path=record.hashes[0],
            )
        )
    export.rows.sort(key=lambda r: r.mac)
    for row in export.rows:
        for column, value in zip(COLUMNS, row.cells(), strict=True):
            if csv_safe(value) != value:
                export.warnings.append(
                    f"{row.mac}: {column} starts with {value[0]!r}; the CSV cell was "
                    "prefixed with ' against formula injection"
                )
    return export


def to_csv(export: TmaExport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in export.rows:
        writer.writerow([csv_safe(v) for v in row.cells()])
    return out.getvalue()


def to_xlsx(export: TmaExport) -> bytes:
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.cell.cell import Cell  # type: ignore[import-untyped]
    from openpyxl.styles import Font  # type: ignore[import-untyped]

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = SHEET_TITLE
    terminal, system = Font(bold=True, color="000000"), Font(bold=True, color="8B4513")
    for text, column in GROUPS:
        cell = sheet.cell(row=1, column=column, value=text)
        cell.font = terminal if column == 1 else system

    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def text_cell(row: int, column: int, value: str) -> Cell:
        cell = sheet.cell(row=row, column=column)
        # XLSX cannot hold C0 controls (openpyxl raises): such a value, which the input
        # checks refuse anyway, is written escaped rather than failing the whole export.
        cell.value = ILLEGAL_CHARACTERS_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
        # openpyxl guesses "=..." is a formula: force a string cell, never evaluated.
        cell.data_type = "s"
        cell.number_format = "@"
        return cell

    for column, name in enumerate(COLUMNS, start=1):
        text_cell(2, column, name).font = terminal if column <= 4 else system
        sheet.column_dimensions[chr(ord("A") + column - 1)].width = max(14, len(name) + 2)
    for index, row in enumerate(export.rows, start=3):
        for column, value in enumerate(row.cells(), start=1):
            text_cell(index, column, value)
    sheet.freeze_panes = "A3"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def render(export: TmaExport, fmt: str) -> bytes:
    """The file in ``csv`` or ``xlsx``."""
    if fmt == "csv":
        return to_csv(export).encode("utf-8")
    if fmt == "xlsx":
        return to_xlsx(export)
    raise ValueError(f"unknown format {fmt!r} (csv or xlsx)")
