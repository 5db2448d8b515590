"""The rest of MBG's API (issue 14): ping, host metrics, blades, system users, network
backup and restore, AMC; called the way a paired PBX calls them (OAuth 1.0a, the seed's
permission list)."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
from oauthlib.oauth1 import Client
from test_api_oauth import pair, send

from limen import __version__
from limen.core import Core
from limen.store.backup import open_backup
from limen.store.schemas import MBG_PBX_PERMISSIONS, ConsumerCreate, Permission

MSL = "/mslrest/msl/v1"


async def _paired(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core, paths: list[str]
) -> Callable[..., Client]:
    name = f"pbx-{len(paths)}"
    _record, secret = core.store.consumers.create(
        ConsumerCreate(
            name=name, permissions=[Permission(path=p, read=True, write=True) for p in paths]
        )
    )
    return (await pair(http, admin, name, secret)).client


async def test_a_paired_pbx_reads_ping_metrics_blades_and_users(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    client = await _paired(http, admin, core, list(MBG_PBX_PERMISSIONS))
    r = await send(http, client(), "GET", "/mslrest/ping")
    assert r.status_code == 200 and r.json()["response"] == "pong"
    assert r.json()["caller"] == "consumer:pbx-14"

    r = await send(http, client(), "GET", f"{MSL}/metrics/")
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["cpu"]["count"] == os.cpu_count() and 0 <= m["cpu"]["percent"] <= 100
    assert m["memory"]["total"] > m["memory"]["available"] > 0
    assert 0 < m["memory"]["percent"] < 100
    assert m["disk"]["total"] >= m["disk"]["free"] > 0
    with open("/proc/uptime") as handle:
        assert abs(m["uptime"] - float(handle.read().split()[0])) < 5

    for kind in ("blades", "installed_blades"):
        r = await send(http, client(), "GET", f"{MSL}/{kind}/")
        assert r.status_code == 200
        (blade,) = r.json()["response"]
        assert blade["name"] == "Limen" and blade["version"] == __version__
        r = await send(http, client(), "GET", f"{MSL}/{kind}/count/")
        assert r.json() == {"count": 1}
        r = await send(http, client(), "GET", f"{MSL}/{kind}/Limen/")
        assert r.status_code == 200 and r.json()["name"] == "Limen"
        r = await send(http, client(), "GET", f"{MSL}/{kind}/mbg/")
        assert r.status_code == 404

    r = await send(http, client(), "GET", f"{MSL}/sysuser/")
    assert [u["username"] for u in r.json()["response"]] == ["root"]
    assert "password" not in r.text
    r = await send(http, client(), "GET", f"{MSL}/sysuser/root/")
    assert r.status_code == 200 and r.json()["username"] == "root"
    r = await send(http, client(), "POST", f"{MSL}/sysuser/", {"username": "x"})
    assert r.status_code == 501 and "limen admin" in r.json()["detail"]
    r = await send(http, client(), "GET", f"{MSL}/amc/")
    assert r.status_code == 501 and "not supported" in r.json()["detail"]


async def test_permissions_apply_but_ping_needs_only_a_valid_signature(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    client = await _paired(http, admin, core, ["/mbg/v1/icps/"])
    assert (await send(http, client(), "GET", "/mslrest/ping")).status_code == 200
    for path in ("metrics/", "blades/", "installed_blades/", "sysuser/", "netbackup/"):
        r = await send(http, client(), "GET", f"{MSL}/{path}")
        assert r.status_code == 403, path
    assert (await http.get("/mslrest/ping")).status_code == 401


async def test_netbackup_then_netrestore_stages_a_checked_backup(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    client = await _paired(http, admin, core, list(MBG_PBX_PERMISSIONS))
    r = await send(http, client(), "POST", f"{MSL}/netbackup/", {"passphrase": "short"})
    assert r.status_code == 422
    r = await send(http, client(), "POST", f"{MSL}/netbackup/", {"passphrase": "a long passphrase"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    blob = r.content
    contents = open_backup(blob, "a long passphrase")
    assert contents.rows["consumers"][0]["name"] == "pbx-14"
    assert "files/data/secret.key" in contents.files

    staged = core.settings.data_path / "restore" / "staged.limen-backup"
    for passphrase, damaged in (("wrong passphrase", blob), ("a long passphrase", blob[:-1])):
        r = await http.post(
            f"{MSL}/netrestore/",
            content=damaged,
            headers={
                **admin,
                "Content-Type": "application/octet-stream",
                "X-Limen-Passphrase": passphrase,
            },
        )
        assert r.status_code == 422 and "nothing was staged" in r.json()["detail"]
        assert not staged.exists()
    r = await http.post(
        f"{MSL}/netrestore/",
        content=blob,
        headers={
            **admin,
            "Content-Type": "application/octet-stream",
            "X-Limen-Passphrase": "a long passphrase",
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "staged" and "limen restore" in r.json()["apply"]
    assert staged.read_bytes() == blob
    r = await http.get(f"{MSL}/netrestore/", headers=admin)
    assert r.json()["staged"] == str(staged)


async def test_docs_work_offline_and_openapi_declares_the_security_schemes(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert f"/docs/static/{asset}" in page.text
        r = await http.get(f"/docs/static/{asset}")
        assert r.status_code == 200 and len(r.content) > 500, asset
    schema = (await http.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["oauth1"] == {
        "type": "http",
        "scheme": "OAuth",
        "description": schemes["oauth1"]["description"],
    }
    assert schemes["session"]["type"] == "http" and schemes["session"]["scheme"] == "bearer"
    paths = schema["paths"]
    assert paths["/mslrest/mbg/v1/icps/"]["get"]["security"] == [{"oauth1": []}, {"session": []}]
    assert paths["/mslrest/limen/v1/consumers/"]["get"]["security"] == [{"session": []}]
    assert paths["/mslrest/initiate"]["post"]["security"] == [{"oauth1": []}]
    assert "security" not in paths["/mslrest/limen/v1/session/"]["post"]
