"""Phone configuration files: golden rendering, injection refusal, "Limen serves configs"."""

from __future__ import annotations

import dataclasses
import json
import logging

import httpx
import pytest
from prov_support import (
    DATA,
    HASH,
    MAC,
    OTHER_HASH,
    FakePbx,
    Limen,
    MakeProxy,
    limen_ca_context,
)

from limen.certs import ensure_certificates
from limen.config import Settings
from limen.provisioning import phoneconfig
from limen.provisioning.phoneconfig import (
    ConfigValueError,
    PhoneLine,
    PhoneProfile,
    check_value,
    render_phone,
    render_shared,
)
from limen.store import Store
from limen.store.schemas import DeviceCreate, DeviceUpdate, IcpCreate, IcpUpdate

pytestmark = pytest.mark.usefixtures("icp")


@pytest.fixture
def described(store: Store, icp: str) -> None:
    store.devices.update(MAC, DeviceUpdate(description="Reception desk"))


@pytest.mark.usefixtures("described")
def test_phone_file_matches_the_golden_file(store: Store) -> None:
    name, text = phoneconfig.phone_file(store, "00:08:5d:43:30:b8")
    assert name == f"{MAC}.cfg"
    assert text == (DATA / f"{MAC}.cfg").read_text()


def test_shared_file_matches_the_golden_file(store: Store, settings: Settings) -> None:
    ensure_certificates(settings, store)
    name, text = phoneconfig.shared_file(store, settings, "mv5000")
    assert name == "aastra.cfg"
    assert text == (DATA / "aastra.cfg").read_text()


def test_shared_file_without_a_ca_has_no_trust_list_line(store: Store, settings: Settings) -> None:
    _name, text = phoneconfig.shared_file(store, settings, "mv5000")
    assert "sips trusted certificates" not in text
    assert "sip transport protocol: 4\n" in text and "sip srtp mode: 2\n" in text


def test_display_name_defaults_to_the_username(store: Store) -> None:
    _name, text = phoneconfig.phone_file(store, MAC)
    assert "sip line1 display name: 7000\n" in text


LINE = PhoneLine(MAC, "7000", "7000", "password1", "Desk")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "pw\nsip line1 password: evil"),
        ("password", "pw\r"),
        ("display_name", "Desk\r\nsip proxy ip: evil.example"),
        ("display_name", "Desk\u2028sip proxy ip: evil"),
        ("display_name", "Desk\x85x"),
        ("display_name", "Desk\x00"),
        ("display_name", "Desk\x1b[2J"),
        ("user_name", "7000\t"),
        ("auth_name", " 7000"),
    ],
)
def test_values_that_could_inject_lines_are_refused(field: str, value: str) -> None:
    line = dataclasses.replace(LINE, **{field: value})
    with pytest.raises(ConfigValueError) as info:
        render_phone(line)
    assert info.value.field.startswith("sip line1")


def test_profile_values_are_checked_too() -> None:
    profile = PhoneProfile("mv5000", "evil\nsip x: y", 5061, 4445, HASH)
    with pytest.raises(ConfigValueError, match="https server"):
        render_shared(profile)


def test_harmless_punctuation_is_kept() -> None:
    assert check_value("sip line1 password", "a#b:c=d'e\"f") == "a#b:c=d'e\"f"
    text = render_phone(PhoneLine(MAC, "7000", "7000", "p#ss: word", "Zoë Müller"))
    assert "sip line1 password: p#ss: word\n" in text
    assert "sip line1 display name: Zoë Müller\n" in text
    assert all(":" in line for line in text.splitlines() if not line.startswith("#"))


def test_device_description_with_a_newline_is_refused(store: Store) -> None:
    store.devices.update(MAC, DeviceUpdate(description="two\nlines"))
    with pytest.raises(ConfigValueError, match="display name"):
        phoneconfig.phone_file(store, MAC)


# -- served by Limen ------------------------------------------------------------------------


@pytest.fixture
def serving(store: Store, icp: str) -> None:
    store.icps.update("mv5000", IcpUpdate(serves_configs=True))
    store.devices.update(MAC, DeviceUpdate(description="Reception desk"))
    store.icps.create(IcpCreate(name="other", address="192.0.2.9", hashes=[OTHER_HASH]))
    store.devices.create(
        DeviceCreate(
            setside_username="8000",
            setside_password="elsewhere",
            icp="other",
            clientid="08000F9F7305",
        )
    )


@pytest.mark.usefixtures("serving")
async def test_limen_serves_the_files_itself(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    base = f"https://localhost:{proxy.port}/{HASH}"
    async with httpx.AsyncClient(verify=limen_ca_context(settings)) as http:
        shared = await http.get(f"{base}/aastra.cfg")
        nested = await http.get(f"{base}/ftp_67xxi/aastra.cfg")
        phone = await http.get(f"{base}/ftp_67xxi/{MAC}.cfg")
        lower = await http.get(f"{base}/{MAC.lower()}.cfg")
        head = await http.head(f"{base}/{MAC}.cfg")
        ca = await http.get(f"{base}/limen-ca.pem")
        unknown = await http.get(f"{base}/001122334455.cfg")
        foreign = await http.get(f"{base}/08000F9F7305.cfg")
        other = await http.get(f"{base}/6867i.st")
        post = await http.post(f"{base}/aastra.cfg", content=b"x")
    assert shared.status_code == 200 and shared.text == (DATA / "aastra.cfg").read_text()
    assert nested.text == shared.text
    assert phone.status_code == 200 and phone.text == (DATA / f"{MAC}.cfg").read_text()
    assert phone.headers["cache-control"] == "no-store"
    assert lower.text == phone.text
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(phone.content))
    assert ca.content == (settings.data_path / "tls" / "ca.pem").read_bytes()
    assert (unknown.status_code, foreign.status_code, other.status_code) == (404, 404, 404)
    assert post.status_code == 405
    assert pbx.untouched
    assert proxy.counters()["provisioning_served_total"] == {"mv5000": 6}


@pytest.mark.usefixtures("serving")
async def test_a_device_that_cannot_be_rendered_is_500_and_logged(
    make_proxy: MakeProxy, store: Store, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store.devices.update(MAC, DeviceUpdate(description="x\nsip line1 password: evil"))
    proxy = await make_proxy()
    async with httpx.AsyncClient(verify=limen_ca_context(settings)) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/{MAC}.cfg")
    assert response.status_code == 500
    assert b"evil" not in response.content
    assert any(
        "display name" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    )


# -- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def cli_phone(limen: Limen) -> None:
    limen("icp", "add", "mv5000", "--address", "192.0.2.1", "--hash", HASH)
    limen(
        "device",
        "add",
        "7000",
        "--icp",
        "mv5000",
        "--password",
        "password1",
        "--mac",
        "00-08-5D-43-30-B8",
        "--description",
        "Reception desk",
    )


@pytest.mark.usefixtures("cli_phone")
def test_cli_phone_config(limen: Limen) -> None:
    text = limen("phone", "config", "00:08:5d:43:30:b8").stdout
    assert text == (DATA / f"{MAC}.cfg").read_text()
    data = json.loads(limen("phone", "config", MAC, "--json").stdout)
    assert data == {"file": f"{MAC}.cfg", "content": text}
    shared = json.loads(limen("phone", "config", MAC, "--shared", "--json").stdout)
    assert shared["file"] == "aastra.cfg"
    assert "sip proxy ip: limen.test\n" in shared["content"]
    assert f"https path: {HASH}\n" in shared["content"]


@pytest.mark.usefixtures("cli_phone")
def test_cli_phone_config_errors(limen: Limen) -> None:
    assert "error" in json.loads(limen("phone", "config", "001122334455", "--json", code=1).stdout)
    bad = json.loads(limen("phone", "config", "not-a-mac", "--json", code=1).stdout)
    assert "MAC" in bad["error"]


@pytest.mark.usefixtures("cli_phone")
def test_cli_serve_configs_toggle(limen: Limen) -> None:
    on = json.loads(limen("phone", "serve-configs", "mv5000", "--json").stdout)
    assert on == {"icp": "mv5000", "serves_configs": True}
    assert json.loads(limen("icp", "show", "mv5000", "--json").stdout)["serves_configs"] is True
    off = json.loads(limen("phone", "serve-configs", "mv5000", "--off", "--json").stdout)
    assert off == {"icp": "mv5000", "serves_configs": False}
