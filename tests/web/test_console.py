"""The console over HTTP (httpx on the ASGI app): sessions, CSRF, login throttling, every
screen's forms acting on the store through the API's models, escaping of free text, and
the device table at 10,000 devices."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from oauthlib.oauth1 import Client
from web_support import ADMIN, BASE, csrf_of, log_in, post_form

from limen.core import Core
from limen.store.schemas import DeviceCreate, IcpCreate

PAGES = [
    "/console/",
    "/console/icps",
    "/console/icps/new",
    "/console/devices",
    "/console/devices/new",
    "/console/devices/import",
    "/console/devices/export.csv",
    "/console/settings",
    "/console/overrides",
    "/console/services",
    "/console/certificates",
    "/console/certificates/ca.pem",
    "/console/provisioning",
    "/console/calls",
    "/console/calls/live",
    "/console/events",
    "/console/bans",
    "/console/password",
]

XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>{{7*7}}{% if 1 %}JINJA{% endif %}"


# -- sessions and CSRF ---------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
async def test_no_session_redirects_to_login(anon: httpx.AsyncClient, path: str) -> None:
    r = await anon.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    # htmx requests get told where to go instead of a login page inside a table.
    r = await anon.get(path, headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/console/login"


async def test_forged_session_cookie_is_refused(anon: httpx.AsyncClient) -> None:
    anon.cookies.set("__Host-limen_console", "lmn_" + "0" * 64)
    r = await anon.get("/console/icps")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


async def test_session_cookie_attributes(anon: httpx.AsyncClient) -> None:
    r = await log_in(anon, *ADMIN)
    cookie = next(
        c for c in r.headers.get_list("set-cookie") if c.startswith("__Host-limen_console=")
    )
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)


async def test_post_without_or_with_wrong_csrf_token_is_refused(
    http: httpx.AsyncClient, core: Core
) -> None:
    data = {"name": "pbx", "address": "10.0.0.1", "cap_tcp": "on"}
    r = await http.post("/console/icps/new", data=data)
    assert r.status_code == 403 and "CSRF" in r.text
    r = await http.post("/console/icps/new", data={**data, "csrf_token": "0" * 64})
    assert r.status_code == 403
    assert core.store.icps.count() == 0
    # The same form with the page's token goes through.
    r = await post_form(http, "/console/icps/new", "/console/icps/new", data)
    assert r.status_code == 303 and core.store.icps.count() == 1


async def test_every_post_route_checks_the_csrf_token(app: Any, http: httpx.AsyncClient) -> None:
    """Every POST of the console, found from its routes: refused without the token."""
    from starlette.routing import Mount

    [console] = [r.app for r in app.routes if isinstance(r, Mount) and r.path == "/console"]
    posts = [
        r.path for r in console.routes if "POST" in getattr(r, "methods", ()) and r.path != "/login"
    ]
    assert len(posts) >= 18
    for path in posts:
        url = "/console" + re.sub(r"\{[^}]+\}", "x", path)
        r = await http.post(url, data={"name": "x"})
        assert r.status_code == 403, (path, r.status_code)


async def test_login_form_needs_its_csrf_cookie(anon: httpx.AsyncClient) -> None:
    r = await anon.post("/console/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 403


async def test_login_body_is_bounded(anon: httpx.AsyncClient) -> None:
    form = await anon.get("/console/login")
    r = await anon.post(
        "/console/login",
        data={"csrf_token": csrf_of(form.text), "username": "a" * 20000, "password": "x"},
    )
    assert r.status_code == 413


async def test_failed_logins_are_reported_and_throttled(
    anon: httpx.AsyncClient, failures: list[tuple[Any, ...]]
) -> None:
    for _ in range(5):
        r = await log_in(anon, "admin", "wrong")
        assert r.status_code == 401 and "Wrong username or password" in r.text
    assert failures[0] == ("127.0.0.1", "admin", "console") and len(failures) == 5
    # The sixth attempt is refused even with the right password, and counted too.
    r = await log_in(anon, *ADMIN)
    assert r.status_code == 429
    assert len(failures) == 6


async def test_logout_ends_the_session_in_the_store(http: httpx.AsyncClient, core: Core) -> None:
    token = http.cookies["__Host-limen_console"]
    assert core.store.admins.resolve_token(token) == "admin"
    r = await post_form(http, "/console/", "/console/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert core.store.admins.resolve_token(token) is None
    http.cookies.set("__Host-limen_console", token)  # replaying the old cookie
    assert (await http.get("/console/")).status_code == 303


async def test_change_password(http: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    r = await post_form(
        http,
        "/console/password",
        "/console/password",
        {"current": "nope", "new": "another-secret-1", "confirm": "another-secret-1"},
    )
    assert r.status_code == 422 and "Wrong current password" in r.text
    r = await post_form(
        http,
        "/console/password",
        "/console/password",
        {"current": ADMIN[1], "new": "another-secret-1", "confirm": "another-secret-1"},
    )
    assert r.status_code == 303
    assert "Password changed" in (await http.get("/console/")).text
    http.cookies.clear()
    assert (await log_in(http, *ADMIN)).status_code == 401
    assert (await log_in(http, "admin", "another-secret-1")).status_code == 303


async def test_every_page_renders_for_an_admin(http: httpx.AsyncClient) -> None:
    for path in PAGES:
        if path.endswith("ca.pem"):
            continue  # no CA in a bare store (limen init makes it)
        r = await http.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        if "text/html" in r.headers["content-type"]:
            assert "script-src 'self'" in r.headers["content-security-policy"]


# -- ICPs --------------------------------------------------------------------------------


async def test_icp_add_edit_and_delete_with_the_api_confirmation_rule(
    http: httpx.AsyncClient, core: Core
) -> None:
    r = await post_form(
        http,
        "/console/icps/new",
        "/console/icps/new",
        {"name": "mv5000", "address": "100.100.100.71", "port": "5060", "transport": "tcp",
         "cap_udp": "on", "cap_tcp": "on", "cap_tls": "on", "link_enabled": "on",
         "xml_listen_port": "4445", "xml_destination_port": "4445", "tls": "on",
         "hashes": "16a78df75f29020a19fb5fd14bfac940"},
    )  # fmt: skip
    assert r.status_code == 303
    icp = core.store.icps.get("mv5000")
    assert icp.sip_capabilities == ["udp", "tcp", "tls"] and icp.link_enabled and icp.tls
    assert icp.hashes == ["16a78df75f29020a19fb5fd14bfac940"]
    # Invalid input: the API model's message, next to the field.
    r = await post_form(
        http, "/console/icps/new", "/console/icps/new", {"name": "x y", "address": "no such!"}
    )
    assert r.status_code == 422
    assert "neither an IP address nor a host name" in r.text and "1-64 characters" in r.text
    # Edit.
    page = f"/console/icps/{icp.guid}"
    r = await post_form(
        http, page, page,
        {"name": "mv5000", "address": "100.100.100.72", "cap_tls": "on", "tls": "on"},
    )  # fmt: skip
    assert r.status_code == 303
    assert core.store.icps.get("mv5000").address == "100.100.100.72"
    core.store.devices.create(
        DeviceCreate(setside_username="7000", setside_password="pw", icp="mv5000")
    )
    # Delete: with devices, the console asks first (the API's 409 rule) ...
    r = await post_form(http, page, f"{page}/delete", {})
    assert r.status_code == 409 and "confirm deleting them too" in r.text
    assert core.store.icps.count() == 1
    # ... and deletes both once confirmed.
    r = await http.post(
        f"{page}/delete",
        data={"csrf_token": csrf_of(r.text, f"/console{page[8:]}/delete"), "confirm": "1"},
    )
    assert r.status_code == 303
    assert core.store.icps.count() == 0 and core.store.devices.count() == 0


# -- free text is inert --------------------------------------------------------------------


def assert_inert(html: str) -> None:
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Template syntax comes back as the text it was, not evaluated.
    assert "{{7*7}}{% if 1 %}JINJA{% endif %}" in html


async def test_injection_payloads_in_free_text_are_rendered_inert(
    http: httpx.AsyncClient, core: Core
) -> None:
    # ICP description, device description: stored as given, shown as text.
    r = await post_form(
        http,
        "/console/icps/new",
        "/console/icps/new",
        {"name": "pbx", "address": "10.0.0.1", "cap_tcp": "on", "description": XSS},
    )
    assert r.status_code == 303
    assert_inert((await http.get("/console/icps")).text)
    r = await post_form(
        http,
        "/console/devices/new",
        "/console/devices/new",
        {"setside_username": "7001", "setside_password": "pw-7001", "icp": "pbx",
         "description": XSS},
    )  # fmt: skip
    assert r.status_code == 303
    assert_inert((await http.get("/console/devices")).text)
    assert_inert((await http.get("/console/devices?q=script")).text)
    # ICP and consumer names refuse markup (the API's rule); the refusal shows it as text.
    r = await post_form(http, "/console/icps/new", "/console/icps/new", {"name": XSS})
    assert r.status_code == 422
    assert_inert(r.text)
    r = await post_form(http, "/console/services", "/console/services/consumers", {"name": XSS})
    assert r.status_code == 422
    assert_inert(r.text)
    # Search text comes back in the page as text too.
    r = await http.get("/console/devices", params={"q": XSS})
    assert r.status_code == 200
    assert_inert(r.text)


# -- devices -------------------------------------------------------------------------------


async def test_csv_import_shows_each_error_against_its_line(
    http: httpx.AsyncClient, core: Core
) -> None:
    core.store.icps.create(IcpCreate(name="pbx", address="10.0.0.1"))
    text = (
        "setside_username,setside_password,icp,clientid,description\n"
        "7000,pw0,pbx,00085D4330B8,desk\n"
        "7001,pw1,nopbx,,bad icp\n"
        "7002,pw2,pbx,zz,bad mac\n"
        "7003,pw3,pbx,,fine\n"
    )
    page = "/console/devices/import"
    r = await post_form(http, page, page, {}, files={"file": ("devices.csv", text, "text/csv")})
    assert r.status_code == 422
    rows = re.findall(r'<tr class="bad"><td class="num">(\d+)</td>.*?</tr>', r.text, re.S)
    assert rows == ["3", "4"]
    assert "no ICP &#39;nopbx&#39;" in r.text and "is not a MAC address" in r.text
    assert "nothing was imported" in r.text and core.store.devices.count() == 0
    # Skipping the bad lines imports the two good ones.
    r = await post_form(http, page, page, {"text": text, "skip_bad": "on"})
    assert "2 device(s) imported" in r.text
    assert sorted(d.setside_username for d in core.store.devices.list()) == ["7000", "7003"]
    export = await http.get("/console/devices/export.csv")
    assert export.headers["content-disposition"] == 'attachment; filename="devices_mbg.csv"'
    assert "7000,pw0,pbx,7000,pw0,00085D4330B8,desk" in export.text


async def test_device_edit_keeps_passwords_unless_given(
    http: httpx.AsyncClient, core: Core
) -> None:
    core.store.icps.create(IcpCreate(name="pbx", address="10.0.0.1"))
    device = core.store.devices.create(
        DeviceCreate(setside_username="7000", setside_password="old-pw", icp="pbx")
    )
    page = f"/console/devices/{device.guid}"
    r = await post_form(
        http, page, page,
        {"setside_username": "7000", "icp": "pbx", "clientid": "00:08:5d:43:30:b8",
         "description": "reception"},
    )  # fmt: skip
    assert r.status_code == 303
    creds = core.store.devices.credentials("7000")
    assert creds.setside_password == "old-pw" and creds.clientid == "00085D4330B8"
    # Per-device options: set two, then back to the global values.
    r = await post_form(
        http, page, page,
        {"setside_username": "7000", "icp": "pbx", "opt_set_side_rtp_security": "Disable",
         "opt_challenge_methods": "invite, register", "opt_heartbeat_interval": "30"},
    )  # fmt: skip
    assert r.status_code == 303
    record = core.store.devices.get("7000")
    assert record.set_side_rtp_security == "Disable" and record.heartbeat_interval == 30
    assert record.challenge_methods == ["INVITE", "REGISTER"]
    assert record.clientid is None  # the MAC field was left empty
    r = await post_form(
        http, page, page, {"setside_username": "7000", "icp": "pbx", "opt_heartbeat_interval": "0"}
    )
    assert r.status_code == 422 and "greater than or equal to 1" in r.text
    r = await post_form(http, page, page, {"setside_username": "7000", "icp": "pbx"})
    record = core.store.devices.get("7000")
    assert record.set_side_rtp_security is None and record.challenge_methods is None
    r = await post_form(http, page, f"{page}/delete", {})
    assert r.status_code == 303 and core.store.devices.count() == 0


async def test_ten_thousand_devices_search_sort_and_page_fast(
    http: httpx.AsyncClient, core: Core
) -> None:
    add_devices(core, 10000)
    timings = {}
    for name, params in {
        "first page": {},
        "search description": {"q": "office 42"},
        "search MAC": {"q": "00:08:5d:00:27:0f"},
        "sort by MAC descending, page 150": {"sort": "clientid", "order": "desc", "page": "150"},
        "200 per page": {"size": "200", "page": "7"},
    }.items():
        start = time.perf_counter()
        r = await http.get("/console/devices", params=params)
        timings[name] = time.perf_counter() - start
        assert r.status_code == 200
    assert all(t < 0.5 for t in timings.values()), timings
    r = await http.get("/console/devices", params={"q": "00:08:5d:00:27:0f"})
    assert "1 device(s)" in r.text and ">00085D00270F<" in r.text  # n = 9999
    r = await http.get("/console/devices", params={"sort": "clientid", "order": "desc"})
    macs = re.findall(r"<td>(00085D[0-9A-F]{6})</td>", r.text)
    assert macs[:2] == ["00085D00270F", "00085D00270E"] and len(macs) == 50
    assert "page 1 of 200" in r.text
    r = await http.get("/console/devices", params={"q": "office 42"})
    assert "103 device(s)" in r.text  # n % 97 == 42 for 103 of the 10,000
    print(f"device table timings (s): { {k: round(v, 4) for k, v in timings.items()} }")


def add_devices(core: Core, count: int) -> None:
    """``count`` devices written in one bulk INSERT (the store's create_many encrypts and
    checks each row: 16 s for 10,000; the table's speed is what is measured here)."""
    import uuid

    from sqlalchemy import insert

    from limen.store import models

    icp = core.store.icps.create(IcpCreate(name="pbx", address="10.0.0.1"))
    secret = core.store.box.encrypt("pw")
    with core.store.sessions() as s, s.begin():
        icp_id = s.query(models.Icp.id).filter_by(guid=icp.guid).scalar()
        s.execute(
            insert(models.SipDevice),
            [
                {
                    "guid": str(uuid.uuid4()),
                    "setside_username": f"{10000 + n}",
                    "setside_password_enc": secret,
                    "icpside_username": f"{10000 + n}",
                    "icpside_password_enc": secret,
                    "icp_id": icp_id,
                    "clientid": f"00085D{n:06X}",
                    "description": f"office {n % 97}",
                }
                for n in range(count)
            ],
        )


# -- settings, overrides ---------------------------------------------------------------------


async def test_settings_apply_through_the_store_and_the_bus(
    http: httpx.AsyncClient, core: Core
) -> None:
    seen: list[Any] = []
    core.bus.subscribe(seen.append)
    page = (await http.get("/console/settings")).text
    for group in (
        "SIP support",
        "Registration mode",
        "Local streaming",
        "PRACK support",
        "Call admission control",
    ):
        assert f"<legend>{group}</legend>" in page
    form = {
        "csrf_token": csrf_of(page, "/console/settings"),
        "sip_tcp": "on",
        "sip_tls": "on",
        "registration_mode": "Max Set-Side",
        "setside_reg_expiry": "600",
        "icpside_reg_expiry": "3600",
        "allowed_uri_names": "limen.example.com",
        "codec_support": "Unrestricted",
        "rtp_frame_size": "Dynamic",
        "set_side_rtp_security": "Require",
        "icp_side_rtp_security": "Prefer",
        "prack_support": "on",
        "options_keepalive": "Only behind NAT",
        "options_interval": "20",
        "challenge_methods": "INVITE, SUBSCRIBE, MESSAGE",
        "srtp_port_min": "20000",
        "srtp_port_max": "31000",
    }
    r = await http.post("/console/settings", data=form)
    assert r.status_code == 303
    options = core.store.options.get()
    assert options.setside_reg_expiry == 600
    assert options.allowed_uri_names == ["limen.example.com"]
    assert options.challenge_methods == ["INVITE", "SUBSCRIBE", "MESSAGE"]
    assert {c.key for c in seen if c.resource == "options"} == {
        "setside_reg_expiry",
        "allowed_uri_names",
        "challenge_methods",
    }
    r = await http.post("/console/settings", data={**form, "srtp_port_min": "20001"})
    assert r.status_code == 422 and "must be even" in r.text
    assert core.store.options.get().srtp_port_min == 20000


async def test_overrides_add_and_remove(http: httpx.AsyncClient, core: Core) -> None:
    r = await post_form(
        http, "/console/overrides", "/console/overrides",
        {"file": "tug.ini", "sort_order": "50", "section": "proxy::sip_tls",
         "parameter": "secure_in::ssl::resign_add_subjectaltname",
         "content": "DNS=FQDN,DNS=Public IP address,IP=Public IP address"},
    )  # fmt: skip
    assert r.status_code == 303
    [row] = core.store.overrides.list()
    page = await http.get("/console/overrides")
    assert "secure_in::ssl::resign_add_subjectaltname" in page.text
    r = await http.post(
        f"/console/overrides/{row.guid}/delete",
        data={"csrf_token": csrf_of(page.text, f"/console/overrides/{row.guid}/delete")},
    )
    assert r.status_code == 303 and core.store.overrides.list() == []


# -- web services: pairing a PBX ----------------------------------------------------------------


async def test_pairing_a_pbx_with_approval_in_the_console(
    http: httpx.AsyncClient, core: Core
) -> None:
    form: dict[str, Any] = {"name": "mv5000", "active": "on"}
    form.update({f"read_{i}": "on" for i in range(14)})
    form.update({f"write_{i}": "on" for i in range(14)})
    r = await post_form(http, "/console/services", "/console/services/consumers", form)
    assert r.status_code == 201
    secret = re.search(r'id="shared-secret">([0-9a-f]+)<', r.text)
    assert secret is not None
    consumer = core.store.consumers.get("mv5000")
    assert len(consumer.permissions) == 14 and all(p.write for p in consumer.permissions)
    # The PBX asks for a temporary token (a real OAuth 1.0a client, HMAC-SHA1).
    pbx = Client("mv5000", client_secret=secret.group(1), callback_uri="oob")
    uri, headers, _ = pbx.sign(BASE + "/mslrest/initiate", http_method="POST")
    r = await http.post(uri, headers=headers)
    temp = {k: v[0] for k, v in parse_qs(r.text).items()}
    page = await http.get("/console/services")
    assert temp["oauth_token"] in page.text and ">Approve<" in page.text
    r = await http.post(
        f"/console/services/tokens/{temp['oauth_token']}/approve",
        data={
            "csrf_token": csrf_of(
                page.text, f"/console/services/tokens/{temp['oauth_token']}/approve"
            )
        },
    )
    page = await http.get(r.headers["location"])
    verifier = re.search(r'class="verifier">(\d{6})<', page.text)
    assert verifier is not None and f"Verifier: {verifier.group(1)}" in page.text
    pbx = Client(
        "mv5000",
        client_secret=secret.group(1),
        resource_owner_key=temp["oauth_token"],
        resource_owner_secret=temp["oauth_token_secret"],
        verifier=verifier.group(1),
    )
    uri, headers, _ = pbx.sign(BASE + "/mslrest/token", http_method="POST")
    r = await http.post(uri, headers=headers)
    assert r.status_code == 200, r.text
    final = {k: v[0] for k, v in parse_qs(r.text).items()}["oauth_token"]
    page = await http.get("/console/services")
    assert final in page.text
    r = await http.post(
        f"/console/services/tokens/{final}/revoke",
        data={"csrf_token": csrf_of(page.text, f"/console/services/tokens/{final}/revoke")},
    )
    assert r.status_code == 303 and core.store.tokens.list(kind="access") == []


# -- events ----------------------------------------------------------------------------------


async def test_alarms_filter_and_acknowledge(http: httpx.AsyncClient, core: Core) -> None:
    alarm = core.store.events.add("ICP mv5000 unreachable", severity="major", source="icp")
    page = await http.get("/console/events")
    assert "ICP mv5000 unreachable" in page.text
    assert "ICP mv5000 unreachable" in (await http.get("/console/")).text
    r = await http.post(
        "/console/events/acknowledge",
        data={"csrf_token": csrf_of(page.text, "/console/events/acknowledge"), "guid": alarm.guid},
    )
    assert r.status_code == 303 and core.store.events.get(alarm.guid).cleared
    assert "ICP mv5000 unreachable" not in (await http.get("/console/events")).text
    cleared = await http.get("/console/events", params={"state": "cleared"})
    assert "ICP mv5000 unreachable" in cleared.text


# -- certificates and provisioning -------------------------------------------------------------


def self_signed(name: str, days: int = 30) -> tuple[bytes, bytes]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_certificates_ca_download_renew_and_operator_upload(
    http: httpx.AsyncClient, core: Core
) -> None:
    from limen.certs import certificate_report, ensure_certificates, slot

    ensure_certificates(core.settings, core)
    page = await http.get("/console/certificates")
    table = page.text[page.text.index('id="certificates"') :]
    assert "DNS=limen.test" in table, table[:3000]
    assert "issued by Limen's CA" in table
    ca = await http.get("/console/certificates/ca.pem")
    assert ca.status_code == 200 and ca.text.startswith("-----BEGIN CERTIFICATE-----")
    # An operator's certificate whose key does not match is refused, nothing written.
    cert_pem, key_pem = self_signed("sip.example.com")
    _other, wrong_key = self_signed("other.example.com")
    sip = slot(core.settings, "sip")
    before = sip.cert_path.read_bytes()
    action = "/console/certificates/upload"
    r = await post_form(
        http, "/console/certificates", action, {"slot": "sip"},
        files={"cert": ("c.pem", cert_pem), "key": ("k.pem", wrong_key)},
    )  # fmt: skip
    page = await http.get(r.headers["location"])
    assert "the key does not belong to the certificate" in page.text
    assert sip.cert_path.read_bytes() == before
    r = await post_form(
        http, "/console/certificates", action, {"slot": "sip"},
        files={"cert": ("c.pem", cert_pem), "key": ("k.pem", key_pem)},
    )  # fmt: skip
    page = await http.get(r.headers["location"])
    assert "SIP/TLS certificate installed (CN=sip.example.com" in page.text
    assert sip.cert_path.read_bytes() == cert_pem
    # Renewing every generated certificate leaves the operator's alone.
    r = await post_form(http, "/console/certificates", "/console/certificates/renew", {})
    assert r.status_code == 303
    assert sip.cert_path.read_bytes() == cert_pem
    infos, _ = certificate_report(core.settings)
    by_name = {i.name: i for i in infos}
    assert by_name["sip"].operator and by_name["sip"].sans == ["DNS=sip.example.com"]
    assert not by_name["api"].operator


async def test_provisioning_hash_paths_and_tma_exports(http: httpx.AsyncClient, core: Core) -> None:
    icp = core.store.icps.create(
        IcpCreate(name="mv5000", address="10.0.0.1", hashes=["9a48085c1b816fd1b512e8b186686a6"])
    )
    core.store.devices.create(
        DeviceCreate(setside_username="7000", setside_password="password1", icp="mv5000",
                     clientid="00085D4330B8")
    )  # fmt: skip
    page = await http.get("/console/provisioning")
    assert "https://limen.test:4445/9a48085c1b816fd1b512e8b186686a6/" in page.text
    r = await http.get(f"/console/provisioning/{icp.guid}/tma.csv")
    assert r.status_code == 200
    assert "00085D4330B8,7000,7000,password1,limen.test,limen.test,limen.test," in r.text
    r = await http.get(f"/console/provisioning/{icp.guid}/tma.xlsx")
    assert r.status_code == 200 and r.content[:2] == b"PK"
    assert r.headers["content-disposition"] == 'attachment; filename="tma_mv5000.xlsx"'


# -- bans (the gateway's guard) -----------------------------------------------------------------


async def test_failed_console_logins_feed_the_guard_and_bans_can_be_lifted(
    anon: httpx.AsyncClient, core: Core
) -> None:
    from limen.config import SecuritySettings
    from limen.gateway.guard import Guard

    core.security = Guard(SecuritySettings(max_failures=3))
    for _ in range(3):
        r = await log_in(anon, "admin", "wrong")
        assert r.status_code == 401
    # The guard banned the source: the login form refuses it before checking anything.
    [ban] = core.security.list_bans()
    assert ban.address == "127.0.0.1"
    r = await log_in(anon, *ADMIN)
    assert r.status_code == 403 and "banned" in r.text
    core.security.unban("127.0.0.1")
    r = await log_in(anon, *ADMIN)
    assert r.status_code == 303
    # The Bans screen: ban by hand, list, lift.
    r = await post_form(
        anon, "/console/bans", "/console/bans",
        {"address": "2001:db8::66", "minutes": "10", "detail": "<b>scanner</b>"},
    )  # fmt: skip
    page = await anon.get(r.headers["location"])
    assert "2001:db8::66" in page.text and "&lt;b&gt;scanner&lt;/b&gt;" in page.text
    action = "/console/bans/2001%3Adb8%3A%3A66/lift"
    r = await anon.post(action, data={"csrf_token": csrf_of(page.text, action)})
    assert r.status_code == 303
    assert [b.address for b in core.security.list_bans()] == []


async def test_consumer_edit_shows_and_changes_the_grid(
    http: httpx.AsyncClient, core: Core
) -> None:
    from limen.store.schemas import ConsumerCreate, Permission

    record, _secret = core.store.consumers.create(
        ConsumerCreate(
            name="mv5000",
            permissions=[
                Permission(path="MBG/mbg/v1/globaloptions/", read=True, write=True),
                Permission(path="/limen/v1/calls/", read=True),
            ],
        )
    )
    page = f"/console/services/consumers/{record.guid}"
    html = (await http.get(page)).text
    # Row 10 of the grid is MBG/mbg/v1/globaloptions/ (stored normalised, shown ticked).
    assert re.search(r'name="read_10" aria-label="[^"]*" checked', html)
    assert re.search(r'name="write_10" aria-label="[^"]*" checked', html)
    assert not re.search(r'name="read_0" aria-label="[^"]*" checked', html)
    assert "/limen/v1/calls/ r" in html  # a path outside MBG's list, kept editable
    r = await post_form(
        http, page, page, {"read_12": "on", "extra_permissions": "/limen/v1/calls/ rw"}
    )
    assert r.status_code == 303
    consumer = core.store.consumers.get("mv5000")
    assert not consumer.active  # the box was left unticked
    assert {(p.path, p.read, p.write) for p in consumer.permissions} == {
        ("/mbg/v1/icps/", True, False),
        ("/limen/v1/calls/", True, True),
    }


# -- calls, ladders and what phones send ---------------------------------------------------------


class RecordedGateway:
    """The console's view of a gateway, over a real SipHistory and RecentCalls (the
    running gateway's are exercised by test_browser.py)."""

    def __init__(self) -> None:
        from limen.gateway.history import RecentCalls, SipHistory

        self.history = SipHistory()
        self.recent = RecentCalls()

    def registrations(self) -> dict[str, dict[str, Any]]:
        return {}

    def icp_links(self) -> dict[str, dict[str, int]]:
        return {}

    def recent_calls(self) -> list[dict[str, Any]]:
        return self.recent.list()

    def messages(self, call_ids: Any) -> list[Any]:
        return self.history.messages(call_ids)


async def test_ladder_of_a_recent_call_shows_phone_text_inert(
    http: httpx.AsyncClient, core: Core
) -> None:
    import time as _time

    from limen.sip import Transport, parse_message
    from limen.sip.addressing import Destination, Source

    view = RecordedGateway()
    core.gateway = view
    hostile = (
        b"INVITE sip:7001@limen.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-x\r\n"
        b'From: "<script>alert(1)</script>{{7*7}}" <sip:7000@limen.test>;tag=1\r\n'
        b"To: <sip:7001@limen.test>\r\nCall-ID: set-leg\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:7000@192.0.2.7>\r\nContent-Length: 0\r\n\r\n"
    )
    source = Source(Transport.UDP, ("198.51.100.1", 5060), ("192.0.2.7", 5060))
    view.history.received(parse_message(hostile), source)
    trying = parse_message(
        hostile.replace(b"INVITE sip:7001@limen.test SIP/2.0", b"SIP/2.0 100 <b>Trying</b>")
    )
    view.history.sent(trying, bytes(trying), Destination(Transport.UDP, "192.0.2.7", 5060))
    now = _time.time()
    view.recent.add(
        {"key": "call-1", "kind": "INVITE", "device": "7000", "direction": "from-phone",
         "state": "trying", "started": now - 3, "ended": now, "outcome": "failed 486",
         "answered": False, "legs": {"set": {"call_id": "set-leg", "transport": "udp"}},
         "media": {}},
    )  # fmt: skip
    calls = await http.get("/console/calls")
    assert "failed 486" in calls.text and "/console/calls/call-1/ladder" in calls.text
    ladder = await http.get("/console/calls/call-1/ladder")
    assert ladder.status_code == 200
    assert "&lt;b&gt;Trying&lt;/b&gt;" in ladder.text and "<b>Trying" not in ladder.text
    message = await http.get("/console/calls/call-1/messages/0", headers={"HX-Request": "true"})
    assert "<html" not in message.text  # a fragment for htmx
    assert "<script>alert(1)" not in message.text and "{{7*7}}" in message.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.text
    full = await http.get("/console/calls/call-1/messages/1")
    assert full.status_code == 200 and "<html" in full.text and "Back to the ladder" in full.text
    assert (await http.get("/console/calls/call-1/messages/2")).status_code == 404
    assert (await http.get("/console/calls/nope/ladder")).status_code == 404
    pcap = await http.get("/console/calls/call-1/pcap")
    assert pcap.content[:4] == bytes.fromhex("d4c3b2a1") and hostile in pcap.content


async def test_provisioning_access_log_with_refusals(http: httpx.AsyncClient, core: Core) -> None:
    import datetime as dt

    from limen.provisioning.server import AccessRecord

    core.provisioning_log = [
        AccessRecord(dt.datetime.now(dt.UTC), "203.0.113.9", "GET", "/deadbeef00/ftp_67xxi",
                     None, None, 404, 0, 0, 0.001, "refused: unknown hash"),
    ]  # fmt: skip
    page = await http.get("/console/provisioning")
    assert "203.0.113.9" in page.text and "refused: unknown hash" in page.text
