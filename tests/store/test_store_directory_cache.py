"""The gateway's Directory follows the store entry by entry (issue 13).

A change to one device re-reads that device only: with 10,000 devices provisioned, an edit
costs a few milliseconds of CPU instead of the 0.5 to 0.7 s of a whole reload (20,000
password decryptions), and every other cached entry stays the very same object. Deletes,
renames (the username index) and ICP changes (the devices' view of their ICP) are applied
in place; a change made by another process (key ``*``) is found by a sync that reads only
the device guids and the recently changed rows.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

from sqlalchemy import insert, select

from limen.gateway.context import Directory
from limen.store import Change, Store
from limen.store import models as m
from limen.store.schemas import DeviceCreate, DeviceUpdate, IcpCreate, IcpUpdate


class Bus:
    """The store's change announcements, as the running gateway's bus receives them."""

    def __init__(self, store: Store) -> None:
        self.changes: list[Change] = []
        store.on_change = self.changes.append

    def take(self) -> list[Change]:
        taken = list(self.changes)
        self.changes.clear()
        return taken


def update(directory: Directory, store: Store, changes: list[Change]) -> float:
    """Fetch and apply ``changes`` as the gateway does; returns the CPU seconds it took."""
    started = time.process_time()
    directory.apply(directory.fetch(store, changes))
    return time.process_time() - started


def bulk_devices(store: Store, icp: str, count: int) -> None:
    """``count`` devices straight into the table (one encryption shared by all: the
    fixture's cost must not be the thing measured)."""
    with store.sessions() as s, s.begin():
        icp_id = s.scalar(select(m.Icp.id).where(m.Icp.name == icp))
        secret = store.box.encrypt("bulk-secret")
        s.execute(
            insert(m.SipDevice),
            [
                {
                    "guid": str(uuid.uuid4()),
                    "setside_username": f"b{n}",
                    "setside_password_enc": secret,
                    "icpside_username": f"b{n}",
                    "icpside_password_enc": secret,
                    "icp_id": icp_id,
                    "description": "",
                }
                for n in range(count)
            ],
        )


def add(store: Store, user: str, icp: str = "pbx", **kw: object) -> str:
    data = DeviceCreate(setside_username=user, setside_password=f"pw-{user}", icp=icp, **kw)  # type: ignore[arg-type]
    return store.devices.create(data).guid


def test_one_edit_among_10000_updates_that_entry_only(sqlite_settings: object) -> None:
    from limen.store import open_store

    store = open_store(sqlite_settings)  # type: ignore[arg-type]
    try:
        store.icps.create(IcpCreate(name="pbx", address="10.0.0.2"))
        bulk_devices(store, "pbx", 10_000)
        guid = add(store, "7000")
        directory = Directory.load(store)
        assert len(directory.devices) == 10_001
        before = dict(directory.devices)
        bus = Bus(store)

        store.devices.update("7000", DeviceUpdate(setside_password="n3w", max_calls=2))
        changes = bus.take()
        assert changes == [Change("device", "updated", guid)]
        cpu = update(directory, store, changes)

        device = directory.device_by_setside("7000")
        assert device is not None and device.setside_password == "n3w"
        assert device.max_calls == 2 and directory.devices[guid] is device
        # Every other entry is the same object: nothing else was re-read or rebuilt.
        assert all(directory.devices[g] is d for g, d in before.items() if g != guid)
        assert cpu < 0.05, f"one-device update took {cpu:.3f} s of CPU"
        # For scale: the whole reload this replaces.
        started = time.process_time()
        Directory.load(store)
        assert time.process_time() - started > 5 * cpu
    finally:
        store.close()


def test_delete_rename_and_overrides(store: Store) -> None:
    store.icps.create(IcpCreate(name="pbx", address="10.0.0.2"))
    keep = add(store, "7001")
    guid = add(store, "7000", set_side_rtp_security="Require", setside_codec="G.711 only")
    directory = Directory.load(store)
    bus = Bus(store)
    overrides = directory.overrides(guid)
    assert overrides is not None
    assert (overrides.set_side_rtp_security, overrides.setside_codec) == (
        "Require",
        "G.711 only",
    )
    assert directory.overrides("no-such-device") is None

    # Rename: the old username no longer finds the device, the new one does.
    store.devices.update(guid, DeviceUpdate(setside_username="Alice", prack_support=True))
    update(directory, store, bus.take())
    assert directory.device_by_setside("7000") is None
    renamed = directory.device_by_setside("alice")
    assert renamed is not None and renamed.guid == guid
    assert directory.overrides(guid).prack_support is True  # type: ignore[union-attr]

    # A freed username taken by another device in the same batch.
    store.devices.update(guid, DeviceUpdate(setside_username="bob"))
    store.devices.update(keep, DeviceUpdate(setside_username="alice"))
    update(directory, store, bus.take())
    assert directory.device_by_setside("alice").guid == keep  # type: ignore[union-attr]
    assert directory.device_by_setside("bob").guid == guid  # type: ignore[union-attr]

    store.devices.delete(guid)
    update(directory, store, bus.take())
    assert guid not in directory.devices
    assert directory.device_by_setside("bob") is None
    assert directory.overrides(guid) is None
    assert set(directory.devices) == {keep}


def test_icp_change_updates_its_devices_view(store: Store) -> None:
    icp = store.icps.create(IcpCreate(name="pbx", address="10.0.0.2"))
    store.icps.create(IcpCreate(name="other", address="10.0.0.3"))
    guid = add(store, "7000")
    directory = Directory.load(store)
    bus = Bus(store)

    store.icps.update(icp.guid, IcpUpdate(name="pbx-a", address="10.0.0.9"))
    update(directory, store, bus.take())
    device = directory.devices[guid]
    assert device.icp == "pbx-a"
    found = directory.icp_of(device)
    assert found is not None and found.address == "10.0.0.9"
    assert directory.icp_at("10.0.0.9") is not None and directory.icp_at("10.0.0.2") is None

    # Moving the device to another ICP.
    store.devices.update(guid, DeviceUpdate(icp="other"))
    update(directory, store, bus.take())
    assert directory.icp_of(directory.devices[guid]).name == "other"  # type: ignore[union-attr]

    # Deleting an ICP with its devices announces each device: they leave the cache.
    store.icps.delete("other", with_devices=True)
    update(directory, store, bus.take())
    assert guid not in directory.devices and directory.device_by_setside("7000") is None


def test_options_change_updates_options_only(store: Store) -> None:
    store.icps.create(IcpCreate(name="pbx", address="10.0.0.2"))
    guid = add(store, "7000")
    directory = Directory.load(store)
    device = directory.devices[guid]
    bus = Bus(store)
    store.options.set({"heartbeat_interval": 45})
    update(directory, store, bus.take())
    assert directory.options.heartbeat_interval == 45
    assert directory.devices[guid] is device


def test_another_process_changes_are_synced(store: Store) -> None:
    """What the configuration poll announces (key ``*``): deletions through the guid set,
    creations and edits through ``updated_at``, untouched devices left as they are."""
    store.icps.create(IcpCreate(name="pbx", address="10.0.0.2"))
    gone = add(store, "7000")
    edited = add(store, "7001")
    untouched = add(store, "7002")
    directory = Directory.load(store)
    kept = directory.devices[untouched]
    # Nothing reaches this process's bus: another process made these changes.
    store.on_change = None
    store.devices.delete(gone)
    store.devices.update(edited, DeviceUpdate(setside_password="changed"))
    new = add(store, "7003")
    # The untouched device's row is older than the sync window.
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with store.sessions() as s, s.begin():
        s.execute(
            m.SipDevice.__table__.update()
            .where(m.SipDevice.guid == untouched)
            .values(updated_at=old)
        )
    update(directory, store, [Change("device", "updated", "*")])
    assert set(directory.devices) == {edited, untouched, new}
    assert directory.devices[edited].setside_password == "changed"
    assert directory.devices[untouched] is kept
    assert directory.device_by_setside("7000") is None
    assert directory.device_by_setside("7003") is not None
