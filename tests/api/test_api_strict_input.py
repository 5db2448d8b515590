"""Strict input (issue 14): no 500 for NaN, NUL or control characters on any backend,
no bool-to-int coercion, SIP-bound fields checked with the SIP layer's grammar, consumer
names that can pair and permission paths that name something."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from typing import Any

import httpx

from limen.api import ApiServer
from limen.core import Core
from limen.store import api_tls_paths

ICPS = "/mslrest/mbg/v1/icps/"
DEVICES = "/mslrest/mbg/v1/devices/sip/"


async def test_nan_password_is_4xx_and_the_connection_stays_open(core: Core) -> None:
    server = ApiServer(core, host="127.0.0.1", port=0)
    await server.start()
    context = ssl.create_default_context(cafile=api_tls_paths(core.settings)[0])

    def exchange() -> list[tuple[int, Any, bool]]:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
        out = []
        try:
            conn.connect()
            first = conn.sock
            for body in (
                '{"username": "admin", "password": NaN}',
                '{"username": "admin", "password": Infinity}',
                '{"username": "adm\\u0000in", "password": "x"}',
                '{"username": "admin", "password": "wrong-password"}',
            ):
                conn.request(
                    "POST",
                    "/mslrest/limen/v1/session/",
                    body=body,
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                out.append((response.status, json.loads(response.read()), conn.sock is first))
        finally:
            conn.close()
        return out

    try:
        results = await asyncio.to_thread(exchange)
    finally:
        await server.stop()
    for status, body, same_connection in results[:3]:
        assert status == 422, body
        assert same_connection
    assert "NaN is not a JSON number" in results[0][1]["detail"][0]["msg"]
    assert "Infinity" in results[1][1]["detail"][0]["msg"]
    assert results[2][1]["detail"][0]["loc"] == ["body", "username"]
    assert results[3][0] == 401 and results[3][2]


async def _icp(http: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"name": "pbx", "address": "192.0.2.10", **fields}
    text = json.dumps(body).replace('"<1e400>"', "1e400")  # json.dumps writes no huge numbers
    return await http.post(ICPS, content=text, headers={"Content-Type": "application/json"})


CONTROL_CASES = [
    ("description", "a\u0000b"),
    ("type", "MiVoice\u00005000"),
    ("domain", "pbx\u0000.example"),
    ("description", "line\r\nbreak"),
    ("description", "bell\u0007"),
    ("description", "\ud800"),
    ("name", "p\u0000bx"),
]


async def test_nul_and_control_characters_are_422_on_every_backend(
    any_http: httpx.AsyncClient,
) -> None:
    for field, value in CONTROL_CASES:
        r = await _icp(any_http, **{field: value})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", field]
    assert (await any_http.get(ICPS + "count/")).json() == {"count": 0}


async def test_nul_in_lookups_and_login_is_never_a_500(any_http: httpx.AsyncClient) -> None:
    assert (await _icp(any_http)).status_code == 201
    for path in (ICPS + "p%00bx/", DEVICES + "a%00b/", DEVICES + "%01/"):
        for method in ("GET", "PUT", "DELETE"):
            body = {"description": "x"} if method == "PUT" else None
            r = await any_http.request(method, path, json=body)
            assert r.status_code == 404, (path, method, r.text)
    r = await any_http.get(DEVICES, params={"icp": "p\u0000bx"})
    assert r.status_code == 422
    r = await any_http.post(
        "/mslrest/limen/v1/session/", json={"username": "ro\u0000ot", "password": "whatever"}
    )
    assert r.status_code == 422
    r = await any_http.post(
        "/mslrest/limen/v1/overrides/",
        json={"file": "tug.ini", "section": "s\u0000", "parameter": "p", "content": "c"},
    )
    assert r.status_code == 422


LOOSE_TYPES: list[dict[str, Any]] = [
    {"port": True},
    {"port": "5060"},
    {"port": 5060.0},
    {"port": "<1e400>"},
    {"tls": 1},
    {"link_enabled": "true"},
    {"xml_listen_port": False},
]


async def test_types_are_strict(any_http: httpx.AsyncClient) -> None:
    for fields in LOOSE_TYPES:
        r = await _icp(any_http, **fields)
        assert r.status_code == 422, r.text
        # A number too large for a float is refused while parsing, before fields exist.
        assert r.json()["detail"][0]["loc"][:2] in (["body", next(iter(fields))], ["body"])


async def test_strict_types_on_updates_and_global_options(any_http: httpx.AsyncClient) -> None:
    assert (await _icp(any_http)).status_code == 201
    r = await any_http.put(ICPS + "pbx/", json={"port": True})
    assert r.status_code == 422
    r = await any_http.put("/mslrest/mbg/v1/globaloptions/", json={"options_interval": True})
    assert r.status_code == 422
    r = await any_http.put("/mslrest/mbg/v1/globaloptions/", json={"sip_udp": 1})
    assert r.status_code == 422
    r = await any_http.put("/mslrest/mbg/v1/globaloptions/", json={"options_interval": 30})
    assert r.status_code == 200 and r.json()["options_interval"] == 30
    body = '{"options_interval": NaN}'
    r = await any_http.put(
        "/mslrest/mbg/v1/globaloptions/",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422


NOT_SIP = [
    ("domain", "pbx.example\r\nVia: evil"),
    ("domain", "pbx example"),
    ("domain", "pbx.example:5060"),
    ("domain", "pbx.example;transport=tcp"),
    ("domain", "user@pbx.example"),
    ("address", "192.0.2.10\n"),
    ("address", "pbx .example"),
]


async def test_sip_bound_icp_fields_follow_the_sip_grammar(any_http: httpx.AsyncClient) -> None:
    for field, value in NOT_SIP:
        r = await _icp(any_http, **{field: value})
        assert r.status_code == 422, (field, value, r.text)


async def test_sip_hosts_and_users_that_the_sip_layer_takes_are_accepted(
    any_http: httpx.AsyncClient,
) -> None:
    r = await _icp(any_http, domain="pbx-1.example.net", address="2001:db8::10")
    assert r.status_code == 201, r.text
    assert r.json()["address"] == "2001:db8::10"
    for username in ("+15551234", "a*1", "a%41b", "user.name_(x)!", "\u00e9t\u00e9"):
        r = await any_http.post(
            DEVICES, json={"setside_username": username, "setside_password": "pw", "icp": "pbx"}
        )
        assert r.status_code == 201, (username, r.text)
    for username in ("a b", "a:b", "a@b", "100%", "a%4", "a<b", 'a"b', "a/b", "\t1"):
        r = await any_http.post(
            DEVICES, json={"setside_username": username, "setside_password": "pw", "icp": "pbx"}
        )
        assert r.status_code == 422, (username, r.text)
        r = await any_http.put(DEVICES + "%2B15551234/", json={"icpside_username": username})
        assert r.status_code == 422, (username, r.text)


async def test_consumer_names_must_be_able_to_pair(any_http: httpx.AsyncClient) -> None:
    consumers = "/mslrest/limen/v1/consumers/"
    for name in ("a", "ab"):
        r = await any_http.post(consumers, json={"name": name})
        assert r.status_code == 422, r.text
        assert "consumer id" in json.dumps(r.json())
    r = await any_http.post(consumers, json={"name": "ab", "consumer_key": "pbx-ab"})
    assert r.status_code == 201, r.text
    r = await any_http.post(consumers, json={"name": "mv5000"})
    assert r.status_code == 201, r.text


PERMISSION_CASES = [
    ("/mbg/v1/icps/", True),
    ("MBG/mbg/v1/globaloptions/", True),
    ("Base/managetoken/", True),
    ("/mbg/", True),
    ("/mbg/v1/devices/", True),
    ("/msl/v1/netbackup/", True),
    ("/", True),
    ("/mbg/v1/icps/:RW", False),
    ("/mbg/v1/icp/", False),
    ("/nothing/", False),
]


async def test_permission_paths_must_name_a_resource(any_http: httpx.AsyncClient) -> None:
    for index, (path, ok) in enumerate(PERMISSION_CASES):
        r = await any_http.post(
            "/mslrest/limen/v1/consumers/",
            json={
                "name": f"mv5000-{index}",
                "permissions": [{"path": path, "read": True, "write": True}],
            },
        )
        assert r.status_code == (201 if ok else 422), (path, r.text)
        if not ok:
            assert "matches no resource" in json.dumps(r.json())


def test_every_consumer_route_is_under_a_known_permission_path(core: Core) -> None:
    from limen.api import create_app
    from limen.store.schemas import PERMISSION_PATHS

    app = create_app(core)
    free = ("/mslrest/limen/", "/mslrest/initiate", "/mslrest/token", "/mslrest/authorize")
    for route in app.routes:
        path: str = getattr(route, "path", "")
        if not path.startswith("/mslrest/") or path.startswith(free):
            continue
        if path in ("/mslrest/ping", "/mslrest/ping/"):
            continue
        relative = path.removeprefix("/mslrest")
        assert any(relative.startswith(p) for p in PERMISSION_PATHS), path


async def test_bodies_are_bounded(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    big = '{"name": "pbx", "address": "192.0.2.10", "description": "' + "x" * (1 << 20) + '"}'
    r = await http.post(ICPS, content=big, headers={**admin, "Content-Type": "application/json"})
    assert r.status_code == 413
    # Declared too large: refused from the header, before any byte of it is read.
    r = await http.post(
        "/mslrest/msl/v1/netrestore/",
        content=b"x",
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(1 << 30)},
    )
    assert r.status_code == 413
    # An unauthenticated upload is not read at all.
    r = await http.post(
        "/mslrest/msl/v1/netrestore/",
        content=b"x" * 1000,
        headers={"Content-Type": "application/octet-stream", "X-Limen-Passphrase": "p"},
    )
    assert r.status_code == 401


async def test_allowed_uri_names_are_sip_hosts(any_http: httpx.AsyncClient) -> None:
    options = "/mslrest/mbg/v1/globaloptions/"
    for bad in (["limen example.net"], ["limen.example.net\r\n"], ["a@b"]):
        r = await any_http.put(options, json={"allowed_uri_names": bad})
        assert r.status_code == 422, (bad, r.text)
    r = await any_http.put(
        options, json={"allowed_uri_names": ["limen.example.net", "[2001:db8::1]"]}
    )
    assert r.status_code == 200, r.text


async def test_a_stored_permission_from_before_the_rule_still_lists(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    from limen.store import models
    from limen.store.schemas import ConsumerCreate

    core.store.consumers.create(ConsumerCreate(name="mv5000"))
    with core.store.sessions() as s, s.begin():
        consumer = s.query(models.Consumer).one()
        s.add(
            models.ConsumerPermission(
                consumer=consumer, path="/mbg/v1/icps/:RW/", read=True, write=True
            )
        )
    r = await http.get("/mslrest/limen/v1/consumers/", headers=admin)
    assert r.status_code == 200
    assert r.json()["response"][0]["permissions"][0]["path"] == "/mbg/v1/icps/:RW/"
    assert core.store.consumers.auth("mv5000") is not None
