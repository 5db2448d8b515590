"""Limen settings: a TOML file, overridden by ``LIMEN_*`` environment variables.

The file is found at ``--config PATH``, else ``$LIMEN_CONFIG``, else ``./limen.toml``.
Relative paths inside it (data directory, certificates, database file) are resolved
against the directory the file lives in, so a deployment folder can be moved as a whole.
Environment overrides use ``__`` between levels: ``LIMEN_SIP__UDP_PORT=5070``.
"""

from __future__ import annotations

import ipaddress
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
    # Address Limen writes in Via/Contact toward the ICP (its LAN address); empty: the
    # address the routing table uses toward the ICP.
    lan_ip: str = ""
    # Digest realm of set-side challenges. `limen init` writes it once; phones cache it,
    # so it never follows public_fqdn. Empty (files written before it existed): the realm
    # the store recorded on its first start (limen.identity.resolve_realm).
    realm: str = ""
    # Extra bind address for IPv6 ("::" for all); empty disables IPv6 listeners.
    bind6: str = ""
    udp_port: int = Field(5060, ge=0, le=65535)
    tcp_port: int = Field(5060, ge=0, le=65535)
    tls_port: int = Field(5061, ge=0, le=65535)
    # Listener switches, for embedding and tests only: whether phones may use a transport
    # is the global option sip_udp / sip_tcp / sip_tls (MBG's "SIP support"), the one
    # switch an administrator sets (`limen options set sip_udp on`). Limen needs its
    # listeners toward the ICPs anyway, so leave these on.
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
    # DNS servers for ICP names (RFC 3263), "host" or "host:port"; empty: resolv.conf.
    dns_servers: list[str] = Field(default_factory=list)
    # Seconds a message on TCP/TLS may take from its first octet to its last, however
    # the octets trickle in (Kamailio's tcp_msg_read_timeout; issue 10, slowloris).
    message_read_timeout: float = Field(10.0, gt=0)
    # TLS handshakes in progress from one IP address, and in total: past them a new
    # connection is refused before any cryptography is spent on it.
    max_handshakes_per_source: int = Field(8, ge=1)
    max_handshakes: int = Field(1000, ge=1)
    # RFC 3261 §17.1.1.1 timer values, seconds.
    t1: float = Field(0.5, gt=0)
    t2: float = Field(4.0, gt=0)
    t4: float = Field(5.0, gt=0)
    # Timer C (RFC 3261 §16.6 item 11): an INVITE relayed to the other side that gets no
    # final response within this many seconds is cancelled and answered 408.
    timer_c: float = Field(180.0, gt=0)
    # Server / User-Agent header value; empty sends none (topology and product hiding).
    server_header: str = "Limen"
    # Digest algorithms of set-side challenges, one WWW-/Proxy-Authenticate each, in this
    # order. Some phones give up on a challenge set containing an algorithm they do not
    # know (baresip 1.0 / libre 1.1: "Function not implemented" on SHA-256): ["MD5"].
    digest_algorithms: list[str] = Field(default_factory=lambda: ["MD5", "SHA-256"])
    # OPTIONS keepalives a registered phone may leave unanswered in a row before Limen
    # unregisters it (and its ICP-side registration).
    keepalive_misses: int = Field(3, ge=1, le=100)

    @field_validator("digest_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        known = {"MD5": "MD5", "SHA-256": "SHA-256"}
        out = [known.get(a.upper(), "") for a in value]
        if not out or "" in out:
            raise ValueError(f"digest_algorithms: one or more of {sorted(known)}, got {value}")
        return list(dict.fromkeys(out))


class ApiSettings(BaseModel):
    # Empty: the LAN side only (sip.lan_ip, else the address the routing table uses toward
    # the first ICP, else 127.0.0.1). Exposing the API to the internet is an explicit
    # choice: "0.0.0.0" (issue 10).
    bind: str = ""
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
    """The HTTPS provisioning proxy phones fetch their files from (issue 6, seed 2.3.1)."""

    bind: str = "0.0.0.0"
    port: int = Field(4445, ge=0, le=65535)
    enabled: bool = True
    # TLS material shown to phones; empty means "issued by Limen's CA in <data_dir>/tls/"
    # (provisioning.pem / provisioning.key, made by limen.certs.ensure_certificates).
    tls_cert: str = ""
    tls_key: str = ""
    # How the PBX's config server certificate is checked: against this CA file, and/or
    # against a pinned SHA-256 fingerprint of its certificate (hex, colons allowed). With
    # neither, the system trust store is used unless upstream_verify is false (then
    # nothing is checked and a warning is logged at start and on every upstream use).
    upstream_ca_file: str = ""
    upstream_pin_sha256: str = ""
    upstream_verify: bool = True
    upstream_check_hostname: bool = True
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(15.0, gt=0)
    # Size caps: a response from the PBX (firmware files are tens of MB), a request body
    # from a phone (XML application posts), the request line and headers.
    max_response_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_request_body: int = Field(1024 * 1024, ge=0)
    max_header_bytes: int = Field(8192, ge=1024)
    # Phones' connections: time to send a request's headers, keep-alive idle time.
    header_timeout: float = Field(10.0, gt=0)
    idle_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(1000, ge=1)
    max_connections_per_source: int = Field(16, ge=1)
    # TLS handshakes in progress (counted with the connections above, and apart): a flood
    # of handshakes that never finish cannot take the places of phones (issue 10).
    handshake_timeout: float = Field(10.0, gt=0)
    max_handshakes_per_source: int = Field(8, ge=1)
    max_handshakes: int = Field(256, ge=1)
    # Per source address: a token bucket of `rate_limit_burst` requests refilled at
    # `rate_limit_per_minute`; beyond it, 429.
    rate_limit_per_minute: float = Field(120.0, gt=0)
    rate_limit_burst: int = Field(60, ge=1)
    # Hash guessing: `guess_limit` requests for unknown hashes (or malformed paths) within
    # `guess_window` seconds block the source for `guess_block` seconds (403).
    guess_limit: int = Field(10, ge=1)
    guess_window: float = Field(600.0, gt=0)
    guess_block: float = Field(900.0, gt=0)


class CertSettings(BaseModel):
    """Certificates made by Limen's own CA (``limen.certs``) when no PEM files are given."""

    # Extra subjectAltName entries: "DNS=name", "IP=address" or a bare name / address.
    extra_names: list[str] = Field(default_factory=list)
    # Also list public_ip as a DNS name (besides the IP entry), for phones that match an
    # address only against DNS entries. Off: the address is an IP entry only.
    ip_as_dns: bool = False
    # Lifetime of generated leaf certificates and of the CA, days.
    days: int = Field(825, ge=1)
    ca_days: int = Field(3650, ge=1)
    # Warn (log + event) when a certificate expires within this many days.
    warn_days: int = Field(30, ge=1)


class MediaSettings(BaseModel):
    # The port range is a global option (srtp_port_min/max, MBG's settings screen), set
    # with `limen options set` or the API, not here: one source of truth.
    # The relay (issue 5). Disabled: SDP passes through and media takes the direct path.
    relay: bool = True
    # Local addresses the media sockets bind, per side; empty: `bind`.
    bind: str = "0.0.0.0"
    set_bind: str = ""
    icp_bind: str = ""
    # Addresses written in c= lines: toward phones (empty: public_ip, else the set-side
    # SIP host) and toward the PBX (empty: the ICP-side SIP host, i.e. sip.lan_ip or the
    # routed address).
    public_address: str = ""
    lan_address: str = ""
    # No packet in either direction for this long ends the call (BYE both legs); longer
    # while on hold. Seconds.
    media_timeout: float = Field(60.0, gt=0)
    hold_timeout: float = Field(3600.0, gt=0)
    # An ICP that answered 488/606 to an SRTP offer under icp_side_rtp_security "Prefer"
    # gets plain RTP offers straight away for this many seconds (one INVITE per call
    # instead of two); then SRTP is tried again, in case the PBX changed. 0: always try.
    srtp_refusal_memory: float = Field(900.0, ge=0)
    # 0: the relay runs in the main process. N > 0: N worker processes, each owning a slice
    # of the port range (limen.media.workers), so media scales with cores.
    workers: int = Field(0, ge=0, le=256)


# User-Agent values of well-known SIP scanners (SIPVicious' "friendly-scanner", sipcli,
# sundayddr, iWar, VaxSIPUserAgent, ...): requests carrying one, matched case-insensitively
# as a substring, are dropped without an answer.
DEFAULT_SCANNER_AGENTS = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "pplsip",
    "smap",
    "sivus",
    "voipbuster",
    "sip auditor",
]


class SecuritySettings(BaseModel):
    """Edge protections (issue 10, docs/security.md): bans, rate limits, ACLs."""

    # Failed authentications (SIP digest, API signatures and logins, console logins,
    # provisioning hashes) per source address within failure_window seconds, and per
    # (source, user), before the source is banned.
    max_failures: int = Field(10, ge=1)
    max_failures_per_user: int = Field(5, ge=1)
    failure_window: float = Field(60.0, gt=0)
    # Ban length, doubled for each repeat offence of the source within a day, up to
    # max_ban_time. A banned source gets no answer at all, on any listener.
    ban_time: float = Field(600.0, gt=0)
    max_ban_time: float = Field(86400.0, gt=0)
    # Provisioning hash guesses are blocked locally, NAT-aware (docs/security.md); they ban
    # the address on every listener only past this many within failure_window.
    provisioning_ban_failures: int = Field(100, ge=1)
    # Networks never counted, rate-limited nor banned (CIDRs). The ICPs' addresses are
    # always trusted.
    trusted: list[str] = Field(default_factory=list)
    # SIP messages per source address per sip_rate_window seconds (Kamailio pike-like);
    # a source over the limit is banned like a guesser. 0 disables.
    sip_rate_limit: int = Field(60, ge=0)
    sip_rate_window: float = Field(2.0, gt=0)
    # Allow / deny lists (CIDRs) per listener. SIP lists apply to the set side (every
    # source that is not an ICP). Empty allow = everyone; deny wins.
    sip_allow: list[str] = Field(default_factory=list)
    sip_deny: list[str] = Field(default_factory=list)
    api_allow: list[str] = Field(default_factory=list)
    api_deny: list[str] = Field(default_factory=list)
    provisioning_allow: list[str] = Field(default_factory=list)
    provisioning_deny: list[str] = Field(default_factory=list)
    scanner_user_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNER_AGENTS))
    # Log lines of one kind per second under attack; the rest are counted and summarised.
    log_rate: float = Field(10.0, gt=0)

    @field_validator(
        "trusted",
        "sip_allow",
        "sip_deny",
        "api_allow",
        "api_deny",
        "provisioning_allow",
        "provisioning_deny",
    )
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"not an address or network: {item!r}") from exc
        return value


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
    # What Limen writes toward phones (Via, Contact, Record-Route, phone files, TMA):
    # public_ip unless the administrator says public_fqdn resolves for the phones (a
    # phone that cannot resolve the name never sends its ACK or BYE; issue 11).
    fqdn_for_phones: bool = False
    log_level: str = "INFO"
    # File descriptors Limen asks for at start (RLIMIT_NOFILE soft limit, up to the hard
    # limit): every TCP/TLS connection, media socket and database file takes one, and the
    # usual default of 1024 would let 2,000 connections block calls (issue 10). 0: leave
    # the limit as inherited.
    max_open_files: int = Field(65536, ge=0)
    # How often `limen serve` looks for configuration changes made by other processes
    # (the CLI, another node), seconds. Changes made through its own API apply at once.
    config_poll: float = Field(2.0, gt=0)

    sip: SipSettings = SipSettings()
    api: ApiSettings = ApiSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    media: MediaSettings = MediaSettings()
    certs: CertSettings = CertSettings()
    security: SecuritySettings = SecuritySettings()

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
    def set_side_host(self) -> str:
        """The address phones are given: public_ip, or public_fqdn when
        ``fqdn_for_phones`` (or when no public_ip is configured)."""
        fqdn, ip = self.public_fqdn.strip(), self.public_ip.strip()
        if fqdn and (self.fqdn_for_phones or not ip):
            return fqdn
        return ip or fqdn

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
# Phones are given public_ip unless fqdn_for_phones = true (only when the name resolves,
# for the phones, to this Limen: a phone that cannot resolve it cannot end its calls).
public_fqdn = "{fqdn}"
public_ip = "{ip}"
fqdn_for_phones = {fqdn_for_phones}
log_level = "INFO"

[sip]
bind = "0.0.0.0"
udp_port = 5060
tcp_port = 5060
tls_port = 5061
# Digest realm of set-side challenges, written once by `limen init`. Phones remember it:
# changing it sends every phone back to 403 until it is reconfigured.
realm = "{realm}"
# Which transports phones may use is the global option sip_udp / sip_tcp / sip_tls
# (`limen options show`; UDP is off by default, as on MBG), not this file.
# Digest algorithms of the challenges phones get. MD5 is what desk phones (and MBG) use;
# some phones fail on a challenge set that also offers SHA-256 (RFC 8760; baresip 1.0:
# "Function not implemented"). Add "SHA-256" when all of yours support it.
digest_algorithms = ["MD5"]
# tls_cert = "/etc/limen/sip.pem"   # empty: a self-signed certificate is generated
# tls_key = "/etc/limen/sip.key"
idle_timeout = 300
max_message_size = 65536

[api]
port = 8443
# Empty: the LAN side only (sip.lan_ip, else the address toward the ICP). The PBX pairs
# over the LAN; "0.0.0.0" exposes the admin API to the internet (not recommended).
# bind = ""

[provisioning]
port = 4445
# How the PBX's config server is trusted: a CA file and/or a pinned certificate.
# upstream_ca_file = "/etc/limen/pbx-ca.pem"
# upstream_pin_sha256 = "AB:CD:..."   # SHA-256 fingerprint of the PBX certificate
# upstream_verify = false             # NOT recommended: warns at start and on every use

[certs]
# Extra subjectAltName entries for the certificates Limen's CA issues.
# extra_names = ["DNS=sbc.example.net", "IP=198.51.100.7"]

[security]
# Failed authentications per source (and per source and user) within failure_window
# seconds before the source is banned for ban_time seconds (doubled on each repeat).
max_failures = 10
max_failures_per_user = 5
failure_window = 60
ban_time = 600
# SIP messages per source per sip_rate_window seconds (0: no limit).
sip_rate_limit = 60
sip_rate_window = 2
# Never banned nor rate-limited (the ICPs always are): e.g. ["10.0.0.0/8"].
trusted = []
# Allow / deny lists per listener, e.g. sip_deny = ["192.0.2.0/24"]. See docs/security.md.

[media]
# RTP/SRTP ports are the global options srtp_port_min / srtp_port_max (limen options set).
relay = true
media_timeout = 60
# A PBX that refused SRTP (488) gets plain RTP offers at once for this long, seconds.
# srtp_refusal_memory = 900
# workers = 2   # the relay in 2 processes, each owning a slice of the ports (0: in-process)
"""


def write_sample_config(
    path: Path,
    fqdn: str = "",
    ip: str = "127.0.0.1",
    realm: str = "",
    fqdn_for_phones: bool = False,
) -> None:
    """Write the sample configuration. The realm is fixed here, once: the FQDN given,
    else "limen" (a digest realm is only a label phones cache; it need not resolve)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        SAMPLE_CONFIG.format(
            fqdn=fqdn,
            ip=ip,
            realm=realm or fqdn or "limen",
            fqdn_for_phones="true" if fqdn_for_phones else "false",
        )
    )


def default_public_ip() -> str:
    """The local address the routing table uses toward the internet (no packet is sent:
    connecting a UDP socket only consults the routing table); 127.0.0.1 without a route."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): never reached
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"
