"""MBG-shaped resources as an admin sees them: shapes, lookups, validation, write-only
passwords, confirmation for cascades, audit events and change notifications."""

from __future__ import annotations

import httpx

from limen.core import Core
from limen.store import Change

ICPS = "/mslrest/mbg/v1/icps/"
DEVICES = "/mslrest/mbg/v1/devices/sip/"
OPTIONS = "/mslrest/mbg/v1/globaloptions/"
HASH = "16a78df75f29020a19fb5fd14bfac940"


async def add_icp(http: httpx.AsyncClient, admin: dict[str, str], name: str = "mv5000") -> dict:
    r = await http.post(
        ICPS,
        json={
            "name": name,
            "address": "100.100.100.71",
            "hashes": [HASH] if name == "mv5000" else [],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    return r.json()


async def add_device(
    http: httpx.AsyncClient, admin: dict[str, str], user: str, mac: str | None = None
) -> dict:
    body = {"setside_username": user, "setside_password": "s3cret-" + user, "icp": "mv5000"}
    if mac:
        body["clientid"] = mac
    r = await http.post(DEVICES, json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


async def test_icp_collection_follows_mbg_conventions(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    icp = await add_icp(http, admin)
    assert (await http.get(ICPS + "count/", headers=admin)).json() == {"count": 1}
    assert (await http.get(ICPS, headers=admin)).json() == {
        "response": [{"guid": icp["guid"], "name": "mv5000"}]
    }
    full = (await http.get(ICPS + "all/", headers=admin)).json()["response"]
    assert full[0]["address"] == "100.100.100.71" and full[0]["hashes"] == [HASH]
    by_name = (await http.get(ICPS + "mv5000/", headers=admin)).json()
    by_guid = (await http.get(ICPS + icp["guid"] + "/", headers=admin)).json()
    assert by_name == by_guid == icp
    r = await http.put(ICPS + "mv5000/", json={"port": 5061, "transport": "tls"}, headers=admin)
    assert (r.status_code, r.json()["port"], r.json()["transport"]) == (200, 5061, "tls")
    missing = await http.get(ICPS + "nope/", headers=admin)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


async def test_bad_input_is_a_4xx_naming_the_field(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    r = await http.post(ICPS, json={"name": "mv5000", "address": "not a host"}, headers=admin)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][-1] == "address"
    r = await http.post(
        ICPS, json={"name": "x", "address": "10.0.0.1", "colour": "red"}, headers=admin
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "colour"
    await add_icp(http, admin)
    r = await http.post(ICPS, json={"name": "mv5000", "address": "10.0.0.2"}, headers=admin)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = await http.put(ICPS + "mv5000/", json={"port": None}, headers=admin)
    assert r.status_code == 422 and "port cannot be null" in r.text
    r = await http.post(
        DEVICES,
        json={"setside_username": "7000", "setside_password": "x", "icp": "ghost"},
        headers=admin,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "icp"


async def test_devices_by_guid_mac_or_username_and_passwords_write_only(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    await add_icp(http, admin)
    device = await add_device(http, admin, "7000", "00:08:5D:43:30:B8")
    assert device["clientid"] == "00085D4330B8"
    for key in (device["guid"], "7000", "00085D4330B8", "00-08-5d-43-30-b8"):
        r = await http.get(DEVICES + key + "/", headers=admin)
        assert r.status_code == 200 and r.json()["guid"] == device["guid"]
    everything = [
        (await http.get(DEVICES + "all/", headers=admin)).text,
        (await http.get(DEVICES, headers=admin)).text,
        (await http.get(DEVICES + "7000/", headers=admin)).text,
        (
            await http.put(DEVICES + "7000/", json={"setside_password": "n3w-pass"}, headers=admin)
        ).text,
    ]
    assert not any("s3cret" in t or "n3w-pass" in t or "password" in t for t in everything)
    assert core.store.devices.credentials("7000").setside_password == "n3w-pass"
    r = await http.put(
        DEVICES + "7000/",
        json={"prack_support": False, "rtpframesize": 20, "setside_codec": "G.711 only"},
        headers=admin,
    )
    assert r.json()["prack_support"] is False and r.json()["rtpframesize"] == "20"
    r = await http.put(DEVICES + "7000/", json={"prack_support": None}, headers=admin)
    assert r.json()["prack_support"] is None
    assert (await http.get(DEVICES + "count/", headers=admin)).json() == {"count": 1}
    assert (await http.delete(DEVICES + "7000/", headers=admin)).status_code == 200
    assert (await http.get(DEVICES + "count/", headers=admin)).json() == {"count": 0}


async def test_deleting_an_icp_with_devices_needs_confirm(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await add_icp(http, admin)
    await add_device(http, admin, "7000")
    await add_device(http, admin, "7001")
    r = await http.delete(ICPS + "mv5000/", headers=admin)
    assert r.status_code == 409 and "2 device(s)" in r.json()["detail"]
    r = await http.delete(ICPS + "mv5000/", params={"confirm": "true"}, headers=admin)
    assert r.status_code == 200 and r.json()["devices_deleted"] == 2
    assert (await http.get(DEVICES + "count/", headers=admin)).json() == {"count": 0}


async def test_global_options_get_one_and_put_pairs(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    options = (await http.get(OPTIONS, headers=admin)).json()
    assert options["registration_mode"] == "Max Set-Side" and options["sip_udp"] is False
    r = await http.get(OPTIONS + "heartbeat_interval/", headers=admin)
    assert r.json() == {"name": "heartbeat_interval", "value": 20}
    r = await http.get(OPTIONS + "options_interval/", headers=admin)  # pre-issue-11 name
    assert r.json() == {"name": "heartbeat_interval", "value": 20}
    assert (await http.get(OPTIONS + "nope/", headers=admin)).status_code == 404
    r = await http.put(OPTIONS, json={"options_interval": 60, "sip_udp": True}, headers=admin)
    assert r.status_code == 200 and r.json()["heartbeat_interval"] == 60
    r = await http.put(OPTIONS, json=[{"name": "prack_support", "value": False}], headers=admin)
    assert r.status_code == 200 and r.json()["prack_support"] is False
    r = await http.put(OPTIONS, json={"heartbeat_interval": 500}, headers=admin)
    assert r.status_code == 422 and "heartbeat_interval" in r.text
    r = await http.put(OPTIONS, json={"bogus": 1}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "bogus"
    final = (await http.get(OPTIONS, headers=admin)).json()
    assert (final["heartbeat_interval"], final["sip_udp"], final["prack_support"]) == (
        60,
        True,
        False,
    )


async def test_changes_reach_subscribers_and_the_audit_log(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    seen: list[Change] = []
    core.bus.subscribe(seen.append)
    icp = await add_icp(http, admin)
    await http.put(OPTIONS, json={"heartbeat_interval": 30}, headers=admin)
    assert seen == [
        Change("icp", "created", icp["guid"]),
        Change("options", "updated", "heartbeat_interval"),
    ]
    events = (
        await http.get("/mslrest/msl/v1/events/", params={"kind": "audit"}, headers=admin)
    ).json()
    messages = [(e["actor"], e["message"]) for e in events["response"]]
    assert ("admin:root", "ICP mv5000 created (100.100.100.71:5060)") in messages
    assert any(m.startswith("global options set: heartbeat_interval=30") for _a, m in messages)


async def test_events_count_and_clear(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    alarm = core.store.events.add("ICP mv5000 unreachable", severity="major", source="gateway")
    core.store.events.add("certificate expires soon", severity="minor")
    url = "/mslrest/msl/v1/events/"
    assert (await http.get(url + "count/", params={"cleared": "false"}, headers=admin)).json() == {
        "count": 2
    }
    r = await http.put(url + alarm.guid + "/", json={"cleared": True}, headers=admin)
    assert r.status_code == 200 and r.json()["cleared"] is True
    r = await http.put(url, json={"cleared": True}, headers=admin)
    assert r.json() == {"cleared": 1}
    assert (await http.get(url + "count/", params={"cleared": "false"}, headers=admin)).json() == {
        "count": 0
    }
    assert (await http.put(url, json={"cleared": False}, headers=admin)).status_code == 422


async def test_metrics_configuration_and_prometheus(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    metrics = (await http.get("/mslrest/mbg/v1/metrics/", headers=admin)).json()
    assert metrics["active_calls"] == 0 and "bandwidth_icp_in" in metrics
    r = await http.get("/mslrest/mbg/v1/metrics/100/200/", headers=admin)
    assert r.json() == {"response": []}
    assert (await http.get("/mslrest/mbg/v1/metrics/200/100/", headers=admin)).status_code == 422
    conf = (await http.get("/mslrest/msl/v1/configuration/", headers=admin)).json()
    assert conf["fqdn"] == "limen.test" and conf["ports"]["api"] == 8443
    assert any(i["name"] == "lo" for i in conf["interfaces"])
    text = (await http.get("/metrics", headers=admin)).text
    assert "limen_active_calls 0" in text and "# TYPE limen_registrations gauge" in text
    assert (await http.get("/metrics")).status_code == 401


async def test_openapi_schema_is_served(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    assert "/mslrest/mbg/v1/devices/sip/{key}/" in schema["paths"]
    assert "/mslrest/initiate" in schema["paths"]


async def test_admin_login_session_and_logout(http: httpx.AsyncClient, core: Core) -> None:
    core.store.admins.create("alice", "correct horse battery")
    bad = await http.post("/mslrest/limen/v1/session/", json={"username": "alice", "password": "x"})
    assert bad.status_code == 401
    r = await http.post(
        "/mslrest/limen/v1/session/",
        json={"username": "alice", "password": "correct horse battery"},
    )
    assert r.status_code == 200
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await http.get(ICPS, headers=auth)).status_code == 200
    assert (await http.delete("/mslrest/limen/v1/session/", headers=auth)).status_code == 200
    assert (await http.get(ICPS, headers=auth)).status_code == 401
    assert (await http.get(ICPS)).status_code == 401
