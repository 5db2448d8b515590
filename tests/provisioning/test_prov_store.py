"""The ICP flag "Limen serves configs" (migration 0002) in the store and the admin API."""

from __future__ import annotations

import httpx
from prov_support import HASH
from sqlalchemy import text

from limen.store import Store
from limen.store.db import current_revision, downgrade, upgrade
from limen.store.schemas import IcpCreate, IcpUpdate


def test_flag_defaults_to_proxying_and_can_be_set(store: Store) -> None:
    created = store.icps.create(IcpCreate(name="mv5000", address="192.0.2.1", hashes=[HASH]))
    assert created.serves_configs is False
    updated = store.icps.update("mv5000", IcpUpdate(serves_configs=True))
    assert updated.serves_configs is True
    assert store.icps.get("mv5000").serves_configs is True
    assert store.icps.update("mv5000", IcpUpdate(description="x")).serves_configs is True


def test_migration_keeps_existing_icps_proxied(store: Store) -> None:
    downgrade(store.engine, "0001")
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO icps (guid, name, address, port, transport, type, "
                "sip_capabilities, link_enabled, xml_listen_port, xml_destination_port, tls, "
                "domain, description, created_at, updated_at) VALUES ('g', 'old', "
                "'192.0.2.1', 5060, 'tcp', 'MiVoice 5000', 'udp,tcp,tls', 1, 4445, 4445, 1, "
                "'', '', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
            )
        )
    upgrade(store.engine, "0002")
    assert current_revision(store.engine) == "0002"
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT serves_configs FROM icps")).scalar() in (0, False)
    upgrade(store.engine)
    assert store.icps.get("old").serves_configs is False


async def test_api_exposes_and_changes_the_flag(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await http.post(
        "/mslrest/mbg/v1/icps/",
        headers=admin,
        json={"name": "mv5000", "address": "192.0.2.1", "hashes": [HASH]},
    )
    assert created.status_code == 201 and created.json()["serves_configs"] is False
    changed = await http.put(
        "/mslrest/mbg/v1/icps/mv5000/", headers=admin, json={"serves_configs": True}
    )
    assert changed.status_code == 200 and changed.json()["serves_configs"] is True
