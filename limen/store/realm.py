"""The set-side digest realm: one stable value per deployment (issue 11).

Phones cache the realm of the challenges they answered (RFC 3261 §22.1, RFC 7616 §3.3);
a realm that changes under them sends every phone to 403 until it is reconfigured. So the
realm is never derived silently: ``limen init`` writes it into the configuration file,
and the store records the realm in use the first time it starts (``limen_meta``), so a
deployment whose file predates the setting keeps the realm it used before (its
``public_fqdn``, else "limen") even when ``public_fqdn`` changes later.
"""

from __future__ import annotations

import logging

from sqlalchemy import insert, select, update

from limen.config import Settings
from limen.store import Store, models

log = logging.getLogger(__name__)

REALM_KEY = "sip_realm"


def recorded_realm(store: Store) -> str | None:
    with store.engine.connect() as conn:
        value = conn.scalar(select(models.Meta.value).where(models.Meta.key == REALM_KEY))
    return None if value is None else str(value)


def resolve_realm(store: Store, settings: Settings) -> str:
    """The realm to challenge with: ``[sip] realm`` when the file sets it (recorded, so a
    later file without it keeps it), else the recorded one, else the pre-issue-11 rule
    (``public_fqdn`` or "limen"), recorded on this first start."""
    explicit = settings.sip.realm.strip()
    recorded = recorded_realm(store)
    realm = explicit or recorded or settings.public_fqdn.strip() or "limen"
    if realm != recorded:
        with store.engine.begin() as conn:
            if recorded is None:
                conn.execute(insert(models.Meta).values(key=REALM_KEY, value=realm))
            else:
                conn.execute(
                    update(models.Meta).where(models.Meta.key == REALM_KEY).values(value=realm)
                )
        if recorded is not None:
            log.warning(
                "digest realm changed from %r to %r ([sip] realm): phones that cached the "
                "old realm get 403 until they are reconfigured",
                recorded,
                realm,
            )
    return realm


def with_realm(settings: Settings, realm: str) -> Settings:
    return settings.model_copy(update={"sip": settings.sip.model_copy(update={"realm": realm})})
