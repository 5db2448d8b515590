"""ICPs and SIP devices: lookups, uniqueness, cascades, credentials, change events."""

from __future__ import annotations

import pytest

from limen.store import Change, Conflict, Invalid, NotFound
from limen.store.repository import Store
from limen.store.schemas import DeviceCreate, DeviceUpdate, IcpCreate, IcpUpdate

HASH = "16a78df75f29020a19fb5fd14bfac940"


def add_icp(store: Store, name: str = "mv5000", **kw: object) -> str:
    return store.icps.create(IcpCreate(name=name, address="100.100.100.71", **kw)).guid  # type: ignore[arg-type]


def add_device(store: Store, user: str, mac: str | None = None, icp: str = "mv5000") -> str:
    data = DeviceCreate(setside_username=user, setside_password=f"pw{user}", icp=icp, clientid=mac)
    return store.devices.create(data).guid


def test_icp_defaults_follow_the_seed_figure_10(store: Store) -> None:
    icp = store.icps.create(IcpCreate(name="mv5000", address="100.100.100.71", hashes=[HASH]))
    assert icp.type == "MiVoice 5000"
    assert icp.sip_capabilities == ["udp", "tcp", "tls"]
    assert (icp.xml_listen_port, icp.xml_destination_port, icp.tls, icp.link_enabled) == (
        4445,
        4445,
        True,
        True,
    )
    assert icp.hashes == [HASH]


def test_icp_found_by_guid_name_and_hash(store: Store) -> None:
    guid = add_icp(store, hashes=[HASH.upper()])
    assert store.icps.get(guid).name == "mv5000"
    assert store.icps.get(guid.upper()).name == "mv5000"
    assert store.icps.get("mv5000").guid == guid
    found = store.icps.by_hash(HASH)
    assert found is not None and found.guid == guid
    assert store.icps.by_hash("0" * 32) is None
    with pytest.raises(NotFound, match="no ICP 'nope'"):
        store.icps.get("nope")


def test_icp_names_and_hashes_are_unique(store: Store) -> None:
    add_icp(store, hashes=[HASH])
    with pytest.raises(Conflict, match="already exists"):
        add_icp(store)
    with pytest.raises(Conflict, match=f"hash {HASH}"):
        add_icp(store, name="other", hashes=[HASH])
    other = add_icp(store, name="other")
    with pytest.raises(Conflict, match="already exists"):
        store.icps.update(other, IcpUpdate(name="mv5000"))
    assert store.icps.count() == 2


def test_icp_update_changes_only_given_fields(store: Store) -> None:
    guid = add_icp(store, hashes=[HASH], description="lab")
    updated = store.icps.update(
        "mv5000", IcpUpdate(port=5061, transport="tls", hashes=["abcdef0123456789"])
    )
    assert (updated.port, updated.transport, updated.hashes) == (5061, "tls", ["abcdef0123456789"])
    assert updated.description == "lab" and updated.guid == guid
    assert store.icps.by_hash(HASH) is None


def test_deleting_an_icp_with_devices_needs_confirmation_then_cascades(store: Store) -> None:
    add_icp(store)
    add_icp(store, name="other")
    add_device(store, "7000", "00085D4330B8")
    add_device(store, "7001")
    add_device(store, "8000", icp="other")
    with pytest.raises(Conflict, match="has 2 device"):
        store.icps.delete("mv5000")
    assert store.devices.count() == 3
    assert store.icps.delete("mv5000", with_devices=True) == 2
    assert [d.setside_username for d in store.devices.list()] == ["8000"]
    assert store.icps.delete("other", with_devices=True) == 1
    assert store.icps.count() == 0


def test_device_lookups_by_guid_username_and_mac(store: Store) -> None:
    add_icp(store)
    guid = add_device(store, "7000", "00:08:5d:43:30:b8")
    for key in (guid, "7000", "00085D4330B8", "00-08-5D-43-30-B8", "00:08:5d:43:30:b8"):
        assert store.devices.get(key).guid == guid
    with pytest.raises(NotFound):
        store.devices.get("7001")


def test_device_icp_side_credentials_default_to_set_side(store: Store) -> None:
    add_icp(store)
    add_device(store, "7000")
    creds = store.devices.credentials("7000")
    assert (creds.icpside_username, creds.icpside_password) == ("7000", "pw7000")
    record = store.devices.get("7000")
    assert "password" not in " ".join(record.model_dump())


def test_device_uniqueness_and_icp_reference(store: Store) -> None:
    add_icp(store)
    add_device(store, "7000", "00085D4330B8")
    with pytest.raises(Conflict, match="setside_username"):
        add_device(store, "7000")
    with pytest.raises(Conflict, match="clientid"):
        add_device(store, "7001", "00085d4330b8")
    with pytest.raises(Invalid) as info:
        add_device(store, "7002", icp="nope")
    assert info.value.field == "icp"
    add_device(store, "7003", None)
    add_device(store, "7004", None)  # many devices without a MAC
    assert store.devices.count() == 3


def test_device_update_passwords_options_and_reset(store: Store) -> None:
    add_icp(store)
    add_icp(store, name="other")
    add_device(store, "7000", "00085D4330B8")
    store.devices.update(
        "7000",
        DeviceUpdate(
            setside_password="new-pass",
            icp="other",
            challenge_methods=["register", "INVITE"],
            heartbeat_interval=60,
        ),
    )
    record = store.devices.get("7000")
    assert (record.icp, record.challenge_methods, record.heartbeat_interval) == (
        "other",
        ["REGISTER", "INVITE"],
        60,
    )
    assert store.devices.credentials("7000").setside_password == "new-pass"
    assert store.devices.credentials("7000").icpside_password == "pw7000"
    reset = store.devices.update(
        "7000", DeviceUpdate.model_validate({"challenge_methods": None, "clientid": None})
    )
    assert reset.challenge_methods is None and reset.clientid is None
    assert reset.heartbeat_interval == 60


def test_create_many_is_all_or_nothing(store: Store) -> None:
    add_icp(store)
    good = [
        DeviceCreate(setside_username=str(7000 + i), setside_password="pw", icp="mv5000")
        for i in range(5)
    ]
    dup = [*good, DeviceCreate(setside_username="7000", setside_password="pw", icp="mv5000")]
    with pytest.raises(Conflict):
        store.devices.create_many(dup)
    assert store.devices.count() == 0
    seen: list[int] = []
    assert store.devices.create_many(good, progress=seen.append, batch=2) == 5
    assert seen == [2, 2, 1]
    assert store.devices.count(icp="mv5000") == 5


def test_changes_are_announced_after_commit_and_audited(store: Store) -> None:
    changes: list[Change] = []
    store.on_change = changes.append
    guid = add_icp(store)
    add_device(store, "7000")
    with pytest.raises(Conflict):
        add_device(store, "7000")
    assert [(c.resource, c.action) for c in changes] == [
        ("icp", "created"),
        ("device", "created"),
    ]
    assert changes[0].key == guid
    audit = store.events.list(kind="audit")
    assert [e.message for e in audit][:2] == [
        "device 7000 created",
        "ICP mv5000 created (100.100.100.71:5060)",
    ]
    assert all(e.actor == "system" for e in audit)
