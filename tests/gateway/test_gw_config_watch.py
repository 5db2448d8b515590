"""Configuration changed by another process (the CLI) reaches a running Limen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from limen.app import prepare, start
from limen.config import ApiSettings, ProvisioningSettings, Settings, SipSettings
from limen.store import open_store
from limen.store.schemas import DeviceCreate, DeviceUpdate, IcpCreate


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


async def test_changes_on_the_bus_update_single_entries(tmp_path: Path) -> None:
    """An in-process change (API, console, CLI import in this process) reaches the running
    gateway through the change bus and touches only the device it names (issue 13)."""
    settings = Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        config_poll=30.0,  # the poll must not be what delivers the changes here
        sip=SipSettings(bind="127.0.0.1", udp_port=0, tcp_port=0, tls=False, lan_ip="127.0.0.1"),
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
    )
    prepare(settings)
    app = await start(settings)
    try:
        assert app.calls is not None and app.registrar is not None
        directory = app.calls.ctx.directory
        store = app.core.store
        store.icps.create(IcpCreate(name="pbx", address="127.0.0.2", port=5060))
        other = store.devices.create(
            DeviceCreate(setside_username="7001", setside_password="x1", icp="pbx")
        ).guid
        guid = store.devices.create(
            DeviceCreate(setside_username="7000", setside_password="s3cret!", icp="pbx")
        ).guid

        async def until(check: Callable[[], bool]) -> None:
            for _ in range(100):
                if check():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("the change did not reach the Directory")

        await until(lambda: directory.device_by_setside("7000") is not None)
        token = app.registrar.contact_token(directory.devices[guid])
        assert app.registrar.device_for_contact_user(token) is not None
        untouched = directory.devices[other]

        store.devices.update(
            guid, DeviceUpdate(setside_username="7100", setside_codec="G.711 only")
        )
        await until(lambda: directory.device_by_setside("7100") is not None)
        assert directory.device_by_setside("7000") is None
        assert directory.overrides(guid).setside_codec == "G.711 only"  # type: ignore[union-attr]
        assert directory.devices[other] is untouched

        store.devices.delete(guid)
        await until(lambda: guid not in directory.devices)
        assert app.registrar.device_for_contact_user(token) is None
        assert directory.devices[other] is untouched
    finally:
        await app.close()
