"""Issue 11: the API's schema explains each setting with the same text as `limen options
show` and `limen device show` (one source: limen.store.options.SETTING_HELP and
limen.store.schemas.DEVICE_HELP), served at /openapi.json."""

from __future__ import annotations

import httpx

from limen.store.options import SETTING_HELP, GlobalOptions
from limen.store.schemas import DEVICE_HELP


async def test_openapi_carries_the_cli_explanations(http: httpx.AsyncClient) -> None:
    r = await http.get("/openapi.json")
    assert r.status_code == 200
    schemas = r.json()["components"]["schemas"]
    options = schemas["GlobalOptions"]["properties"]
    assert set(options) == set(GlobalOptions.names())
    for name, prop in options.items():
        assert prop["description"] == SETTING_HELP[name], name
    for model in ("DeviceCreate", "DeviceUpdate", "DeviceRecord"):
        props = schemas[model]["properties"]
        for name in (
            "options_hb",
            "heartbeat_interval",
            "rtpframesize",
            "setside_codec",
            "set_side_rtp_security",
            "prack_support",
            "challenge_methods",
        ):
            assert props[name]["description"] == DEVICE_HELP[name], (model, name)
        assert props["setside_username"]["description"] == DEVICE_HELP["setside_username"]
