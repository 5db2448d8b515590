"""The admin API served by uvicorn over real HTTPS (``ApiServer``/``serve_api``), with the
self-signed certificate Limen generates, and the PBX pairing flow across the wire."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import httpx
from test_api_oauth import PERMISSIONS, pair, send

from limen.api import ApiServer, serve_api
from limen.core import Core
from limen.store import api_tls_paths
from limen.store.schemas import ConsumerCreate


def trust(core: Core) -> ssl.SSLContext:
    cert, _key = api_tls_paths(core.settings)
    return ssl.create_default_context(cafile=cert)


async def test_pairing_over_https_with_a_verified_certificate(
    core: Core, admin: dict[str, str]
) -> None:
    server = ApiServer(core, host="127.0.0.1", port=0)
    await server.start()
    base = f"https://127.0.0.1:{server.port}"
    try:
        _record, secret = core.store.consumers.create(
            ConsumerCreate(name="mv5000", permissions=PERMISSIONS)
        )
        async with httpx.AsyncClient(base_url=base, verify=trust(core)) as http:
            paired = await pair(http, admin, "mv5000", secret, base=base)
            r = await send(
                http, paired.client(), "GET", "/mslrest/mbg/v1/globaloptions/", base=base
            )
            assert r.status_code == 200 and r.json()["set_side_rtp_security"] == "Require"
            r = await send(
                http,
                paired.client(),
                "PUT",
                "/mslrest/mbg/v1/globaloptions/",
                {"challenge_methods": ["INVITE"]},
                base=base,
            )
            assert r.status_code == 200 and r.json()["challenge_methods"] == ["INVITE"]
            r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/devices/sip/", base=base)
            assert r.status_code == 403
            uri, headers, _ = paired.client().sign(
                base + "/mslrest/mbg/v1/icps/", http_method="GET"
            )
            assert (await http.get(uri, headers=headers)).status_code == 200
            assert (await http.get(uri, headers=headers)).status_code == 401
        async with httpx.AsyncClient(base_url=base.replace("https", "http")) as plain:
            try:
                r = await plain.get("/mslrest/mbg/v1/icps/")
                refused = r.status_code >= 400
            except httpx.HTTPError:
                refused = True
            assert refused
    finally:
        await server.stop()


async def test_serve_api_runs_until_cancelled(core: Core, admin: dict[str, str]) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_api(core, host="127.0.0.1", port=port))
    base = f"https://127.0.0.1:{port}"
    cert = Path(api_tls_paths(core.settings)[0])
    for _ in range(200):
        if cert.exists():
            break
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=base, verify=trust(core)) as http:
        for _ in range(200):
            try:
                r = await http.get("/mslrest/mbg/v1/icps/count/", headers=admin)
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
        assert r.json() == {"count": 0}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # the listener is closed
