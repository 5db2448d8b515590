"""Limen settings: a TOML file, overridden by ``LIMEN_*`` environment variables.

The file is found at ``--config PATH``, else ``$LIMEN_CONFIG``, else ``./limen.toml``.
Relative paths inside it (data directory, certificates, database file) are resolved
against the directory the file lives in, so a deployment folder can be moved as a whole.
Environment overrides use ``__`` between levels: ``LIMEN_SIP__UDP_PORT=5070``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_NAME = "limen.toml"


class SipSettings(BaseModel):
    """Where and how the SIP transports listen (DESIGN.md, ports table)."""

    bind: str = "0.0.0.0"
    # Extra bind address for IPv6 ("::" for all); empty disables IPv6 listeners.
    bind6: str = ""
    udp_port: int = Field(5060, ge=0, le=65535)
    tcp_port: int = Field(5060, ge=0, le=65535)
    tls_port: int = Field(5061, ge=0, le=65535)
    udp: bool = True
    tcp: bool = True
    tls: bool = True
    # TLS material; empty means "generate a self-signed pair in the data directory".
    tls_cert: str = ""
    tls_key: str = ""
    # Limits against abuse (issue 2, transport).
    max_message_size: int = Field(65536, ge=1024)
    max_headers: int = Field(256, ge=8)
    max_connections_per_source: int = Field(32, ge=1)
    max_connections: int = Field(10000, ge=1)
    idle_timeout: float = Field(300.0, gt=0)
    handshake_timeout: float = Field(10.0, gt=0)
    # RFC 3261 §17.1.1.1 timer values, seconds.
    t1: float = Field(0.5, gt=0)
    t2: float = Field(4.0, gt=0)
    t4: float = Field(5.0, gt=0)
    # Server / User-Agent header value; empty sends none (topology and product hiding).
    server_header: str = "Limen"


class ApiSettings(BaseModel):
    bind: str = "0.0.0.0"
    port: int = Field(8443, ge=0, le=65535)
    enabled: bool = True
    # TLS material for the admin API; empty means "self-signed pair in the data directory"
    # (api.crt / api.key, made by limen.certs.ensure_self_signed).
    tls_cert: str = ""
    tls_key: str = ""
    # OAuth 1.0a pairing (MBG): temporary tokens wait this long for an admin's approval;
    # final (access) tokens last this many days and can be renewed.
    temporary_token_ttl: int = Field(900, ge=30)
    access_token_days: int = Field(365, ge=1)
    # Allowed clock skew for signed requests (oauth_timestamp), seconds.
    timestamp_lifetime: int = Field(600, ge=10)
    # Admin sessions opened with a password (POST /mslrest/session) last this long.
    session_ttl: int = Field(8 * 3600, ge=60)


class ProvisioningSettings(BaseModel):
    bind: str = "0.0.0.0"
    port: int = Field(4445, ge=0, le=65535)
    enabled: bool = True


class MediaSettings(BaseModel):
    port_min: int = Field(20000, ge=1024, le=65535)
    port_max: int = Field(31000, ge=1024, le=65535)


class Settings(BaseSettings):
    """All of Limen's static settings. Runtime-editable options live in the store."""

    model_config = SettingsConfigDict(
        env_prefix="LIMEN_", env_nested_delimiter="__", extra="forbid"
    )

    # Where the config file was read from; relative paths are resolved against its folder.
    config_path: str = ""
    data_dir: str = "data"
    database_url: str = ""
    # Key that encrypts SIP passwords and consumer secrets at rest (Fernet, mode 0600).
    # Kept outside the database on purpose; empty means "<data_dir>/secret.key".
    secret_key_file: str = ""
    # Public identity of this Limen: used in certificates, Via/Contact/Record-Route.
    public_fqdn: str = ""
    public_ip: str = ""
    log_level: str = "INFO"

    sip: SipSettings = SipSettings()
    api: ApiSettings = ApiSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    media: MediaSettings = MediaSettings()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE_FOR_LOAD or None
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # -- derived paths -------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return Path(self.config_path).resolve().parent if self.config_path else Path.cwd()

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)

    @property
    def secret_key_path(self) -> Path:
        if self.secret_key_file:
            return self.resolve(self.secret_key_file)
        return self.data_path / "secret.key"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'limen.db'}"


# pydantic-settings builds sources from class-level hooks; the file to read is passed
# through this module global only for the duration of one load_settings() call.
_TOML_FILE_FOR_LOAD: str = ""


def config_file_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("LIMEN_CONFIG")
    if env:
        return Path(env)
    return Path.cwd() / DEFAULT_CONFIG_NAME


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the TOML file (if it exists), the environment and ``overrides``."""
    global _TOML_FILE_FOR_LOAD
    file = config_file_path(path)
    _TOML_FILE_FOR_LOAD = str(file) if file.exists() else ""
    try:
        settings = Settings(config_path=str(file), **overrides)
    finally:
        _TOML_FILE_FOR_LOAD = ""
    return settings


SAMPLE_CONFIG = """\
# Limen configuration (TOML). Every key is optional; the values shown are the defaults.
# Environment variables override it: LIMEN_SIP__TLS_PORT=5071, LIMEN_DATA_DIR=/srv/limen ...

# Folder for the database, generated keys and certificates (relative to this file).
data_dir = "data"
# Database: SQLite in data_dir by default; PostgreSQL (e.g. for a cluster) through a URL.
# database_url = "postgresql+psycopg://limen:secret@db.example.net/limen"
# Key encrypting SIP passwords at rest (mode 0600; keep a copy off the database's backups).
# secret_key_file = "data/secret.key"
# Public identity: goes into generated certificates (subjectAltName) and SIP headers.
public_fqdn = "{fqdn}"
public_ip = "{ip}"
log_level = "INFO"

[sip]
bind = "0.0.0.0"
udp_port = 5060
tcp_port = 5060
tls_port = 5061
udp = true
tcp = true
tls = true
# tls_cert = "/etc/limen/sip.pem"   # empty: a self-signed certificate is generated
# tls_key = "/etc/limen/sip.key"
idle_timeout = 300
max_message_size = 65536

[api]
port = 8443

[provisioning]
port = 4445

[media]
port_min = 20000
port_max = 31000
"""


def write_sample_config(path: Path, fqdn: str = "limen.local", ip: str = "127.0.0.1") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SAMPLE_CONFIG.format(fqdn=fqdn, ip=ip))
