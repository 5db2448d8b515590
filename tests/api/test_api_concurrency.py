"""Concurrent changes of one object over the real HTTPS API (issue 14, lost updates).

Twenty writers PUT different bodies to the same device at the same moment, on SQLite and
on PostgreSQL. Each change is atomic (BEGIN IMMEDIATE / SELECT ... FOR UPDATE), so the
stored device equals exactly one request's body, never a mix of several. ``If-Match``
gives clients optimistic concurrency on top: a stale entity tag gets 412.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from limen.api import ApiServer
from limen.core import Core
from limen.store import api_tls_paths
from limen.store.schemas import DeviceCreate, IcpCreate

WRITERS = 20
ROUNDS = 3
CODECS = ["Unrestricted", "G.711 only", "G.722 only", "G.729 only", "Opus only"]
SECURITY = ["Require", "Prefer", "Disable"]
KEEPALIVE = ["Always", "Only behind NAT", "Never"]


def body(round_: int, writer: int) -> dict[str, Any]:
    """A full body whose every field depends on the writer: booleans and short enums
    repeat between writers, which is where a column-wise merge of two writes shows."""
    n = round_ * WRITERS + writer
    return {
        "description": f"round {round_} writer {writer}",
        "icpside_username": f"icp{n}",
        "heartbeat_interval": n % 180 + 1,
        "prack_support": n % 2 == 0,
        "setside_codec": CODECS[n % len(CODECS)],
        "set_side_rtp_security": SECURITY[n % len(SECURITY)],
        "options_hb": KEEPALIVE[(n // 3) % len(KEEPALIVE)],
        "clientid": f"00085D{n:06X}",
    }


async def test_twenty_concurrent_writers_leave_exactly_one_body(
    any_core: Core, any_token: str
) -> None:
    core = any_core
    token = any_token
    core.store.icps.create(IcpCreate(name="pbx", address="192.0.2.10"))
    device = core.store.devices.create(
        DeviceCreate(setside_username="1001", setside_password="secret-1001", icp="pbx")
    )
    server = ApiServer(core, host="127.0.0.1", port=0)
    await server.start()
    base = f"https://127.0.0.1:{server.port}"
    context = ssl.create_default_context(cafile=api_tls_paths(core.settings)[0])
    url = f"{base}/mslrest/mbg/v1/devices/sip/{device.guid}/"
    headers = {"Authorization": f"Bearer {token}"}

    def one_round(round_: int) -> list[httpx.Response]:
        start = threading.Barrier(WRITERS)
        clients = [httpx.Client(verify=context, headers=headers) for _ in range(WRITERS)]
        for client in clients:  # connections open before the race, so the PUTs overlap
            assert client.get(url).status_code == 200

        def write(writer: int) -> httpx.Response:
            start.wait()
            return clients[writer].put(url, json=body(round_, writer))

        try:
            with ThreadPoolExecutor(WRITERS) as pool:
                return list(pool.map(write, range(WRITERS)))
        finally:
            for client in clients:
                client.close()

    try:
        for round_ in range(ROUNDS):
            responses = await asyncio.to_thread(one_round, round_)
            bodies = [body(round_, w) for w in range(WRITERS)]
            for writer, response in enumerate(responses):
                assert response.status_code == 200, response.text
                shown = response.json()
                assert {k: shown[k] for k in bodies[writer]} == bodies[writer]
            stored = core.store.devices.get(device.guid).model_dump()
            final = {k: stored[k] for k in bodies[0]}
            assert final in bodies, f"round {round_}: stored row mixes requests: {final}"
    finally:
        await server.stop()


async def test_if_match_refuses_a_stale_entity_tag(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    r = await http.post(
        "/mslrest/mbg/v1/icps/", headers=admin, json={"name": "pbx", "address": "192.0.2.10"}
    )
    assert r.status_code == 201
    r = await http.post(
        "/mslrest/mbg/v1/devices/sip/",
        headers=admin,
        json={"setside_username": "1001", "setside_password": "pw-1001", "icp": "pbx"},
    )
    url = "/mslrest/mbg/v1/devices/sip/1001/"
    first = (await http.get(url, headers=admin)).headers["etag"]
    assert first.startswith('"') and first.endswith('"')
    # Another client changes the device (here: without If-Match, still allowed).
    r = await http.put(url, headers=admin, json={"description": "changed by B"})
    assert r.status_code == 200 and r.headers["etag"] != first
    second = r.headers["etag"]
    assert (await http.get(url, headers=admin)).headers["etag"] == second
    # A writes with the tag it read before B's change: refused, nothing changed.
    r = await http.put(url, headers={**admin, "If-Match": first}, json={"description": "A"})
    assert r.status_code == 412 and "changed since" in r.json()["detail"]
    assert (await http.get(url, headers=admin)).json()["description"] == "changed by B"
    # Weak tags never match (strong comparison, RFC 9110 §13.1.1); '*' and lists do.
    r = await http.put(url, headers={**admin, "If-Match": "W/" + second}, json={"description": "A"})
    assert r.status_code == 412
    r = await http.put(
        url, headers={**admin, "If-Match": f"{first}, {second}"}, json={"description": "A"}
    )
    assert r.status_code == 200
    r = await http.put(url, headers={**admin, "If-Match": "*"}, json={"description": "A2"})
    assert r.status_code == 200
    r = await http.delete(url, headers={**admin, "If-Match": second})
    assert r.status_code == 412
    r = await http.delete(url, headers={**admin, "If-Match": r.headers.get("etag", '"x"')})
    assert r.status_code == 412
    current = (await http.get(url, headers=admin)).headers["etag"]
    assert (await http.delete(url, headers={**admin, "If-Match": current})).status_code == 200
    # The same on ICPs.
    icp_url = "/mslrest/mbg/v1/icps/pbx/"
    tag = (await http.get(icp_url, headers=admin)).headers["etag"]
    r = await http.put(icp_url, headers={**admin, "If-Match": tag}, json={"port": 5070})
    assert r.status_code == 200
    r = await http.put(icp_url, headers={**admin, "If-Match": tag}, json={"port": 5080})
    assert r.status_code == 412
    assert (await http.get(icp_url, headers=admin)).json()["port"] == 5070
