"""Regressions: inputs that made the API answer 500 (found by fuzzing) now get a 4xx."""

from __future__ import annotations

import httpx
import pytest

from limen.core import Core
from limen.store.errors import Invalid
from limen.store.schemas import MAX_PAGE

HUGE = 2**70  # past the 64-bit integers SQLite and PostgreSQL take


@pytest.mark.parametrize("path", ["/mslrest/mbg/v1/devices/sip/all/", "/mslrest/msl/v1/events/"])
async def test_huge_offset_is_422_naming_it(
    http: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    # Was: OverflowError "Python int too large to convert to SQLite INTEGER" → 500.
    response = await http.get(path, params={"offset": HUGE}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]
    ok = await http.get(path, params={"offset": MAX_PAGE}, headers=admin)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"response": []}


def test_store_lists_refuse_offsets_no_database_takes(core: Core) -> None:
    with pytest.raises(Invalid) as caught:
        core.store.devices.list(offset=HUGE)
    assert caught.value.field == "offset"
    with pytest.raises(Invalid) as caught:
        core.store.events.list(offset=-1)
    assert caught.value.field == "offset"
    with pytest.raises(Invalid) as caught:
        core.store.devices.list(limit=HUGE)
    assert caught.value.field == "limit"


@pytest.mark.parametrize(
    "path",
    [
        f"/mslrest/mbg/v1/metrics/0/{'9' * 400}/",
        f"/mslrest/mbg/v1/metrics/{'9' * 400}/{'9' * 400}/",
        "/mslrest/mbg/v1/metrics/-1/5/",
    ],
)
async def test_metrics_history_out_of_range_epochs_are_422(
    http: httpx.AsyncClient, admin: dict[str, str], path: str
) -> None:
    # Was: OverflowError converting the epoch to a float → 500.
    response = await http.get(path, headers=admin)
    assert response.status_code == 422, response.text


async def test_metrics_history_in_range(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.get("/mslrest/mbg/v1/metrics/0/253402300799/", headers=admin)
    assert response.status_code == 200, response.text
    bad_order = await http.get("/mslrest/mbg/v1/metrics/10/5/", headers=admin)
    assert bad_order.status_code == 422


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": "OAuth a=b,,,"}, ""),
        ({"Authorization": "OAuth \x7f"}, ""),
        ({"Authorization": "Basic abc"}, "?oauth_signature=x&oauth_consumer_key=pbx"),
        ({}, "?oauth_signature=%ZZ"),
    ],
    ids=["trailing-commas", "no-pairs", "query-with-basic-header", "bad-escape"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/mslrest/mbg/v1/icps/"), ("POST", "/mslrest/managetoken/renew/")],
)
async def test_malformed_oauth_parameters_are_401(
    http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], query: str
) -> None:
    # Was: oauthlib's bare ValueError("Malformed authorization header") escaping
    # OAuthServer.verify → 500 on every consumer-reachable resource.
    response = await http.request(method, path + query, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["detail"]
