"""MBG metrics from the gateway: sampling arithmetic with a fake clock, and the live API."""

from __future__ import annotations

from pathlib import Path

import httpx

from limen.app import prepare, start
from limen.config import ApiSettings, ProvisioningSettings, Settings, SipSettings
from limen.gateway.metrics import GatewayMetrics, Readings


class Feed:
    def __init__(self) -> None:
        self.calls_started = 0
        self.bytes = {"set": 0, "icp": 0}

    def read(self) -> Readings:
        return Readings(
            active_calls=2,
            active_connections=5,
            registrations=7,
            calls_started=self.calls_started,
            media_bytes=dict(self.bytes),
            counters={"calls_total": {"started": self.calls_started}},
        )


def test_bandwidth_and_calls_per_hour_from_counters() -> None:
    feed = Feed()
    metrics = GatewayMetrics(feed.read, interval=10)
    first = metrics.sample(1000.0)
    assert (first.active_calls, first.active_connections, first.registrations) == (2, 5, 7)
    assert first.bandwidth_set_in == 0 and first.calls_per_hour == 0
    # 10 s later: one G.711 stream each way (80 kbit/s incl. headers ≈ 100,000 B / 10 s).
    feed.bytes = {"set": 100_000, "icp": 100_000}
    feed.calls_started = 3
    second = metrics.sample(1010.0)
    assert second.bandwidth_set_in == 80 and second.bandwidth_icp_in == 80
    assert second.bandwidth_set_out == 80 and second.bandwidth_icp_out == 80
    assert second.calls_per_hour == 3
    # Starts older than an hour no longer count.
    feed.calls_started = 4
    later = metrics.sample(1000.0 + 3700)
    assert later.calls_per_hour == 1
    assert [s.timestamp for s in metrics.history(1005.0, 5000.0)] == [1010.0, 4700.0]


async def test_api_serves_the_gateway_metrics(tmp_path: Path) -> None:
    settings = Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        sip=SipSettings(bind="127.0.0.1", udp_port=0, tcp_port=0, tls=False),
        api=ApiSettings(bind="127.0.0.1", port=0),
        provisioning=ProvisioningSettings(enabled=False),
    )
    prepare(settings)
    app = await start(settings)
    try:
        assert app.api is not None and app.metrics is not None
        token, _record = app.core.store.admins.issue_token("admin", name="metrics test")
        url = f"https://127.0.0.1:{app.api.port}/mslrest/mbg/v1/metrics/"
        base = f"https://127.0.0.1:{app.api.port}/mslrest/limen/v1/calls/"
        admin = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(verify=False) as client:
            response = await client.get(url, headers=admin)
            calls = await client.get(base, headers=admin)
            count = await client.get(base + "count/", headers=admin)
            anonymous = await client.get(base)
        assert (calls.status_code, calls.json()) == (200, {"response": []})
        assert count.json() == {"count": 0}
        assert anonymous.status_code == 401
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["active_calls"] == 0 and body["registrations"] == 0
        assert body["active_connections"] == 0
    finally:
        await app.close()
