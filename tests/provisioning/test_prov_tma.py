"""TMA export (seed figure 18): CSV and XLSX cell by cell, CLI and admin API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]
from prov_support import HASH, Limen

from limen.config import Settings
from limen.provisioning import tma
from limen.store import Invalid, NotFound, Store
from limen.store.schemas import DeviceCreate, IcpCreate

HEADER = (
    "MAC_ADDRESS,!sip line1 user name,!sip line1 auth name,!sip line1 password,"
    "!sip proxy ip,!sip registrar ip,!https server,!https path"
)
SEED_ROW_1 = (
    "00085D4330B8,7000,7000,password1,64.101.10.1,64.101.10.1,64.101.10.1,"
    "9a48085c1b816fd1b512e8b186686a6"
)
SEED_ROW_2 = (
    "08000F9F7305,7001,7001,password2,public.test.com,public.test.com,public.test.com,"
    "9a48085c1b816fd1b512e8b186686a6"
)


@pytest.fixture
def seed_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_fqdn": "", "public_ip": "64.101.10.1"})


@pytest.fixture
def seed_store(store: Store) -> Store:
    store.icps.create(IcpCreate(name="mv5000", address="100.100.100.71", hashes=[HASH]))
    for user, password, mac in (
        ("7000", "password1", "00:08:5d:43:30:b8"),
        ("7001", "password2", "08-00-0f-9f-73-05"),
        ("7002", "password3", None),
    ):
        store.devices.create(
            DeviceCreate(
                setside_username=user,
                setside_password=password,
                icpside_username=f"icp{user}",
                icpside_password="not-this-one",
                icp="mv5000",
                clientid=mac,
            )
        )
    return store


def test_csv_matches_the_seed_example(seed_store: Store, seed_settings: Settings) -> None:
    export = tma.build_export(seed_store, seed_settings, "mv5000")
    text = tma.to_csv(export)
    lines = text.split("\r\n")
    assert lines[0] == HEADER
    assert lines[1] == SEED_ROW_1
    assert lines[2].startswith("08000F9F7305,7001,7001,password2,64.101.10.1,")
    assert lines[3:] == [""]
    assert [(s.setside_username, s.reason) for s in export.skipped] == [("7002", "no MAC")]
    assert export.warnings == []


def test_server_override_gives_the_second_seed_row(
    seed_store: Store, seed_settings: Settings
) -> None:
    export = tma.build_export(seed_store, seed_settings, "mv5000", server="public.test.com")
    assert tma.to_csv(export).split("\r\n")[2] == SEED_ROW_2


def test_public_fqdn_only_when_declared_resolvable(seed_store: Store, settings: Settings) -> None:
    export = tma.build_export(seed_store, settings, "mv5000")
    assert {(r.proxy, r.registrar, r.https_server) for r in export.rows} == {
        ("localhost", "localhost", "localhost")
    }
    # Issue 11: by default phones get the public IP; a name they may not resolve never.
    by_ip = settings.model_copy(update={"fqdn_for_phones": False})
    export = tma.build_export(seed_store, by_ip, "mv5000")
    assert {(r.proxy, r.registrar, r.https_server) for r in export.rows} == {
        ("127.0.0.1", "127.0.0.1", "127.0.0.1")
    }


def test_xlsx_has_the_template_layout(seed_store: Store, seed_settings: Settings) -> None:
    export = tma.build_export(seed_store, seed_settings, "mv5000")
    book = load_workbook(io.BytesIO(tma.to_xlsx(export)))
    sheet = book[tma.SHEET_TITLE]
    rows = [tuple(cell.value for cell in row) for row in sheet.iter_rows()]
    assert rows[0][0] == "TERMINAL - SUBSCRIBER" and rows[0][4] == "SYSTEM"
    assert rows[1] == tma.COLUMNS
    assert rows[2] == tuple(SEED_ROW_1.split(","))
    assert rows[3][:4] == ("08000F9F7305", "7001", "7001", "password2")
    assert len(rows) == 4
    assert all(cell.data_type == "s" for row in sheet.iter_rows(min_row=2) for cell in row)


def test_formula_injection_is_neutralised(store: Store, settings: Settings) -> None:
    store.icps.create(IcpCreate(name="mv5000", address="100.100.100.71", hashes=[HASH]))
    evil = '=HYPERLINK("http://evil.example","x")'
    for user, password, mac in (
        ("+33123456789", "@SUM(1+1)", "001122334455"),
        ("-5", evil, "001122334466"),
        ("7000", "-2+3", "001122334477"),
    ):
        store.devices.create(
            DeviceCreate(
                setside_username=user, setside_password=password, icp="mv5000", clientid=mac
            )
        )
    export = tma.build_export(store, settings, "mv5000")
    lines = tma.to_csv(export).split("\r\n")
    assert lines[1].startswith("001122334455,+33123456789,+33123456789,'@SUM(1+1),")
    assert lines[2].startswith('001122334466,-5,-5,"\'=HYPERLINK(""http://evil.example"",""x"")",')
    assert lines[3].startswith("001122334477,7000,7000,'-2+3,")
    assert len(export.warnings) == 3
    assert all("prefixed" in w for w in export.warnings)
    # In the XLSX the value is kept exactly, as a text cell that is never evaluated.
    sheet = load_workbook(io.BytesIO(tma.to_xlsx(export)))[tma.SHEET_TITLE]
    cell = sheet.cell(row=4, column=4)
    assert (cell.value, cell.data_type) == (evil, "s")


def test_csv_safe_rules() -> None:
    assert [tma.csv_safe(v) for v in ("=1", "+1", "-1", "@x", "\tx", "\rx", "a=b", "+1+2")] == [
        "'=1",
        "+1",
        "-1",
        "'@x",
        "'\tx",
        "'\rx",
        "a=b",
        "'+1+2",
    ]


def test_errors(store: Store, settings: Settings) -> None:
    with pytest.raises(NotFound):
        tma.build_export(store, settings, "nope")
    store.icps.create(IcpCreate(name="nohash", address="192.0.2.1"))
    with pytest.raises(Invalid, match="hash"):
        tma.build_export(store, settings, "nohash")
    store.icps.create(IcpCreate(name="mv5000", address="192.0.2.2", hashes=[HASH]))
    anonymous = settings.model_copy(update={"public_fqdn": "", "public_ip": ""})
    with pytest.raises(Invalid, match="public"):
        tma.build_export(store, anonymous, "mv5000")


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_devices(limen: Limen) -> None:
    limen("icp", "add", "mv5000", "--address", "100.100.100.71", "--hash", HASH)
    limen(
        "device",
        "add",
        "7000",
        "--icp",
        "mv5000",
        "--password",
        "password1",
        "--mac",
        "00085d4330b8",
    )
    limen("device", "add", "7002", "--icp", "mv5000", "--password", "password3")


@pytest.mark.usefixtures("cli_devices")
def test_cli_csv_to_stdout_and_skipped_on_stderr(limen: Limen) -> None:
    result = limen("tma", "export", "--icp", "mv5000", "--server", "64.101.10.1")
    assert result.stdout_bytes == f"{HEADER}\r\n{SEED_ROW_1}\r\n".encode()
    assert "skipped 7002" in result.stderr and "no MAC" in result.stderr


@pytest.mark.usefixtures("cli_devices")
def test_cli_json(limen: Limen) -> None:
    data = json.loads(limen("tma", "export", "--icp", "mv5000", "--json").stdout)
    assert data["columns"] == list(tma.COLUMNS)
    assert data["rows"] == [
        {
            "MAC_ADDRESS": "00085D4330B8",
            "!sip line1 user name": "7000",
            "!sip line1 auth name": "7000",
            "!sip line1 password": "password1",
            "!sip proxy ip": "limen.test",
            "!sip registrar ip": "limen.test",
            "!https server": "limen.test",
            "!https path": HASH,
        }
    ]
    assert [s["setside_username"] for s in data["skipped"]] == ["7002"]
    assert data["format"] == "csv" and data["file"] is None


@pytest.mark.usefixtures("cli_devices")
def test_cli_files(limen: Limen, tmp_path: Path) -> None:
    xlsx = tmp_path / "tma.xlsx"
    data = json.loads(
        limen(
            "tma", "export", "--icp", "mv5000", "--format", "xlsx", "-o", str(xlsx), "--json"
        ).stdout
    )
    assert data["file"] == str(xlsx) and len(data["rows"]) == 1
    assert oct(xlsx.stat().st_mode & 0o777) == "0o600"
    sheet = load_workbook(xlsx)[tma.SHEET_TITLE]
    assert sheet["A2"].value == "MAC_ADDRESS" and sheet["A3"].value == "00085D4330B8"
    out = tmp_path / "tma.csv"
    limen("tma", "export", "--icp", "mv5000", "-o", str(out))
    assert out.read_bytes().startswith(HEADER.encode() + b"\r\n00085D4330B8,")


@pytest.mark.usefixtures("cli_devices")
def test_cli_errors(limen: Limen) -> None:
    assert (
        "xlsx"
        in json.loads(
            limen("tma", "export", "--icp", "mv5000", "--format", "xlsx", "--json", code=1).stdout
        )["error"]
    )
    assert (
        "format"
        in json.loads(
            limen("tma", "export", "--icp", "mv5000", "--format", "ods", "--json", code=1).stdout
        )["error"]
    )
    assert (
        "no ICP"
        in json.loads(limen("tma", "export", "--icp", "nope", "--json", code=1).stdout)["error"]
    )


# -- admin API -----------------------------------------------------------------------------------

URL = "/mslrest/limen/v1/tma/mv5000/"


@pytest.mark.usefixtures("seed_store")
async def test_api_csv(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.get(URL, headers=admin, params={"server": "64.101.10.1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="tma_mv5000.csv"'
    assert response.headers["x-limen-skipped"] == "1"
    assert response.text.split("\r\n")[:2] == [HEADER, SEED_ROW_1]


@pytest.mark.usefixtures("seed_store")
async def test_api_xlsx_and_json(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    xlsx = await http.get(URL, headers=admin, params={"format": "xlsx"})
    assert xlsx.status_code == 200 and xlsx.headers["content-type"] == tma.XLSX_MEDIA_TYPE
    sheet = load_workbook(io.BytesIO(xlsx.content))[tma.SHEET_TITLE]
    assert sheet["A3"].value == "00085D4330B8" and sheet["D3"].value == "password1"
    data = (await http.get(URL, headers=admin, params={"format": "json"})).json()
    assert [r["MAC_ADDRESS"] for r in data["rows"]] == ["00085D4330B8", "08000F9F7305"]
    assert data["skipped"][0]["setside_username"] == "7002"


@pytest.mark.usefixtures("seed_store")
async def test_api_refusals(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await http.get(URL)).status_code == 401
    assert (await http.get(URL, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await http.get("/mslrest/limen/v1/tma/nope/", headers=admin)).status_code == 404
    bad = await http.get(URL, headers=admin, params={"format": "ods"})
    assert bad.status_code == 422
