"""The store: repositories over one SQLAlchemy engine, one unit of work per call.

Every method opens its own session and returns plain pydantic records (never ORM
objects), so the API's worker threads and the CLI use it the same way. Every change
writes an audit event in the same transaction and, once committed, is announced through
``Store.on_change`` (the core connects it to its event bus, so the running gateway sees
changes without a restart).
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import itertools
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from limen.store import models as m
from limen.store.db import utcnow
from limen.store.errors import Conflict, Invalid, NotFound, PreconditionFailed
from limen.store.options import OPTION_ALIASES, GlobalOptions, canonical_option
from limen.store.schemas import (
    TOKEN_KINDS,
    TOKEN_STATUSES,
    AdminRecord,
    AdminTokenRecord,
    ConsumerCreate,
    ConsumerRecord,
    DeviceCreate,
    DeviceCredentials,
    DeviceRecord,
    DeviceUpdate,
    EventRecord,
    IcpCreate,
    IcpRecord,
    IcpUpdate,
    OverrideCreate,
    OverrideRecord,
    Permission,
    TokenRecord,
    check_page,
    is_guid,
    looks_like_mac,
    normalise_mac,
)
from limen.store.secrets import (
    SecretBox,
    hash_password,
    random_hex,
    random_verifier,
    token_digest,
    verify_password,
)


@dataclass(frozen=True, slots=True)
class Change:
    """A committed configuration change: ``resource`` (icp, device, options, override,
    consumer, token, admin), ``action`` (created, updated, deleted, ...), ``key``."""

    resource: str
    action: str
    key: str


def _chunks(items: Iterable[DeviceCreate], size: int) -> Iterator[list[DeviceCreate]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


_MAC_STRIP_CHARS = re.compile(r"[:\-. ]")


def _guid() -> str:
    return str(uuid.uuid4())


class _Repo:
    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def _box(self) -> SecretBox:
        return self._store.box

    def _session(self) -> Session:
        return self._store.sessions()

    @contextmanager
    def _tx(self) -> Iterator[tuple[Session, list[Change]]]:
        """A write transaction; changes appended to the list are announced after commit.

        Read-modify-write must not interleave (issue 14: concurrent PUTs mixed fields of
        different requests). On SQLite the transaction starts with ``BEGIN IMMEDIATE``,
        which takes the database's write lock before the first read, so writers run one
        after another and each reads what the previous one committed. On PostgreSQL the
        rows a change depends on are read with ``SELECT ... FOR UPDATE`` (``_find(...,
        lock=True)``), which makes a second writer of the same row wait for the first
        one's commit and then read the committed row (READ COMMITTED re-reads it).
        """
        changes: list[Change] = []
        with self._session() as session:
            try:
                with session.begin():
                    if self._store.engine.dialect.name == "sqlite":
                        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                    yield session, changes
                    if changes:
                        _bump_config_version(session)
            except IntegrityError as exc:
                raise Conflict(_integrity_reason(exc)) from exc
        if changes:
            self._store.own_commits += 1  # counted after the commit (see config_version)
        for change in changes:
            self._store.announce(change)

    @staticmethod
    def _audit(session: Session, source: str, actor: str, message: str) -> None:
        session.add(
            m.Event(
                guid=_guid(),
                kind="audit",
                severity="info",
                source=source,
                actor=actor,
                message=message,
                cleared=True,
            )
        )


CONFIG_VERSION_KEY = "config_version"


def _bump_config_version(session: Session) -> None:
    """Count committed configuration changes in the store itself, so another process (a
    running ``limen serve`` while an operator uses the CLI) sees that something changed:
    the change bus only reaches subscribers in the process that made the change."""
    row = session.get(m.Meta, CONFIG_VERSION_KEY)
    if row is None:
        session.add(m.Meta(key=CONFIG_VERSION_KEY, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def row_etag(row: Any, *extra: object) -> str:
    """A strong entity tag (RFC 9110 §8.8.3) for a stored object: a digest of every column
    of its row (secrets in their encrypted form, ``updated_at`` included) plus ``extra``
    (an ICP's hashes). Any committed change gives a new tag, so ``If-Match`` detects
    that an object changed since the client read it, without a version column."""
    digest = hashlib.sha256()
    for column in row.__table__.columns:
        digest.update(f"{column.key}={getattr(row, column.key)!r}\x1f".encode())
    for item in extra:
        digest.update(f"{item!r}\x1f".encode())
    return f'"{digest.hexdigest()[:32]}"'


def check_if_match(if_match: str | None, etag: str, what: str) -> None:
    """RFC 9110 §13.1.1: ``If-Match`` holds ``*`` or a list of entity tags compared with
    the strong function (a weak tag never matches). A mismatch is
    :class:`~limen.store.errors.PreconditionFailed` (HTTP 412)."""
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",") if t.strip()]
    if "*" in tags or etag in tags:
        return
    raise PreconditionFailed(
        f"{what} changed since it was read (If-Match {if_match.strip()!r}, now {etag}): "
        "read it again and retry"
    )


def _integrity_reason(exc: IntegrityError) -> str:
    text = str(exc.orig).lower()
    for column in ("setside_username", "clientid", "name", "consumer_key", "hash", "username"):
        if column in text:
            return f"{column} already in use"
    return "conflicts with an existing object"


# -- ICPs ------------------------------------------------------------------------------


class IcpRepository(_Repo):
    def _find(self, session: Session, key: str, *, lock: bool = False) -> m.Icp:
        query = select(m.Icp).options(selectinload(m.Icp.hashes))
        if lock:
            query = query.with_for_update(of=m.Icp)
        row = None
        if is_guid(key):
            row = session.scalar(query.where(m.Icp.guid == key.lower()))
        if row is None:
            row = session.scalar(query.where(m.Icp.name == key))
        if row is None:
            raise NotFound("ICP", key)
        return row

    def _record(self, session: Session, icp: m.Icp) -> IcpRecord:
        count = session.scalar(
            select(func.count()).select_from(m.SipDevice).where(m.SipDevice.icp_id == icp.id)
        )
        return IcpRecord(
            guid=icp.guid,
            name=icp.name,
            address=icp.address,
            port=icp.port,
            transport=icp.transport,
            type=icp.type,
            sip_capabilities=[c for c in icp.sip_capabilities.split(",") if c],
            link_enabled=icp.link_enabled,
            xml_listen_port=icp.xml_listen_port,
            xml_destination_port=icp.xml_destination_port,
            tls=icp.tls,
            serves_configs=icp.serves_configs,
            hashes=[h.hash for h in icp.hashes],
            domain=icp.domain,
            description=icp.description,
            device_count=count or 0,
            tls_verify=icp.tls_verify,
            tls_ca_file=icp.tls_ca_file,
            tls_pin_sha256=icp.tls_pin_sha256,
            tls_server_name=icp.tls_server_name,
            tls_client_cert=icp.tls_client_cert,
            tls_client_key=icp.tls_client_key,
            options_interval=icp.options_interval,
        )

    def list(self) -> builtins.list[IcpRecord]:
        with self._session() as s:
            rows = s.scalars(
                select(m.Icp).options(selectinload(m.Icp.hashes)).order_by(m.Icp.name)
            ).all()
            return [self._record(s, r) for r in rows]

    def count(self) -> int:
        with self._session() as s:
            return s.scalar(select(func.count()).select_from(m.Icp)) or 0

    def get(self, key: str) -> IcpRecord:
        with self._session() as s:
            return self._record(s, self._find(s, key))

    @staticmethod
    def _etag(icp: m.Icp) -> str:
        return row_etag(icp, [h.hash for h in icp.hashes])

    def get_tagged(self, key: str) -> tuple[IcpRecord, str]:
        """The ICP and its entity tag, read together."""
        with self._session() as s:
            icp = self._find(s, key)
            return self._record(s, icp), self._etag(icp)

    def by_hash(self, provisioning_hash: str) -> IcpRecord | None:
        """The ICP whose provisioning hash this is (for the HTTPS provisioning proxy)."""
        with self._session() as s:
            row = s.scalar(select(m.IcpHash).where(m.IcpHash.hash == provisioning_hash.lower()))
            return None if row is None else self._record(s, self._find(s, row.icp.guid))

    def _check_hashes(self, s: Session, hashes: Sequence[str], icp_id: int | None) -> None:
        if not hashes:
            return
        taken = s.scalars(
            select(m.IcpHash).where(m.IcpHash.hash.in_(list(hashes)), m.IcpHash.icp_id != icp_id)
            if icp_id is not None
            else select(m.IcpHash).where(m.IcpHash.hash.in_(list(hashes)))
        ).all()
        if taken:
            raise Conflict(f"hash {taken[0].hash} already belongs to another ICP")

    def create(self, data: IcpCreate, actor: str = "system") -> IcpRecord:
        with self._tx() as (s, changes):
            if s.scalar(select(m.Icp.id).where(m.Icp.name == data.name)) is not None:
                raise Conflict(f"an ICP named {data.name!r} already exists")
            self._check_hashes(s, data.hashes, None)
            icp = m.Icp(
                guid=_guid(),
                **data.model_dump(exclude={"hashes", "sip_capabilities"}),
                sip_capabilities=",".join(data.sip_capabilities),
                hashes=[m.IcpHash(hash=h) for h in data.hashes],
            )
            s.add(icp)
            s.flush()
            self._audit(s, "icp", actor, f"ICP {icp.name} created ({icp.address}:{icp.port})")
            changes.append(Change("icp", "created", icp.guid))
            record = self._record(s, icp)
        return record

    def update(self, key: str, data: IcpUpdate, actor: str = "system") -> IcpRecord:
        return self.update_tagged(key, data, actor)[0]

    def update_tagged(
        self, key: str, data: IcpUpdate, actor: str = "system", if_match: str | None = None
    ) -> tuple[IcpRecord, str]:
        """Change an ICP atomically (row locked, see ``_tx``); with ``if_match``, only if
        its entity tag still matches. Returns the new record and tag."""
        values = data.model_dump(exclude_unset=True)
        with self._tx() as (s, changes):
            icp = self._find(s, key, lock=True)
            check_if_match(if_match, self._etag(icp), f"ICP {icp.name}")
            new_name = values.get("name", icp.name)
            if new_name != icp.name and s.scalar(select(m.Icp.id).where(m.Icp.name == new_name)):
                raise Conflict(f"an ICP named {values['name']!r} already exists")
            if "hashes" in values:
                self._check_hashes(s, values["hashes"], icp.id)
                icp.hashes.clear()
                s.flush()
                icp.hashes.extend(m.IcpHash(hash=h) for h in values.pop("hashes"))
            if "sip_capabilities" in values:
                values["sip_capabilities"] = ",".join(values["sip_capabilities"])
            for name, value in values.items():
                setattr(icp, name, value)
            icp.updated_at = utcnow()
            s.flush()
            fields = ", ".join(sorted(data.model_fields_set)) or "nothing"
            self._audit(s, "icp", actor, f"ICP {icp.name} updated ({fields})")
            changes.append(Change("icp", "updated", icp.guid))
            record = self._record(s, icp)
            tag = self._etag(icp)
        return record, tag

    def delete(
        self,
        key: str,
        actor: str = "system",
        *,
        with_devices: bool = False,
        if_match: str | None = None,
    ) -> int:
        """Delete an ICP. It owns its devices (as in MBG): when it has some, the caller
        must confirm with ``with_devices=True``. Returns the number of devices deleted."""
        with self._tx() as (s, changes):
            icp = self._find(s, key, lock=True)
            check_if_match(if_match, self._etag(icp), f"ICP {icp.name}")
            devices = s.scalars(select(m.SipDevice).where(m.SipDevice.icp_id == icp.id)).all()
            if devices and not with_devices:
                raise Conflict(
                    f"ICP {icp.name} has {len(devices)} device(s); confirm deleting them too"
                )
            for device in devices:
                changes.append(Change("device", "deleted", device.guid))
            s.delete(icp)
            self._audit(s, "icp", actor, f"ICP {icp.name} deleted with {len(devices)} device(s)")
            changes.append(Change("icp", "deleted", icp.guid))
        return len(devices)


# -- SIP devices -----------------------------------------------------------------------

_DEVICE_OPTION_FIELDS = (
    "heartbeat_interval",
    "options_hb",
    "prack_support",
    "set_side_rtp_security",
    "setside_codec",
    "rtpframesize",
    "max_calls",
    "max_call_attempts",
)


class DeviceRepository(_Repo):
    def _query(self) -> Any:
        return select(m.SipDevice).options(selectinload(m.SipDevice.icp))

    def _find(self, session: Session, key: str, *, lock: bool = False) -> m.SipDevice:
        """Look a device up by guid, set-side username, then MAC (``clientid``)."""
        query = self._query()
        if lock:
            query = query.with_for_update(of=m.SipDevice)
        row = None
        if is_guid(key):
            row = session.scalar(query.where(m.SipDevice.guid == key.lower()))
        if row is None:
            row = session.scalar(query.where(m.SipDevice.setside_username == key))
        if row is None and looks_like_mac(key):
            row = session.scalar(query.where(m.SipDevice.clientid == normalise_mac(key)))
        if row is None:
            raise NotFound("device", key)
        return row

    @staticmethod
    def _record(row: m.SipDevice) -> DeviceRecord:
        return DeviceRecord(
            guid=row.guid,
            setside_username=row.setside_username,
            icpside_username=row.icpside_username,
            icp=row.icp.name,
            icp_guid=row.icp.guid,
            clientid=row.clientid,
            description=row.description,
            challenge_methods=_methods_of(row.challenge_methods),
            options_hb=row.options_hb,
            heartbeat_interval=row.heartbeat_interval,
            prack_support=row.prack_support,
            set_side_rtp_security=row.set_side_rtp_security,
            setside_codec=row.setside_codec,
            rtpframesize=row.rtpframesize,
            max_calls=row.max_calls,
            max_call_attempts=row.max_call_attempts,
        )

    def _credentials(self, row: m.SipDevice) -> DeviceCredentials:
        return DeviceCredentials(
            guid=row.guid,
            setside_username=row.setside_username,
            setside_password=self._box.decrypt(row.setside_password_enc),
            icpside_username=row.icpside_username,
            icpside_password=self._box.decrypt(row.icpside_password_enc),
            icp=row.icp.name,
            clientid=row.clientid,
            challenge_methods=_methods_of(row.challenge_methods),
            options_hb=row.options_hb,
            heartbeat_interval=row.heartbeat_interval,
            max_calls=row.max_calls,
            max_call_attempts=row.max_call_attempts,
            prack_support=row.prack_support,
            set_side_rtp_security=row.set_side_rtp_security,
            setside_codec=row.setside_codec,
            rtpframesize=row.rtpframesize,
            icp_guid=row.icp.guid,
        )

    # The columns the gateway's cache reads, in ``_credentials_of``'s order: a plain
    # SELECT (no ORM objects, streamed) keeps the load's peak memory and CPU low.
    _CREDENTIAL_COLUMNS = (
        m.SipDevice.guid,
        m.SipDevice.setside_username,
        m.SipDevice.setside_password_enc,
        m.SipDevice.icpside_username,
        m.SipDevice.icpside_password_enc,
        m.Icp.name,
        m.SipDevice.clientid,
        m.SipDevice.challenge_methods,
        m.SipDevice.options_hb,
        m.SipDevice.heartbeat_interval,
        m.SipDevice.max_calls,
        m.SipDevice.max_call_attempts,
        m.SipDevice.prack_support,
        m.SipDevice.set_side_rtp_security,
        m.SipDevice.setside_codec,
        m.SipDevice.rtpframesize,
        m.Icp.guid,
    )

    def _credentials_of(self, row: Any, shared: dict[str, str]) -> DeviceCredentials:
        # ``shared`` interns the strings many devices repeat (ICP names and guids, option
        # values): one object each instead of one per device.
        def one(value: str | None) -> str | None:
            return None if value is None else shared.setdefault(value, value)

        return DeviceCredentials(
            guid=row[0],
            setside_username=row[1],
            setside_password=self._box.decrypt(row[2]),
            # Usually the same text as the set-side username: share the object then.
            icpside_username=row[1] if row[3] == row[1] else row[3],
            icpside_password=self._box.decrypt(row[4]),
            icp=shared.setdefault(row[5], row[5]),
            clientid=row[6],
            challenge_methods=_methods_of(row[7]),
            options_hb=one(row[8]),
            heartbeat_interval=row[9],
            max_calls=row[10],
            max_call_attempts=row[11],
            prack_support=row[12],
            set_side_rtp_security=one(row[13]),
            setside_codec=one(row[14]),
            rtpframesize=one(row[15]),
            icp_guid=shared.setdefault(row[16], row[16]),
        )

    def iter_credentials(
        self,
        guids: Iterable[str] | None = None,
        *,
        changed_since: dt.datetime | None = None,
        ordered: bool = False,
    ) -> Iterator[DeviceCredentials]:
        """Credentials of every device (or of ``guids``, or of those changed at or after
        ``changed_since``), streamed in batches: what the gateway's Directory caches."""
        shared: dict[str, str] = {}
        query = select(*self._CREDENTIAL_COLUMNS).join(m.Icp, m.SipDevice.icp_id == m.Icp.id)
        if changed_since is not None:
            query = query.where(m.SipDevice.updated_at >= changed_since)
        if ordered:
            query = query.order_by(m.SipDevice.setside_username)
        with self._session() as s:
            if guids is None:
                result = s.execute(query.execution_options(yield_per=1000))
                for row in result:
                    yield self._credentials_of(row, shared)
                return
            wanted = [g.lower() for g in guids]
            for i in range(0, len(wanted), 500):
                part = query.where(m.SipDevice.guid.in_(wanted[i : i + 500]))
                for row in s.execute(part):
                    yield self._credentials_of(row, shared)

    def guids(self) -> set[str]:
        """The guid of every device (a cheap way to see which ones another process deleted)."""
        with self._session() as s:
            return set(s.scalars(select(m.SipDevice.guid)))

    def list(
        self, *, icp: str | None = None, offset: int = 0, limit: int | None = None
    ) -> builtins.list[DeviceRecord]:
        check_page(offset, limit)
        with self._session() as s:
            query = self._query().order_by(m.SipDevice.setside_username)
            if icp is not None:
                query = query.where(
                    m.SipDevice.icp_id == IcpRepository(self._store)._find(s, icp).id
                )
            query = query.offset(offset)
            if limit is not None:
                query = query.limit(limit)
            return [self._record(r) for r in s.scalars(query).all()]

    SORTS = ("setside_username", "clientid", "description", "icp", "icpside_username")

    def search(
        self,
        text: str = "",
        *,
        sort: str = "setside_username",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[builtins.list[DeviceRecord], int]:
        """One page of devices whose set-side user, MAC or description contains ``text``
        (case-insensitive), sorted by ``sort`` (one of :attr:`SORTS`), and the number of
        devices that match: the console's device table, done in the database."""
        check_page(offset, limit)
        if sort not in self.SORTS:
            raise Invalid("sort", f"one of {', '.join(self.SORTS)}")
        with self._session() as s:
            where = []
            text = text.strip()
            if text:
                like = (
                    "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                )
                conditions = [
                    m.SipDevice.setside_username.ilike(like, escape="\\"),
                    m.SipDevice.description.ilike(like, escape="\\"),
                ]
                mac = _MAC_STRIP_CHARS.sub("", text).upper()
                if mac and all(c in "0123456789ABCDEF" for c in mac):
                    conditions.append(m.SipDevice.clientid.like(f"%{mac}%"))
                where.append(or_(*conditions))
            total = s.scalar(select(func.count()).select_from(m.SipDevice).where(*where)) or 0
            column: Any = m.Icp.name if sort == "icp" else getattr(m.SipDevice, sort)
            query = self._query().where(*where)
            if sort == "icp":
                query = query.join(m.Icp, m.SipDevice.icp_id == m.Icp.id)
            order = column.desc() if descending else column.asc()
            query = query.order_by(order, m.SipDevice.id).offset(offset).limit(limit)
            return [self._record(r) for r in s.scalars(query).all()], total

    def count(self, *, icp: str | None = None) -> int:
        with self._session() as s:
            query = select(func.count()).select_from(m.SipDevice)
            if icp is not None:
                query = query.where(
                    m.SipDevice.icp_id == IcpRepository(self._store)._find(s, icp).id
                )
            return s.scalar(query) or 0

    def get(self, key: str) -> DeviceRecord:
        with self._session() as s:
            return self._record(self._find(s, key))

    def get_tagged(self, key: str) -> tuple[DeviceRecord, str]:
        """The device and its entity tag, read together."""
        with self._session() as s:
            row = self._find(s, key)
            return self._record(row), row_etag(row)

    def credentials(self, key: str) -> DeviceCredentials:
        """The device's passwords in clear, for SIP digest (guid, username or MAC)."""
        with self._session() as s:
            return self._credentials(self._find(s, key))

    def all_credentials(self) -> builtins.list[DeviceCredentials]:
        return builtins.list(self.iter_credentials(ordered=True))

    def _check_unique(
        self, s: Session, username: str | None, clientid: str | None, own_id: int | None
    ) -> None:
        if username is not None:
            other = s.scalar(select(m.SipDevice.id).where(m.SipDevice.setside_username == username))
            if other is not None and other != own_id:
                raise Conflict(f"setside_username {username!r} is already in use")
        if clientid is not None:
            other = s.scalar(select(m.SipDevice.id).where(m.SipDevice.clientid == clientid))
            if other is not None and other != own_id:
                raise Conflict(f"clientid {clientid} is already in use")

    def _new_row(self, s: Session, data: DeviceCreate, icps: dict[str, m.Icp]) -> m.SipDevice:
        icp = icps.get(data.icp)
        if icp is None:
            try:
                icp = IcpRepository(self._store)._find(s, data.icp)
            except NotFound as exc:
                raise Invalid("icp", f"no ICP {data.icp!r}") from exc
            icps[data.icp] = icp
        return m.SipDevice(
            guid=_guid(),
            setside_username=data.setside_username,
            setside_password_enc=self._box.encrypt(data.setside_password),
            icpside_username=data.icpside_username or data.setside_username,
            icpside_password_enc=self._box.encrypt(
                data.icpside_password
                if data.icpside_password is not None
                else data.setside_password
            ),
            icp=icp,
            clientid=data.clientid,
            description=data.description,
            challenge_methods=",".join(data.challenge_methods or []) or None,
            **{name: getattr(data, name) for name in _DEVICE_OPTION_FIELDS},
        )

    def create(self, data: DeviceCreate, actor: str = "system") -> DeviceRecord:
        with self._tx() as (s, changes):
            self._check_unique(s, data.setside_username, data.clientid, None)
            row = self._new_row(s, data, {})
            s.add(row)
            s.flush()
            self._audit(s, "device", actor, f"device {row.setside_username} created")
            changes.append(Change("device", "created", row.guid))
            record = self._record(row)
        return record

    def create_many(
        self,
        items: Iterable[DeviceCreate],
        actor: str = "system",
        progress: Callable[[int], None] | None = None,
        batch: int = 500,
    ) -> int:
        """Create many devices in one transaction: all or nothing. Returns the count."""
        created = 0
        with self._tx() as (s, changes):
            icps: dict[str, m.Icp] = {}
            for chunk in _chunks(items, batch):
                for data in chunk:
                    self._check_unique(s, data.setside_username, data.clientid, None)
                    row = self._new_row(s, data, icps)
                    s.add(row)
                    changes.append(Change("device", "created", row.guid))
                s.flush()
                created += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            self._audit(s, "device", actor, f"{created} device(s) imported")
        return created

    def update(self, key: str, data: DeviceUpdate, actor: str = "system") -> DeviceRecord:
        return self.update_tagged(key, data, actor)[0]

    def update_tagged(
        self, key: str, data: DeviceUpdate, actor: str = "system", if_match: str | None = None
    ) -> tuple[DeviceRecord, str]:
        """Change a device atomically (row locked, see ``_tx``); with ``if_match``, only if
        its entity tag still matches. Returns the new record and tag."""
        values = data.model_dump(exclude_unset=True)
        with self._tx() as (s, changes):
            row = self._find(s, key, lock=True)
            check_if_match(if_match, row_etag(row), f"device {row.setside_username}")
            self._check_unique(s, values.get("setside_username"), values.get("clientid"), row.id)
            if "icp" in values:
                try:
                    row.icp = IcpRepository(self._store)._find(s, values.pop("icp"))
                except NotFound as exc:
                    raise Invalid("icp", f"no ICP {data.icp!r}") from exc
            for name in ("setside_password", "icpside_password"):
                if name in values:
                    setattr(row, f"{name}_enc", self._box.encrypt(values.pop(name)))
            if "challenge_methods" in values:
                methods = values.pop("challenge_methods")
                row.challenge_methods = ",".join(methods) if methods else None
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            s.flush()
            fields = ", ".join(sorted(data.model_fields_set)) or "nothing"
            self._audit(s, "device", actor, f"device {row.setside_username} updated ({fields})")
            changes.append(Change("device", "updated", row.guid))
            record = self._record(row)
            tag = row_etag(row)
        return record, tag

    def delete(self, key: str, actor: str = "system", if_match: str | None = None) -> None:
        with self._tx() as (s, changes):
            row = self._find(s, key, lock=True)
            check_if_match(if_match, row_etag(row), f"device {row.setside_username}")
            s.delete(row)
            self._audit(s, "device", actor, f"device {row.setside_username} deleted")
            changes.append(Change("device", "deleted", row.guid))

    def existing(
        self, usernames: Iterable[str], clientids: Iterable[str]
    ) -> tuple[set[str], set[str]]:
        """Which of these set-side usernames and MACs are already taken (for CSV checks)."""
        users, macs = list(set(usernames)), list(set(clientids))
        with self._session() as s:
            taken_users: set[str] = set()
            taken_macs: set[str] = set()
            for i in range(0, len(users), 500):
                taken_users.update(
                    s.scalars(
                        select(m.SipDevice.setside_username).where(
                            m.SipDevice.setside_username.in_(users[i : i + 500])
                        )
                    )
                )
            for i in range(0, len(macs), 500):
                taken_macs.update(
                    c
                    for c in s.scalars(
                        select(m.SipDevice.clientid).where(
                            m.SipDevice.clientid.in_(macs[i : i + 500])
                        )
                    )
                    if c
                )
        return taken_users, taken_macs


# -- global options ----------------------------------------------------------------------


# PostgreSQL advisory lock key taken by every change of the global options: they are
# validated as a whole (srtp_port_min < srtp_port_max), so two changes of different
# options must not both read the old set (issue 14, lost updates).
_OPTIONS_LOCK = 0x4C494D454E  # "LIMEN"


class OptionsRepository(_Repo):
    @staticmethod
    def _read(s: Session) -> GlobalOptions:
        stored = {row.name: row.value for row in s.scalars(select(m.GlobalOption))}
        # Rows written under a pre-issue-11 name (OPTION_ALIASES) still count; a row under
        # the current name wins over one under the old.
        known = {
            k: v
            for k, v in stored.items()
            if k in GlobalOptions.model_fields or k in OPTION_ALIASES
        }
        return GlobalOptions.model_validate(known)

    def get(self) -> GlobalOptions:
        with self._session() as s:
            return self._read(s)

    def _lock(self, s: Session) -> None:
        # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE, _tx).
        if self._store.engine.dialect.name == "postgresql":
            s.execute(select(func.pg_advisory_xact_lock(_OPTIONS_LOCK)))

    def set(
        self, values: dict[str, Any], actor: str = "system", *, strict: bool = False
    ) -> GlobalOptions:
        """Change some options; the result is validated as a whole before it is saved.
        ``strict``: JSON input, no coercion (true is not 1, "30" is not 30)."""
        values = {canonical_option(k): v for k, v in values.items()}
        unknown = sorted(set(values) - set(GlobalOptions.model_fields))
        if unknown:
            raise Invalid(unknown[0], f"unknown option (known: {', '.join(GlobalOptions.names())})")
        with self._tx() as (s, changes):
            self._lock(s)
            merged = self._read(s).model_dump() | values
            options = GlobalOptions.model_validate(merged, strict=strict)
            dumped = options.model_dump(mode="json")
            renamed = [old for old, new in OPTION_ALIASES.items() if new in values]
            if renamed:  # the value now lives under its current name only
                s.execute(delete(m.GlobalOption).where(m.GlobalOption.name.in_(renamed)))
            for name in values:
                row = s.get(m.GlobalOption, name)
                if row is None:
                    s.add(m.GlobalOption(name=name, value=dumped[name]))
                else:
                    row.value = dumped[name]
                changes.append(Change("options", "updated", name))
            shown = ", ".join(f"{n}={dumped[n]!r}" for n in sorted(values))
            self._audit(s, "options", actor, f"global options set: {shown}")
        return options

    def reset(self, names: Iterable[str], actor: str = "system") -> GlobalOptions:
        names = [canonical_option(n) for n in names]
        for name in names:
            if name not in GlobalOptions.model_fields:
                raise Invalid(name, "unknown option")
        old_names = [o for o, n in OPTION_ALIASES.items() if n in names]
        with self._tx() as (s, changes):
            self._lock(s)
            s.execute(delete(m.GlobalOption).where(m.GlobalOption.name.in_(names + old_names)))
            for name in names:
                changes.append(Change("options", "updated", name))
            self._audit(s, "options", actor, f"global options reset: {', '.join(names)}")
        return self.get()


# -- overrides ---------------------------------------------------------------------------


class OverrideRepository(_Repo):
    @staticmethod
    def _record(row: m.Override) -> OverrideRecord:
        return OverrideRecord(
            guid=row.guid,
            file=row.file,
            sort_order=row.sort_order,
            section=row.section,
            parameter=row.parameter,
            content=row.content,
        )

    def list(self, file: str | None = None) -> builtins.list[OverrideRecord]:
        with self._session() as s:
            query = select(m.Override).order_by(
                m.Override.file, m.Override.sort_order, m.Override.id
            )
            if file is not None:
                query = query.where(m.Override.file == file)
            return [self._record(r) for r in s.scalars(query)]

    def add(self, data: OverrideCreate, actor: str = "system") -> OverrideRecord:
        with self._tx() as (s, changes):
            row = m.Override(guid=_guid(), **data.model_dump())
            s.add(row)
            s.flush()
            self._audit(
                s, "override", actor, f"override {row.file} [{row.section}] {row.parameter} added"
            )
            changes.append(Change("override", "created", row.guid))
            return self._record(row)

    def remove(self, guid: str, actor: str = "system") -> None:
        with self._tx() as (s, changes):
            row = s.scalar(select(m.Override).where(m.Override.guid == guid.lower()))
            if row is None:
                raise NotFound("override", guid)
            s.delete(row)
            self._audit(
                s, "override", actor, f"override {row.file} [{row.section}] {row.parameter} removed"
            )
            changes.append(Change("override", "deleted", row.guid))


# -- consumers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerAuth:
    """What request verification needs about a consumer."""

    name: str
    consumer_key: str
    active: bool
    secret: str
    rsa_public_key: str | None
    permissions: tuple[Permission, ...]


class ConsumerRepository(_Repo):
    def _find(self, s: Session, key: str, *, lock: bool = False) -> m.Consumer:
        query = select(m.Consumer).options(selectinload(m.Consumer.permissions))
        if lock:
            query = query.with_for_update(of=m.Consumer)
        row = s.scalar(query.where(m.Consumer.guid == key.lower())) if is_guid(key) else None
        if row is None:
            row = s.scalar(query.where(or_(m.Consumer.name == key, m.Consumer.consumer_key == key)))
        if row is None:
            raise NotFound("consumer", key)
        return row

    @staticmethod
    def _record(row: m.Consumer) -> ConsumerRecord:
        return ConsumerRecord(
            guid=row.guid,
            name=row.name,
            consumer_key=row.consumer_key,
            active=row.active,
            has_rsa_key=bool(row.rsa_public_key),
            permissions=[
                Permission.model_construct(path=p.path, read=p.read, write=p.write)
                for p in row.permissions
            ],
            created_at=row.created_at,
        )

    def list(self) -> builtins.list[ConsumerRecord]:
        with self._session() as s:
            query = select(m.Consumer).options(selectinload(m.Consumer.permissions))
            return [self._record(r) for r in s.scalars(query.order_by(m.Consumer.name))]

    def get(self, key: str) -> ConsumerRecord:
        with self._session() as s:
            return self._record(self._find(s, key))

    def create(self, data: ConsumerCreate, actor: str = "system") -> tuple[ConsumerRecord, str]:
        """Add a consumer; returns it with its shared secret (generated if not given)."""
        secret = data.shared_secret or random_hex(16)
        key = data.consumer_key or data.name
        with self._tx() as (s, changes):
            clash = s.scalar(
                select(m.Consumer.name).where(
                    or_(
                        m.Consumer.name.in_([data.name, key]),
                        m.Consumer.consumer_key.in_([data.name, key]),
                    )
                )
            )
            if clash is not None:
                raise Conflict(f"consumer name or id clashes with consumer {clash!r}")
            row = m.Consumer(
                guid=_guid(),
                name=data.name,
                consumer_key=key,
                secret_enc=self._box.encrypt(secret),
                rsa_public_key=data.rsa_public_key,
                active=data.active,
                permissions=[
                    m.ConsumerPermission(path=p.path, read=p.read, write=p.write)
                    for p in _merge_permissions(data.permissions)
                ],
            )
            s.add(row)
            s.flush()
            self._audit(s, "consumer", actor, f"consumer {row.name} created")
            changes.append(Change("consumer", "created", row.guid))
            record = self._record(row)
        return record, secret

    def update(
        self,
        key: str,
        *,
        active: bool | None = None,
        permissions: Sequence[Permission] | None = None,
        shared_secret: str | None = None,
        actor: str = "system",
    ) -> ConsumerRecord:
        with self._tx() as (s, changes):
            row = self._find(s, key, lock=True)
            if active is not None:
                row.active = active
            if shared_secret is not None:
                if len(shared_secret) < 8:
                    raise Invalid("shared_secret", "at least 8 characters")
                row.secret_enc = self._box.encrypt(shared_secret)
            if permissions is not None:
                row.permissions.clear()
                s.flush()
                row.permissions.extend(
                    m.ConsumerPermission(path=p.path, read=p.read, write=p.write)
                    for p in _merge_permissions(permissions)
                )
            s.flush()
            self._audit(s, "consumer", actor, f"consumer {row.name} updated")
            changes.append(Change("consumer", "updated", row.guid))
            record = self._record(row)
        return record

    def delete(self, key: str, actor: str = "system") -> None:
        with self._tx() as (s, changes):
            row = self._find(s, key)
            s.delete(row)
            self._audit(s, "consumer", actor, f"consumer {row.name} deleted with its tokens")
            changes.append(Change("consumer", "deleted", row.guid))

    def auth(self, consumer_key: str) -> ConsumerAuth | None:
        with self._session() as s:
            row = s.scalar(
                select(m.Consumer)
                .options(selectinload(m.Consumer.permissions))
                .where(m.Consumer.consumer_key == consumer_key)
            )
            if row is None:
                return None
            return ConsumerAuth(
                name=row.name,
                consumer_key=row.consumer_key,
                active=row.active,
                secret=self._box.decrypt(row.secret_enc),
                rsa_public_key=row.rsa_public_key,
                permissions=tuple(
                    Permission.model_construct(path=p.path, read=p.read, write=p.write)
                    for p in row.permissions
                ),
            )


def _merge_permissions(permissions: Iterable[Permission]) -> builtins.list[Permission]:
    merged: dict[str, Permission] = {}
    for p in permissions:
        old = merged.get(p.path)
        merged[p.path] = (
            p
            if old is None
            else Permission.model_construct(
                path=p.path, read=old.read or p.read, write=old.write or p.write
            )
        )
    return list(merged.values())


# -- OAuth tokens and nonces ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenState:
    """A token as seen by request verification: which consumer, kind, status, secret."""

    consumer_key: str
    kind: str
    status: str
    secret: str
    verifier: str | None
    expires_at: dt.datetime

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


class TokenRepository(_Repo):
    def _find(self, s: Session, token: str) -> m.OAuthToken:
        row = s.scalar(
            select(m.OAuthToken)
            .options(selectinload(m.OAuthToken.consumer))
            .where(m.OAuthToken.token == token)
        )
        if row is None:
            raise NotFound("token", token)
        return row

    @staticmethod
    def _record(row: m.OAuthToken, now: dt.datetime) -> TokenRecord:
        return TokenRecord(
            token=row.token,
            kind=row.kind,
            status=row.status,
            consumer=row.consumer.name,
            consumer_key=row.consumer.consumer_key,
            created_at=row.created_at,
            expires_at=row.expires_at,
            expired=now >= row.expires_at,
            decided_by=row.decided_by,
            renewed_at=row.renewed_at,
            verifier=row.verifier if row.status == "approved" else None,
        )

    def list(
        self, *, kind: str | None = None, status: str | None = None
    ) -> builtins.list[TokenRecord]:
        if kind is not None and kind not in TOKEN_KINDS:
            raise Invalid("kind", f"unknown token kind {kind!r} (one of {', '.join(TOKEN_KINDS)})")
        statuses = TOKEN_STATUSES.get(kind or "", ()) or tuple(
            itertools.chain.from_iterable(TOKEN_STATUSES.values())
        )
        if status is not None and status not in statuses:
            raise Invalid(
                "status", f"unknown token status {status!r} (one of {', '.join(statuses)})"
            )
        now = utcnow()
        with self._session() as s:
            query = select(m.OAuthToken).options(selectinload(m.OAuthToken.consumer))
            if kind is not None:
                query = query.where(m.OAuthToken.kind == kind)
            if status is not None:
                query = query.where(m.OAuthToken.status == status)
            rows = s.scalars(query.order_by(m.OAuthToken.created_at, m.OAuthToken.id))
            return [self._record(r, now) for r in rows]

    def get(self, token: str) -> TokenRecord:
        with self._session() as s:
            return self._record(self._find(s, token), utcnow())

    def state(self, token: str) -> TokenState | None:
        with self._session() as s:
            row = s.scalar(
                select(m.OAuthToken)
                .options(selectinload(m.OAuthToken.consumer))
                .where(m.OAuthToken.token == token)
            )
            if row is None:
                return None
            return TokenState(
                consumer_key=row.consumer.consumer_key,
                kind=row.kind,
                status=row.status,
                secret=self._box.decrypt(row.secret_enc),
                verifier=row.verifier,
                expires_at=row.expires_at,
            )

    def create_temporary(
        self, consumer_key: str, token: str, secret: str, callback: str, ttl: dt.timedelta
    ) -> TokenRecord:
        with self._tx() as (s, changes):
            consumer = s.scalar(select(m.Consumer).where(m.Consumer.consumer_key == consumer_key))
            if consumer is None:
                raise NotFound("consumer", consumer_key)
            row = m.OAuthToken(
                token=token,
                secret_enc=self._box.encrypt(secret),
                kind="temporary",
                status="pending",
                consumer=consumer,
                callback=callback,
                expires_at=utcnow() + ttl,
            )
            s.add(row)
            s.flush()
            self._audit(
                s, "token", consumer.name, f"temporary token requested by consumer {consumer.name}"
            )
            changes.append(Change("token", "created", token))
            return self._record(row, utcnow())

    def _pending(self, s: Session, token: str) -> m.OAuthToken:
        row = self._find(s, token)
        if row.kind != "temporary":
            raise Invalid("token", "not a temporary token")
        if row.status != "pending":
            raise Conflict(f"token is already {row.status}")
        if utcnow() >= row.expires_at:
            raise Conflict("token has expired; the consumer must request a new one")
        return row

    def approve(self, token: str, actor: str = "system") -> str:
        """Approve a pending temporary token; returns the 6-digit verifier to give the PBX."""
        with self._tx() as (s, changes):
            row = self._pending(s, token)
            row.status = "approved"
            row.verifier = random_verifier()
            row.decided_at = utcnow()
            row.decided_by = actor
            self._audit(s, "token", actor, f"temporary token of {row.consumer.name} approved")
            changes.append(Change("token", "approved", token))
            return row.verifier

    def reject(self, token: str, actor: str = "system") -> None:
        with self._tx() as (s, changes):
            row = self._pending(s, token)
            row.status = "rejected"
            row.decided_at = utcnow()
            row.decided_by = actor
            self._audit(s, "token", actor, f"temporary token of {row.consumer.name} rejected")
            changes.append(Change("token", "rejected", token))

    def exchange(
        self,
        consumer_key: str,
        temporary: str,
        verifier: str,
        token: str,
        secret: str,
        lifetime: dt.timedelta,
    ) -> TokenRecord:
        """Trade an approved temporary token and its verifier for a final token, once."""
        now = utcnow()
        with self._tx() as (s, changes):
            temp = self._find(s, temporary)
            if temp.kind != "temporary" or temp.consumer.consumer_key != consumer_key:
                raise Invalid("oauth_token", "unknown temporary token")
            if temp.status != "approved":
                raise Conflict(f"temporary token is {temp.status}, not approved")
            if now >= temp.expires_at:
                raise Conflict("temporary token has expired")
            if temp.verifier != verifier:
                raise Invalid("oauth_verifier", "wrong verifier")
            done = s.execute(
                update(m.OAuthToken)
                .where(m.OAuthToken.id == temp.id, m.OAuthToken.status == "approved")
                .values(status="used")
            )
            if getattr(done, "rowcount", 1) != 1:
                raise Conflict("temporary token was already used")
            row = m.OAuthToken(
                token=token,
                secret_enc=self._box.encrypt(secret),
                created_at=now,
                kind="access",
                status="active",
                consumer=temp.consumer,
                callback="",
                expires_at=now + lifetime,
            )
            s.add(row)
            s.flush()
            self._audit(
                s, "token", temp.consumer.name, f"final token issued to {temp.consumer.name}"
            )
            changes.append(Change("token", "created", token))
            return self._record(row, now)

    def renew(self, token: str, lifetime: dt.timedelta, actor: str = "system") -> TokenRecord:
        """Extend an active final token to ``now + lifetime`` (also when it has expired)."""
        now = utcnow()
        with self._tx() as (s, changes):
            row = self._find(s, token)
            if row.kind != "access":
                raise Invalid("token", "only final (access) tokens are renewed")
            if row.status != "active":
                raise Conflict(f"token is {row.status}")
            row.expires_at = now + lifetime
            row.renewed_at = now
            self._audit(s, "token", actor, f"final token of {row.consumer.name} renewed")
            changes.append(Change("token", "renewed", token))
            return self._record(row, now)

    def revoke(self, token: str, actor: str = "system") -> None:
        with self._tx() as (s, changes):
            row = self._find(s, token)
            s.delete(row)
            self._audit(s, "token", actor, f"{row.kind} token of {row.consumer.name} revoked")
            changes.append(Change("token", "deleted", token))

    def purge_expired_temporary(self) -> int:
        with self._tx() as (s, _changes):
            result = s.execute(
                delete(m.OAuthToken).where(
                    m.OAuthToken.kind == "temporary", m.OAuthToken.expires_at < utcnow()
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


class NonceRepository(_Repo):
    _calls = 0

    def use(self, consumer_key: str, nonce: str, timestamp: int, token: str, window: int) -> bool:
        """Record a nonce; False when the same one was already used (a replay)."""
        NonceRepository._calls += 1
        with self._session() as s:
            try:
                with s.begin():
                    s.add(
                        m.OAuthNonce(
                            consumer_key=consumer_key, nonce=nonce, timestamp=timestamp, token=token
                        )
                    )
            except IntegrityError:
                return False
            if NonceRepository._calls % 256 == 0:
                with s.begin():
                    cutoff = utcnow() - dt.timedelta(seconds=2 * window)
                    s.execute(delete(m.OAuthNonce).where(m.OAuthNonce.created_at < cutoff))
        return True


# -- events ------------------------------------------------------------------------------


class EventRepository(_Repo):
    @staticmethod
    def _record(row: m.Event) -> EventRecord:
        return EventRecord(
            guid=row.guid,
            created_at=row.created_at,
            kind=row.kind,
            severity=row.severity,
            source=row.source,
            actor=row.actor,
            message=row.message,
            cleared=row.cleared,
            cleared_at=row.cleared_at,
        )

    def _filter(self, query: Any, kind: str | None, cleared: bool | None) -> Any:
        if kind is not None:
            query = query.where(m.Event.kind == kind)
        if cleared is not None:
            query = query.where(m.Event.cleared == cleared)
        return query

    def add(
        self,
        message: str,
        *,
        kind: str = "alarm",
        severity: str = "warning",
        source: str = "system",
        actor: str = "system",
    ) -> EventRecord:
        with self._tx() as (s, changes):
            row = m.Event(
                guid=_guid(),
                kind=kind,
                severity=severity,
                source=source,
                actor=actor,
                message=message,
                cleared=kind == "audit",
            )
            s.add(row)
            s.flush()
            changes.append(Change("event", "created", row.guid))
            return self._record(row)

    def list(
        self,
        *,
        kind: str | None = None,
        cleared: bool | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> builtins.list[EventRecord]:
        check_page(offset, limit)
        with self._session() as s:
            query = self._filter(select(m.Event), kind, cleared)
            query = query.order_by(m.Event.created_at.desc(), m.Event.id.desc())
            return [self._record(r) for r in s.scalars(query.offset(offset).limit(limit))]

    def count(self, *, kind: str | None = None, cleared: bool | None = None) -> int:
        with self._session() as s:
            query = self._filter(select(func.count()).select_from(m.Event), kind, cleared)
            return s.scalar(query) or 0

    def get(self, guid: str) -> EventRecord:
        with self._session() as s:
            row = s.scalar(select(m.Event).where(m.Event.guid == guid.lower()))
            if row is None:
                raise NotFound("event", guid)
            return self._record(row)

    def clear(self, guid: str | None = None, actor: str = "system") -> int:
        """Mark one event (or, with no guid, every uncleared one) cleared."""
        with self._tx() as (s, changes):
            query = update(m.Event).where(m.Event.cleared.is_(False))
            if guid is not None:
                if s.scalar(select(m.Event.id).where(m.Event.guid == guid.lower())) is None:
                    raise NotFound("event", guid)
                query = query.where(m.Event.guid == guid.lower())
            result = s.execute(query.values(cleared=True, cleared_at=utcnow()))
            changes.append(Change("event", "cleared", guid or "*"))
            return int(getattr(result, "rowcount", 0) or 0)


# -- admins ------------------------------------------------------------------------------

_DUMMY_HASH = hash_password("timing-equaliser")


class AdminRepository(_Repo):
    @staticmethod
    def _record(row: m.AdminUser) -> AdminRecord:
        return AdminRecord(
            username=row.username,
            active=row.active,
            created_at=row.created_at,
            last_login=row.last_login,
        )

    def list(self) -> builtins.list[AdminRecord]:
        with self._session() as s:
            return [
                self._record(r)
                for r in s.scalars(select(m.AdminUser).order_by(m.AdminUser.username))
            ]

    def count(self) -> int:
        with self._session() as s:
            return s.scalar(select(func.count()).select_from(m.AdminUser)) or 0

    def _find(self, s: Session, username: str) -> m.AdminUser:
        row = s.scalar(select(m.AdminUser).where(m.AdminUser.username == username))
        if row is None:
            raise NotFound("admin", username)
        return row

    def create(self, username: str, password: str, actor: str = "system") -> AdminRecord:
        if not username or len(username) > 64 or any(c.isspace() for c in username):
            raise Invalid("username", "1-64 characters without spaces")
        if len(password) < 8:
            raise Invalid("password", "at least 8 characters")
        with self._tx() as (s, changes):
            if s.scalar(select(m.AdminUser.id).where(m.AdminUser.username == username)):
                raise Conflict(f"admin {username!r} already exists")
            row = m.AdminUser(username=username, password_hash=hash_password(password), active=True)
            s.add(row)
            s.flush()
            self._audit(s, "admin", actor, f"admin {username} created")
            changes.append(Change("admin", "created", username))
            return self._record(row)

    def set_password(self, username: str, password: str, actor: str = "system") -> None:
        if len(password) < 8:
            raise Invalid("password", "at least 8 characters")
        with self._tx() as (s, changes):
            row = self._find(s, username)
            row.password_hash = hash_password(password)
            # A new password ends the sessions opened with the old one.
            s.execute(
                delete(m.AdminToken).where(
                    m.AdminToken.admin_id == row.id, m.AdminToken.kind == "session"
                )
            )
            self._audit(s, "admin", actor, f"password of admin {username} changed")
            changes.append(Change("admin", "updated", username))

    def delete(self, username: str, actor: str = "system") -> None:
        with self._tx() as (s, changes):
            row = self._find(s, username)
            s.delete(row)
            self._audit(s, "admin", actor, f"admin {username} deleted")
            changes.append(Change("admin", "deleted", username))

    def authenticate(self, username: str, password: str) -> AdminRecord | None:
        with self._session() as s, s.begin():
            row = s.scalar(select(m.AdminUser).where(m.AdminUser.username == username))
            if row is None or not row.active:
                verify_password(_DUMMY_HASH, password)
                return None
            if not verify_password(row.password_hash, password):
                return None
            row.last_login = utcnow()
            return self._record(row)

    def issue_token(
        self,
        username: str,
        *,
        kind: str = "api",
        name: str = "",
        ttl: dt.timedelta | None = None,
        actor: str = "system",
    ) -> tuple[str, AdminTokenRecord]:
        """A bearer token for ``username``: a login session or a named API token. The token
        is returned once; only its digest is kept."""
        token = "lmn_" + random_hex(32)
        with self._tx() as (s, changes):
            admin = self._find(s, username)
            row = m.AdminToken(
                admin=admin,
                kind=kind,
                name=name or kind,
                token_hash=token_digest(token),
                expires_at=None if ttl is None else utcnow() + ttl,
            )
            s.add(row)
            s.flush()
            if kind == "api":
                self._audit(s, "admin", actor, f"API token {row.name!r} issued to {username}")
                changes.append(Change("admin", "token", username))
            return token, self._token_record(row)

    @staticmethod
    def _token_record(row: m.AdminToken) -> AdminTokenRecord:
        return AdminTokenRecord(
            id=row.id,
            username=row.admin.username,
            kind=row.kind,
            name=row.name,
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used=row.last_used,
        )

    def resolve_token(self, token: str) -> str | None:
        """The admin a bearer token belongs to, or None if unknown, expired or disabled."""
        now = utcnow()
        with self._session() as s, s.begin():
            row = s.scalar(
                select(m.AdminToken)
                .options(selectinload(m.AdminToken.admin))
                .where(m.AdminToken.token_hash == token_digest(token))
            )
            if row is None or not row.admin.active:
                return None
            if row.expires_at is not None and now >= row.expires_at:
                s.delete(row)
                return None
            if row.last_used is None or (now - row.last_used).total_seconds() > 60:
                row.last_used = now
            return row.admin.username

    def list_tokens(self) -> builtins.list[AdminTokenRecord]:
        with self._session() as s:
            query = (
                select(m.AdminToken)
                .options(selectinload(m.AdminToken.admin))
                .where(m.AdminToken.kind == "api")
                .order_by(m.AdminToken.id)
            )
            return [self._token_record(r) for r in s.scalars(query)]

    def revoke_token(
        self, token_id: int | None = None, token: str | None = None, actor: str = "system"
    ) -> None:
        with self._tx() as (s, changes):
            query = select(m.AdminToken).options(selectinload(m.AdminToken.admin))
            if token is not None:
                row = s.scalar(query.where(m.AdminToken.token_hash == token_digest(token)))
            else:
                row = s.scalar(query.where(m.AdminToken.id == token_id))
            if row is None:
                raise NotFound("admin token", str(token_id if token is None else "given"))
            s.delete(row)
            if row.kind == "api":
                self._audit(
                    s, "admin", actor, f"API token {row.name!r} of {row.admin.username} revoked"
                )
                changes.append(Change("admin", "token", row.admin.username))


# -- the store -------------------------------------------------------------------------


class Store:
    """Limen's configuration store. Build it with :func:`limen.store.open_store`."""

    def __init__(
        self, engine: Engine, box: SecretBox, on_change: Callable[[Change], None] | None = None
    ) -> None:
        self.engine = engine
        self.box = box
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.on_change = on_change
        # Configuration changes this process committed (each bumps config_version by
        # one): a watcher subtracts them to see whether another process changed anything.
        self.own_commits = 0
        self.icps = IcpRepository(self)
        self.devices = DeviceRepository(self)
        self.options = OptionsRepository(self)
        self.overrides = OverrideRepository(self)
        self.consumers = ConsumerRepository(self)
        self.tokens = TokenRepository(self)
        self.nonces = NonceRepository(self)
        self.events = EventRepository(self)
        self.admins = AdminRepository(self)

    def config_version(self) -> int:
        """How many configuration changes were committed, by any process (0 if none)."""
        with self.sessions() as session:
            row = session.get(m.Meta, CONFIG_VERSION_KEY)
            return int(row.value) if row is not None else 0

    def announce(self, change: Change) -> None:
        if self.on_change is not None:
            self.on_change(change)

    def close(self) -> None:
        self.engine.dispose()


def _methods_of(stored: str | None) -> list[str] | None:
    """A device's stored challenge list; NULL and '' (written by older versions for
    "--challenge-methods ''") both mean "use the global option"."""
    methods = [m for m in (stored or "").split(",") if m]
    return methods or None
