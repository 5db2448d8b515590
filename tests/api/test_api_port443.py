"""The admin API on the standard HTTPS port (issue 14): a PBX's pairing form asks only for
an address, so MBG's API is reached on 443. ``[api] port = 443`` must just work (as root
or with CAP_NET_BIND_SERVICE, docs/api.md)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx
import pytest

from limen.api import ApiServer
from limen.config import load_settings
from limen.core import Core
from limen.store import api_tls_paths

# A loopback address of its own, so nothing else on the host is in the way.
HOST = "127.14.4.43"


async def test_admin_api_listens_on_443_from_the_config(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("binding port 443 needs root (or CAP_NET_BIND_SERVICE)")
    config = tmp_path / "limen.toml"
    config.write_text(f'data_dir = "data"\n\n[api]\nbind = "{HOST}"\nport = 443\n')
    settings = load_settings(config)
    assert settings.api.port == 443
    core = Core.open(settings)
    try:
        server = ApiServer(core)
        await server.start()
        try:
            assert server.port == 443
            context = ssl.create_default_context(cafile=api_tls_paths(settings)[0])
            context.check_hostname = False
            async with httpx.AsyncClient(verify=context) as http:
                r = await http.get(f"https://{HOST}/mslrest/ping")
            assert r.status_code == 401  # up, and asking for a signature
            assert "OAuth" in r.headers["www-authenticate"]
        finally:
            await server.stop()
    finally:
        core.close()
