"""Configuration changed by another process (the CLI) reaches a running Limen."""

from __future__ import annotations

import asyncio
from pathlib import Path

from limen.app import prepare, start
from limen.config import ApiSettings, ProvisioningSettings, Settings, SipSettings
from limen.store import open_store
from limen.store.schemas import DeviceCreate, IcpCreate


async def test_cli_changes_reach_a_running_limen(tmp_path: Path) -> None:
    settings = Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        config_poll=0.1,
        sip=SipSettings(bind="127.0.0.1", udp_port=0, tcp_port=0, tls=False, lan_ip="127.0.0.1"),
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
    )
    prepare(settings)
    app = await start(settings)
    try:
        directory = app.calls.ctx.directory if app.calls is not None else None
        assert directory is not None and directory.device_by_setside("7000") is None
        # What `limen device add` does: its own store (its own process in real life, so
        # the running Limen's change bus never hears of it).
        other = open_store(settings)
        try:
            before = other.config_version()
            other.icps.create(IcpCreate(name="pbx", address="127.0.0.2", port=5060))
            other.devices.create(
                DeviceCreate(setside_username="7000", setside_password="s3cret!", icp="pbx")
            )
            assert other.config_version() == before + 2
        finally:
            other.close()
        for _ in range(100):
            if directory.device_by_setside("7000") is not None:
                break
            await asyncio.sleep(0.05)
        device = directory.device_by_setside("7000")
        assert device is not None and device.setside_password == "s3cret!"
        assert directory.icp_at("127.0.0.2") is not None
    finally:
        await app.close()
