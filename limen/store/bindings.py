"""Registration bindings in the store: what the gateway writes behind and reads on start.

The gateway keeps bindings in memory (the hot path) and hands batches of changes to
:meth:`BindingRepository.apply` from a worker thread; on start it reads the live ones
with :meth:`BindingRepository.live`. Times are wall-clock (UTC).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from limen.store import models as m
from limen.store.repository import Store


@dataclass(frozen=True, slots=True)
class StoredBinding:
    device_guid: str
    aor: str
    contact: str
    transport: str
    remote_host: str
    remote_port: int
    local_host: str
    local_port: int
    nat: bool
    call_id: str
    cseq: int
    expires_at: dt.datetime


class BindingRepository:
    """Upserts, deletes and reads of ``registration_bindings`` (one row per device)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def apply(self, upserts: Sequence[StoredBinding], deletes: Iterable[str]) -> None:
        """One transaction: delete ``deletes`` and the rows of ``upserts``, insert
        ``upserts`` (portable across SQLite and PostgreSQL, no dialect upsert)."""
        gone = set(deletes) | {b.device_guid for b in upserts}
        if not gone:
            return
        now = dt.datetime.now(dt.UTC)
        with self._store.sessions() as s, s.begin():
            guids = sorted(gone)
            for start in range(0, len(guids), 500):
                chunk = guids[start : start + 500]
                s.execute(
                    delete(m.RegistrationBinding).where(
                        m.RegistrationBinding.device_guid.in_(chunk)
                    )
                )
            if upserts:
                # One executemany of plain rows (no ORM objects): the write-behind runs
                # on a thread of the gateway's process, so its CPU competes for the GIL
                # with the event loop; at thousands of REGISTERs per second the ORM's
                # unit of work was a visible share of it.
                s.execute(
                    insert(m.RegistrationBinding),
                    [
                        {
                            "device_guid": b.device_guid,
                            "aor": b.aor,
                            "contact": b.contact,
                            "transport": b.transport,
                            "remote_host": b.remote_host,
                            "remote_port": b.remote_port,
                            "local_host": b.local_host,
                            "local_port": b.local_port,
                            "nat": b.nat,
                            "call_id": b.call_id,
                            "cseq": b.cseq,
                            "expires_at": b.expires_at,
                            "updated_at": now,
                        }
                        for b in upserts
                    ],
                )

    def live(self, now: dt.datetime) -> list[StoredBinding]:
        """Bindings not expired at ``now``; expired rows are deleted on the way."""
        with self._store.sessions() as s, s.begin():
            s.execute(delete(m.RegistrationBinding).where(m.RegistrationBinding.expires_at <= now))
            rows = s.scalars(select(m.RegistrationBinding)).all()
            return [
                StoredBinding(
                    device_guid=r.device_guid,
                    aor=r.aor,
                    contact=r.contact,
                    transport=r.transport,
                    remote_host=r.remote_host,
                    remote_port=r.remote_port,
                    local_host=r.local_host,
                    local_port=r.local_port,
                    nat=r.nat,
                    call_id=r.call_id,
                    cseq=r.cseq,
                    expires_at=r.expires_at,
                )
                for r in rows
            ]

    def count(self) -> int:
        with self._store.sessions() as s:
            return len(s.scalars(select(m.RegistrationBinding.device_guid)).all())
