"""SQLAlchemy 2 models: the configuration Limen keeps (DESIGN.md, "State").

Column names follow MBG's API field names where it has them (``setside_username``,
``clientid``, ...). Secrets needed in clear at run time (SIP digest passwords, OAuth
shared secrets and token secrets) are stored encrypted (``*_enc`` columns, see
:mod:`limen.store.secrets`); admin passwords and admin tokens are stored only as hashes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from limen.store.db import UtcDateTime, utcnow


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the store itself (e.g. the encryption key check)."""

    __tablename__ = "limen_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Icp(Base):
    """A call server (PBX) Limen serves: MBG's "ICP" (seed figure 10)."""

    __tablename__ = "icps"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # SIP transport Limen uses toward the ICP.
    transport: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(64))
    # Comma-separated subset of udp,tcp,tls: what the ICP accepts.
    sip_capabilities: Mapped[str] = mapped_column(String(32))
    link_enabled: Mapped[bool] = mapped_column(Boolean)
    xml_listen_port: Mapped[int] = mapped_column(Integer)
    xml_destination_port: Mapped[int] = mapped_column(Integer)
    # TLS on the XML / provisioning link (port 4445).
    tls: Mapped[bool] = mapped_column(Boolean)
    # "Limen serves configs": the provisioning port renders this ICP's phone files itself
    # instead of proxying to the ICP's config server (limen.provisioning).
    serves_configs: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    domain: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    # TLS trust toward this ICP (SIP/TLS and the provisioning link, issue 15): a CA file
    # and/or a pinned SHA-256 fingerprint; empty means the global provisioning.upstream_*
    # settings (system store by default). tls_verify false is the explicit "don't verify".
    tls_verify: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    tls_ca_file: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    tls_pin_sha256: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # The name the certificate must carry; empty means the ICP's host name.
    tls_server_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # Mutual TLS: the certificate Limen presents when the PBX asks (empty: the SIP
    # listener's, issued by Limen's CA).
    tls_client_cert: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    tls_client_key: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    # OPTIONS ping interval toward each of the ICP's targets, seconds (0: no pings).
    options_interval: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    hashes: Mapped[list[IcpHash]] = relationship(
        back_populates="icp", cascade="all, delete-orphan", order_by="IcpHash.id"
    )
    devices: Mapped[list[SipDevice]] = relationship(
        back_populates="icp", cascade="all, delete-orphan"
    )


class IcpHash(Base):
    """A provisioning hash (seed 2.7): the path prefix phones use to reach this ICP's files."""

    __tablename__ = "icp_hashes"

    id: Mapped[int] = mapped_column(primary_key=True)
    icp_id: Mapped[int] = mapped_column(ForeignKey("icps.id", ondelete="CASCADE"), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    icp: Mapped[Icp] = relationship(back_populates="hashes")


class SipDevice(Base):
    """A SIP phone: set-side credentials (phone ⇄ Limen), ICP-side ones (Limen ⇄ PBX).

    The nullable option columns override the global options for this device; NULL means
    "use the global value".
    """

    __tablename__ = "sip_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    setside_username: Mapped[str] = mapped_column(String(128), unique=True)
    setside_password_enc: Mapped[str] = mapped_column(Text)
    icpside_username: Mapped[str] = mapped_column(String(128))
    icpside_password_enc: Mapped[str] = mapped_column(Text)
    icp_id: Mapped[int] = mapped_column(ForeignKey("icps.id", ondelete="CASCADE"), index=True)
    clientid: Mapped[str | None] = mapped_column(String(12), unique=True, nullable=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    challenge_methods: Mapped[str | None] = mapped_column(String(255), nullable=True)
    options_hb: Mapped[str | None] = mapped_column(String(32), nullable=True)
    heartbeat_interval: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prack_support: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    set_side_rtp_security: Mapped[str | None] = mapped_column(String(16), nullable=True)
    setside_codec: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rtpframesize: Mapped[str | None] = mapped_column(String(16), nullable=True)
    max_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_call_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    icp: Mapped[Icp] = relationship(back_populates="devices")


class GlobalOption(Base):
    """One global option (name → JSON value), typed by ``limen.store.options.GlobalOptions``."""

    __tablename__ = "global_options"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class Override(Base):
    """A configuration override row, like MBG's ``tug.ini`` overrides (seed figures 12-13)."""

    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    file: Mapped[str] = mapped_column(String(128))
    sort_order: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(String(255))
    parameter: Mapped[str] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)


class Consumer(Base):
    """An API client (OAuth 1.0a consumer), e.g. the PBX (seed figure 15)."""

    __tablename__ = "consumers"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    consumer_key: Mapped[str] = mapped_column(String(64), unique=True)
    secret_enc: Mapped[str] = mapped_column(Text)
    rsa_public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

    permissions: Mapped[list[ConsumerPermission]] = relationship(
        back_populates="consumer", cascade="all, delete-orphan", order_by="ConsumerPermission.id"
    )
    tokens: Mapped[list[OAuthToken]] = relationship(
        back_populates="consumer", cascade="all, delete-orphan"
    )


class ConsumerPermission(Base):
    __tablename__ = "consumer_permissions"
    __table_args__ = (UniqueConstraint("consumer_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("consumers.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(255))
    read: Mapped[bool] = mapped_column(Boolean)
    write: Mapped[bool] = mapped_column(Boolean)

    consumer: Mapped[Consumer] = relationship(back_populates="permissions")


class OAuthToken(Base):
    """A temporary (request) token or a final (access) token of OAuth 1.0a."""

    __tablename__ = "oauth_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    secret_enc: Mapped[str] = mapped_column(Text)
    # "temporary" | "access"
    kind: Mapped[str] = mapped_column(String(16))
    # temporary: pending | approved | rejected | used; access: active | revoked
    status: Mapped[str] = mapped_column(String(16))
    consumer_id: Mapped[int] = mapped_column(
        ForeignKey("consumers.id", ondelete="CASCADE"), index=True
    )
    verifier: Mapped[str | None] = mapped_column(String(16), nullable=True)
    callback: Mapped[str] = mapped_column(String(255), default="oob")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    renewed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)

    consumer: Mapped[Consumer] = relationship(back_populates="tokens")


class OAuthNonce(Base):
    """Nonces seen within the timestamp window: a second use is a replay (RFC 5849 §3.3)."""

    __tablename__ = "oauth_nonces"
    __table_args__ = (UniqueConstraint("consumer_key", "nonce", "timestamp", "token"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_key: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(128))
    timestamp: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class Event(Base):
    """An alarm or an audit record (MBG's ``/msl/v1/events/``)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # "audit" | "alarm"
    kind: Mapped[str] = mapped_column(String(16))
    # info | warning | minor | major | critical
    severity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    cleared: Mapped[bool] = mapped_column(Boolean, default=False)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_login: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)

    tokens: Mapped[list[AdminToken]] = relationship(
        back_populates="admin", cascade="all, delete-orphan"
    )


class AdminToken(Base):
    """A bearer credential for an admin: a login session or a named API token for scripts.

    Only the SHA-256 of the token is stored; the token itself is shown once.
    """

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    admin_id: Mapped[int] = mapped_column(
        ForeignKey("admin_users.id", ondelete="CASCADE"), index=True
    )
    # "session" | "api"
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)

    admin: Mapped[AdminUser] = relationship(back_populates="tokens")


class RegistrationBinding(Base):
    """A phone's set-side registration, written behind by the gateway so that a restart
    resumes it (limen.gateway.registrar). One row per device; ``expires_at`` is wall-clock."""

    __tablename__ = "registration_bindings"

    device_guid: Mapped[str] = mapped_column(String(36), primary_key=True)
    aor: Mapped[str] = mapped_column(String(128))
    contact: Mapped[str] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(8))
    remote_host: Mapped[str] = mapped_column(String(64))
    remote_port: Mapped[int] = mapped_column(Integer)
    local_host: Mapped[str] = mapped_column(String(64))
    local_port: Mapped[int] = mapped_column(Integer)
    nat: Mapped[bool] = mapped_column(Boolean)
    call_id: Mapped[str] = mapped_column(String(255))
    cseq: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
