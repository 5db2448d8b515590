"""Typed records the store takes and gives back, shared by the API and the CLI.

Input models forbid unknown fields and name the field in every error; output records
never carry passwords or secrets (those are write-only, see :class:`DeviceCredentials`
for the gateway's view).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from limen.sip.errors import SipParseError
from limen.sip.uri import SipUri, parse_uri
from limen.store.errors import Invalid
from limen.store.options import (
    SETTING_HELP,
    CodecSupport,
    KeepaliveMode,
    RtpFrameSize,
    RtpSecurity,
    normalise_methods,
)

Transport = Literal["udp", "tcp", "tls"]

# Largest offset/limit a list accepts: well inside the 64-bit integers SQLite and
# PostgreSQL take for OFFSET/LIMIT (a larger Python int overflows the driver).
MAX_PAGE = 2**31 - 1


def check_page(offset: int, limit: int | None) -> None:
    """Raise :class:`~limen.store.errors.Invalid` for an offset/limit no database takes."""
    if not 0 <= offset <= MAX_PAGE:
        raise Invalid("offset", f"must be between 0 and {MAX_PAGE}")
    if limit is not None and not 1 <= limit <= MAX_PAGE:
        raise Invalid("limit", f"must be between 1 and {MAX_PAGE}")


# Input models: unknown fields refused, and strict types (issue 14): JSON true is not the
# port 1, "5060" is not a number, 1 is not true. Enumerations still take their labels.
STRICT_INPUT = ConfigDict(extra="forbid", strict=True)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HASH_RE = re.compile(r"^[A-Za-z0-9]{8,64}$")
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*\.?$")
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAC_STRIP = re.compile(r"[:\-. ]")


def is_guid(value: str) -> bool:
    return bool(_GUID_RE.match(value.lower()))


def normalise_mac(value: str) -> str:
    """``00:08:5d:43:30:b8`` / ``00-08-5D-...`` / ``00085D4330B8`` → ``00085D4330B8``."""
    mac = _MAC_STRIP.sub("", value.strip()).upper()
    if not re.fullmatch(r"[0-9A-F]{12}", mac):
        raise ValueError(f"{value!r} is not a MAC address (12 hex digits)")
    return mac


def looks_like_mac(value: str) -> bool:
    try:
        normalise_mac(value)
    except ValueError:
        return False
    return True


def is_sip_host(value: str) -> bool:
    """True when ``value`` is a host the SIP layer parses back unchanged as the host of
    ``sip:<value>`` (RFC 3261 §25.1 hostport, without a port): what an ICP address or
    domain becomes in Request-URIs and headers."""
    try:
        uri = parse_uri(f"sip:{value}")
    except SipParseError:
        return False
    return (
        isinstance(uri, SipUri)
        and uri.user is None
        and uri.host == value
        and uri.port is None
        and not uri.params
        and uri.headers is None
    )


def _check_host(value: str) -> str:
    value = value.strip()
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        pass
    else:
        shown = str(address)
        if not is_sip_host(f"[{shown}]" if address.version == 6 else shown):
            raise ValueError(f"{value!r} is not usable in a SIP URI")
        return shown
    if not _HOST_RE.match(value) or not is_sip_host(value):
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    return value.lower()


def _check_pin(value: str) -> str:
    """A SHA-256 fingerprint: 64 hex digits, colons optional (``openssl x509
    -fingerprint -sha256`` output); stored as given, empty for none."""
    cleaned = "".join(c for c in value if c not in ": \t")
    if cleaned and (len(cleaned) != 64 or any(c not in "0123456789abcdefABCDEF" for c in cleaned)):
        raise ValueError("must be a SHA-256 fingerprint: 64 hex digits, colons optional")
    return value.strip()


def _check_domain(value: str) -> str:
    """An ICP's SIP domain: empty (use the address) or a host the SIP layer takes."""
    if value == "":
        return value
    if not is_sip_host(value):
        raise ValueError(
            f"{value!r} is not a SIP host (RFC 3261 §25.1): a host name or IP address "
            "without spaces, port or parameters"
        )
    return value


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("1-64 characters: letters, digits, '.', '_', '-' (not first)")
    if is_guid(value):
        raise ValueError("a name must not look like a guid")
    return value


def _check_hashes(value: list[str]) -> list[str]:
    out: list[str] = []
    for item in value:
        if not _HASH_RE.match(item):
            raise ValueError(f"hash {item!r} must be 8-64 letters or digits")
        if item.lower() not in out:
            out.append(item.lower())
    return out


def _check_capabilities(value: Any) -> Any:
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list):
        value = [str(v).lower() for v in value]
        bad = [v for v in value if v not in ("udp", "tcp", "tls")]
        if bad:
            raise ValueError(f"unknown SIP transport(s) {bad} (udp, tcp, tls)")
        value = [t for t in ("udp", "tcp", "tls") if t in value]
        if not value:
            raise ValueError("at least one of udp, tcp, tls")
    return value


def _no_nulls(data: Any, nullable: frozenset[str]) -> Any:
    if isinstance(data, dict):
        for key, value in data.items():
            if value is None and key not in nullable:
                raise ValueError(f"{key} cannot be null")
    return data


# -- ICPs ------------------------------------------------------------------------------


class IcpCreate(BaseModel):
    """A new ICP. ``transport``/``port``: how Limen reaches its SIP side; ``tls``: HTTPS on
    the XML/provisioning link (ports 4445); ``hashes``: provisioning hashes (seed 2.7)."""

    model_config = STRICT_INPUT

    name: str
    address: str
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Transport = "tcp"
    type: str = Field(default="MiVoice 5000", min_length=1, max_length=64)
    sip_capabilities: list[str] = Field(default_factory=lambda: ["udp", "tcp", "tls"])
    link_enabled: bool = True
    xml_listen_port: int = Field(default=4445, ge=1, le=65535)
    xml_destination_port: int = Field(default=4445, ge=1, le=65535)
    tls: bool = True
    serves_configs: bool = False
    hashes: list[str] = Field(default_factory=list)
    domain: str = Field(default="", max_length=255)
    description: str = Field(default="", max_length=255)
    # TLS trust toward the ICP (SIP/TLS and provisioning link); empty: global settings.
    tls_verify: bool = True
    tls_ca_file: str = Field(default="", max_length=1024)
    tls_pin_sha256: str = Field(default="", max_length=128)
    tls_server_name: str = Field(default="", max_length=255)
    tls_client_cert: str = Field(default="", max_length=1024)
    tls_client_key: str = Field(default="", max_length=1024)
    options_interval: int = Field(default=30, ge=0, le=3600)

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _address = field_validator("address")(classmethod(lambda cls, v: _check_host(v)))
    _hashes = field_validator("hashes")(classmethod(lambda cls, v: _check_hashes(v)))
    _pin = field_validator("tls_pin_sha256")(classmethod(lambda cls, v: _check_pin(v)))
    _domain = field_validator("domain")(
        classmethod(lambda cls, v: v if v is None else _check_domain(v))
    )
    _caps = field_validator("sip_capabilities", mode="before")(
        classmethod(lambda cls, v: _check_capabilities(v))
    )


class IcpUpdate(BaseModel):
    """A partial change to an ICP: only the fields given are changed."""

    model_config = STRICT_INPUT

    name: str | None = None
    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Transport | None = None
    type: str | None = Field(default=None, min_length=1, max_length=64)
    sip_capabilities: list[str] | None = None
    link_enabled: bool | None = None
    xml_listen_port: int | None = Field(default=None, ge=1, le=65535)
    xml_destination_port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool | None = None
    serves_configs: bool | None = None
    hashes: list[str] | None = None
    domain: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    tls_verify: bool | None = None
    tls_ca_file: str | None = Field(default=None, max_length=1024)
    tls_pin_sha256: str | None = Field(default=None, max_length=128)
    tls_server_name: str | None = Field(default=None, max_length=255)
    tls_client_cert: str | None = Field(default=None, max_length=1024)
    tls_client_key: str | None = Field(default=None, max_length=1024)
    options_interval: int | None = Field(default=None, ge=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _no_nulls(data, frozenset())

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _address = field_validator("address")(classmethod(lambda cls, v: _check_host(v)))
    _hashes = field_validator("hashes")(classmethod(lambda cls, v: _check_hashes(v)))
    _pin = field_validator("tls_pin_sha256")(
        classmethod(lambda cls, v: None if v is None else _check_pin(v))
    )
    _domain = field_validator("domain")(
        classmethod(lambda cls, v: v if v is None else _check_domain(v))
    )
    _caps = field_validator("sip_capabilities", mode="before")(
        classmethod(lambda cls, v: _check_capabilities(v))
    )


class IcpRecord(BaseModel):
    guid: str
    name: str
    address: str
    port: int
    transport: str
    type: str
    sip_capabilities: list[str]
    link_enabled: bool
    xml_listen_port: int
    xml_destination_port: int
    tls: bool
    # True: Limen renders this ICP's phone files (limen.provisioning) instead of proxying.
    serves_configs: bool = False
    hashes: list[str]
    domain: str
    description: str
    device_count: int
    tls_verify: bool = True
    tls_ca_file: str = ""
    tls_pin_sha256: str = ""
    tls_server_name: str = ""
    tls_client_cert: str = ""
    tls_client_key: str = ""
    options_interval: int = 30


# -- SIP devices -----------------------------------------------------------------------

_DEVICE_NULLABLE = frozenset(
    {
        "clientid",
        "challenge_methods",
        "options_hb",
        "heartbeat_interval",
        "prack_support",
        "set_side_rtp_security",
        "setside_codec",
        "rtpframesize",
        "max_calls",
        "max_call_attempts",
    }
)


_PER_DEVICE = " Per device: empty (null) uses the global option of the same name."

# What `limen device show` and the API schema say about each device field (per-device
# options reuse the global options' text: limen.store.options.SETTING_HELP).
DEVICE_HELP: dict[str, str] = {
    "guid": "Limen's identifier of the device.",
    "setside_username": "User name the phone registers with at Limen (its SIP account).",
    "setside_password": "Password the phone uses with Limen (write-only).",
    "icpside_username": "User name Limen registers with at the PBX for this phone "
    "(default: the set-side one).",
    "icpside_password": "Password Limen uses with the PBX (write-only; default: the set-side one).",
    "icp": "The ICP (PBX) this phone belongs to: name or guid.",
    "icp_guid": "guid of the ICP.",
    "clientid": "The phone's MAC address (MBG's clientid), for TMA export and provisioning.",
    "description": "Free text (up to 255 characters).",
    **{
        name: SETTING_HELP[name] + _PER_DEVICE
        for name in (
            "challenge_methods",
            "options_hb",
            "heartbeat_interval",
            "prack_support",
            "set_side_rtp_security",
            "setside_codec",
            "rtpframesize",
        )
    },
    "max_calls": "Call admission: calls this phone may have in progress at once "
    "(0 = no limit; empty = the global max_calls_per_device).",
    "max_call_attempts": "Call admission: call attempts this phone may start per rolling "
    "minute (0 = no limit; empty = the global max_call_attempts_per_minute).",
}


def _d(name: str) -> Any:
    return Field(default=None, description=DEVICE_HELP[name])


class _DeviceOptions(BaseModel):
    """Per-device overrides of the global options; None means "use the global value"."""

    challenge_methods: list[str] | None = _d("challenge_methods")
    options_hb: KeepaliveMode | None = _d("options_hb")
    heartbeat_interval: int | None = Field(
        default=None, ge=1, le=180, description=DEVICE_HELP["heartbeat_interval"]
    )
    prack_support: bool | None = _d("prack_support")
    set_side_rtp_security: RtpSecurity | None = _d("set_side_rtp_security")
    setside_codec: CodecSupport | None = _d("setside_codec")
    rtpframesize: RtpFrameSize | None = _d("rtpframesize")
    max_calls: int | None = Field(default=None, ge=0, le=1000, description=DEVICE_HELP["max_calls"])
    max_call_attempts: int | None = Field(
        default=None, ge=0, le=10000, description=DEVICE_HELP["max_call_attempts"]
    )

    @field_validator("challenge_methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        # Issue 9: an empty per-device list means "use the global option", never
        # "challenge nothing" (the CLI's '' and the API's [] alike).
        methods = None if value is None else normalise_methods(value)
        return methods or None

    @field_validator("rtpframesize", mode="before")
    @classmethod
    def _frame(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def is_sip_user(value: str) -> bool:
    """True when the SIP layer parses ``sip:<value>@host`` back with exactly ``value`` as
    the user part (RFC 3261 §25.1 ``user``; the gateway puts usernames into URIs as
    they are stored) and every ``%`` starts an escape ``%XX``."""
    if _BAD_ESCAPE_RE.search(value):
        return False
    try:
        uri = parse_uri(f"sip:{value}@invalid")
    except SipParseError:
        return False
    return (
        isinstance(uri, SipUri)
        and uri.user == value
        and uri.password is None
        and uri.host == "invalid"
        and not uri.params
        and uri.headers is None
    )


def _check_user(value: str) -> str:
    if not 1 <= len(value) <= 128:
        raise ValueError("1-128 characters")
    if not is_sip_user(value):
        raise ValueError(
            "not a SIP user part (RFC 3261 §25.1): no spaces, ':', '@', '<', '>' or '\"'; "
            "write other characters as %XX escapes"
        )
    if "/" in value:
        raise ValueError("'/' is not allowed: the username is a path segment of the API")
    if is_guid(value) or (looks_like_mac(value) and not value.isdigit()):
        raise ValueError("a username must not look like a guid or a MAC address")
    return value


def _check_password(value: str) -> str:
    if not 1 <= len(value) <= 128:
        raise ValueError("1-128 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("control characters are not allowed")
    return value


def _check_clientid(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    return normalise_mac(value)


class DeviceCreate(_DeviceOptions):
    """A new SIP device. ICP-side credentials default to the set-side ones."""

    model_config = STRICT_INPUT

    setside_username: str = Field(description=DEVICE_HELP["setside_username"])
    setside_password: str = Field(description=DEVICE_HELP["setside_password"])
    icp: str = Field(description=DEVICE_HELP["icp"])
    icpside_username: str | None = Field(None, description=DEVICE_HELP["icpside_username"])
    icpside_password: str | None = Field(None, description=DEVICE_HELP["icpside_password"])
    clientid: str | None = Field(None, description=DEVICE_HELP["clientid"])
    description: str = Field(default="", max_length=255, description=DEVICE_HELP["description"])

    _user = field_validator("setside_username")(classmethod(lambda cls, v: _check_user(v)))
    _icpuser = field_validator("icpside_username")(
        classmethod(lambda cls, v: v if v is None else _check_user(v))
    )
    _pw = field_validator("setside_password")(classmethod(lambda cls, v: _check_password(v)))
    _icppw = field_validator("icpside_password")(
        classmethod(lambda cls, v: v if v is None else _check_password(v))
    )
    _mac = field_validator("clientid")(classmethod(lambda cls, v: _check_clientid(v)))


class DeviceUpdate(_DeviceOptions):
    """A partial change to a device; per-device options may be set to null (use global)."""

    model_config = STRICT_INPUT

    setside_username: str | None = _d("setside_username")
    setside_password: str | None = _d("setside_password")
    icp: str | None = _d("icp")
    icpside_username: str | None = _d("icpside_username")
    icpside_password: str | None = _d("icpside_password")
    clientid: str | None = _d("clientid")
    description: str | None = Field(
        default=None, max_length=255, description=DEVICE_HELP["description"]
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _no_nulls(data, _DEVICE_NULLABLE)

    _user = field_validator("setside_username", "icpside_username")(
        classmethod(lambda cls, v: v if v is None else _check_user(v))
    )
    _pw = field_validator("setside_password", "icpside_password")(
        classmethod(lambda cls, v: v if v is None else _check_password(v))
    )
    _mac = field_validator("clientid")(classmethod(lambda cls, v: _check_clientid(v)))


class DeviceRecord(BaseModel):
    """A device as shown to admins and consumers: no passwords."""

    guid: str = Field(description=DEVICE_HELP["guid"])
    setside_username: str = Field(description=DEVICE_HELP["setside_username"])
    icpside_username: str = Field(description=DEVICE_HELP["icpside_username"])
    icp: str = Field(description=DEVICE_HELP["icp"])
    icp_guid: str = Field(description=DEVICE_HELP["icp_guid"])
    clientid: str | None = Field(description=DEVICE_HELP["clientid"])
    description: str = Field(description=DEVICE_HELP["description"])
    challenge_methods: list[str] | None = Field(description=DEVICE_HELP["challenge_methods"])
    options_hb: str | None = Field(description=DEVICE_HELP["options_hb"])
    heartbeat_interval: int | None = Field(description=DEVICE_HELP["heartbeat_interval"])
    prack_support: bool | None = Field(description=DEVICE_HELP["prack_support"])
    set_side_rtp_security: str | None = Field(description=DEVICE_HELP["set_side_rtp_security"])
    setside_codec: str | None = Field(description=DEVICE_HELP["setside_codec"])
    rtpframesize: str | None = Field(description=DEVICE_HELP["rtpframesize"])
    max_calls: int | None = Field(default=None, description=DEVICE_HELP["max_calls"])
    max_call_attempts: int | None = Field(
        default=None, description=DEVICE_HELP["max_call_attempts"]
    )


@dataclass(frozen=True, slots=True)
class DeviceOverrides:
    """A device's own values of per-device options (None: the global option applies).

    What the gateway reads per message or per SDP offer; it travels with the device's
    cached credentials (:class:`DeviceCredentials`), so no hot path reads the store.
    """

    challenge_methods: tuple[str, ...] | None = None
    options_hb: str | None = None
    heartbeat_interval: int | None = None
    prack_support: bool | None = None
    set_side_rtp_security: str | None = None
    setside_codec: str | None = None
    rtpframesize: str | None = None
    max_calls: int | None = None
    max_call_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What the gateway needs for digest authentication on both sides (in clear), and the
    device's own option values (:class:`DeviceOverrides`).

    A slotted frozen dataclass rather than a pydantic model: the gateway caches one per
    provisioned device (issue 13: bytes per device count), and the store builds these
    itself from its own columns, so there is nothing to validate.
    """

    guid: str
    setside_username: str
    setside_password: str
    icpside_username: str
    icpside_password: str
    icp: str  # the ICP's name
    clientid: str | None
    # Per-device overrides the gateway reads on the hot path (None: the global option).
    challenge_methods: list[str] | None = None
    options_hb: str | None = None
    heartbeat_interval: int | None = None
    max_calls: int | None = None
    max_call_attempts: int | None = None
    prack_support: bool | None = None
    set_side_rtp_security: str | None = None
    setside_codec: str | None = None
    rtpframesize: str | None = None
    icp_guid: str = ""  # the ICP's guid ("" when built without one, e.g. in tests)

    @property
    def overrides(self) -> DeviceOverrides:
        return DeviceOverrides(
            tuple(self.challenge_methods) if self.challenge_methods is not None else None,
            self.options_hb,
            self.heartbeat_interval,
            self.prack_support,
            self.set_side_rtp_security,
            self.setside_codec,
            self.rtpframesize,
            self.max_calls,
            self.max_call_attempts,
        )

    def model_copy(self, *, update: dict[str, Any] | None = None) -> DeviceCredentials:
        """A copy with ``update`` applied (pydantic's name, kept for callers and tests)."""
        return replace(self, **(update or {}))

    def model_dump(
        self, *, mode: str = "python", exclude: set[str] | None = None
    ) -> dict[str, Any]:
        """The fields as a dict (the shape the CLI and backups used when this was a
        pydantic record; ``mode`` is accepted for that reason: every value is JSON-able)."""
        skip = exclude or set()
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name in skip:
                continue
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, list) else value
        return out


# -- overrides -------------------------------------------------------------------------


class OverrideCreate(BaseModel):
    model_config = STRICT_INPUT

    file: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    sort_order: int = Field(default=50, ge=0, le=999)
    section: str = Field(min_length=1, max_length=255)
    parameter: str = Field(min_length=1, max_length=255)
    content: str = Field(default="", max_length=4096)


class OverrideRecord(BaseModel):
    guid: str
    file: str
    sort_order: int
    section: str
    parameter: str
    content: str


# -- consumers and tokens --------------------------------------------------------------


# The consumer id rule of the OAuth server (client_key_length and safe_characters of
# limen.api.oauth.LimenValidator).
CONSUMER_KEY_RE = re.compile(r"[A-Za-z0-9._-]{3,64}")

# The resources a consumer permission can name, relative to /mslrest (MBG's paths; the
# API test checks that every consumer-reachable route is under one of them).
PERMISSION_PATHS = (
    "/managetoken/",
    "/mbg/v1/globaloptions/",
    "/mbg/v1/icps/",
    "/mbg/v1/devices/sip/",
    "/mbg/v1/metrics/",
    "/msl/v1/events/",
    "/msl/v1/configuration/",
    "/msl/v1/metrics/",
    "/msl/v1/blades/",
    "/msl/v1/installed_blades/",
    "/msl/v1/sysuser/",
    "/msl/v1/netbackup/",
    "/msl/v1/netrestore/",
    "/msl/v1/amc/",
)


def normalise_permission_path(path: str) -> str:
    """MBG lists permissions as ``MBG/mbg/v1/globaloptions/``, ``/mbg/v1/icps/`` or
    ``Base/managetoken/``: a leading blade name (MBG, Base, ...) is dropped, the result
    starts and ends with ``/`` and is matched against the path after ``/mslrest``."""
    path = path.strip()
    if not path:
        raise ValueError("empty permission path")
    if any(c.isspace() for c in path) or "?" in path or ".." in path:
        raise ValueError(f"bad permission path {path!r}")
    if ":" in path:
        # "/mbg/v1/icps/:RW" is a mode typed into the path: it would match nothing.
        raise ValueError(
            f"permission path {path!r} matches no resource: ':' is not part of a path "
            "(the access mode is read/write; on the command line PATH:rw)"
        )
    if not path.startswith("/"):
        head, sep, rest = path.partition("/")
        if sep and head and head[0].isupper():
            path = rest
        path = "/" + path
    if not path.endswith("/"):
        path += "/"
    if not any(known.startswith(path) or path.startswith(known) for known in PERMISSION_PATHS):
        raise ValueError(
            f"permission path {path!r} matches no resource (known: {', '.join(PERMISSION_PATHS)})"
        )
    return path


class Permission(BaseModel):
    model_config = STRICT_INPUT

    path: str
    read: bool = True
    write: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return normalise_permission_path(value)


class ConsumerCreate(BaseModel):
    model_config = STRICT_INPUT

    name: str
    consumer_key: str | None = Field(default=None, description="defaults to the name")
    shared_secret: str | None = Field(
        None, min_length=8, max_length=128, description="generated (hex) when not given"
    )
    rsa_public_key: str | None = None
    active: bool = True
    permissions: list[Permission] = Field(default_factory=list)

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("consumer_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not CONSUMER_KEY_RE.fullmatch(value):
            raise ValueError("3-64 characters: letters, digits, '.', '_', '-'")
        return value

    @model_validator(mode="after")
    def _can_pair(self) -> ConsumerCreate:
        # The consumer key is the oauth_consumer_key of every signed request; the OAuth
        # server takes 3-64 safe characters (limen.api.oauth.LimenValidator), so a
        # shorter name used as the key could never pair.
        if self.consumer_key is None and not CONSUMER_KEY_RE.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} cannot serve as the consumer id (3-64 letters, digits, "
                "'.', '_', '-'): choose a longer name or give consumer_key"
            )
        return self

    @field_validator("rsa_public_key")
    @classmethod
    def _rsa(cls, value: str | None) -> str | None:
        if not value:
            return None
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(value.encode())
        except ValueError as exc:
            raise ValueError("not a PEM public key") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("not an RSA public key")
        return value.strip() + "\n"


class ConsumerRecord(BaseModel):
    guid: str
    name: str
    consumer_key: str
    active: bool
    has_rsa_key: bool
    permissions: list[Permission]
    created_at: dt.datetime


TOKEN_KINDS = ("temporary", "access")
TOKEN_STATUSES = {
    "temporary": ("pending", "approved", "rejected", "used"),
    "access": ("active", "revoked"),
}
TokenStatus = Literal["pending", "approved", "rejected", "used", "active", "revoked"]


class TokenRecord(BaseModel):
    token: str
    kind: str
    status: str
    consumer: str
    consumer_key: str
    created_at: dt.datetime
    expires_at: dt.datetime
    expired: bool
    decided_by: str | None
    renewed_at: dt.datetime | None
    # The 6-digit verifier of an approved temporary token, shown until the token is used
    # (an admin who approved it may need to read it to the PBX again).
    verifier: str | None = None


class EventRecord(BaseModel):
    guid: str
    created_at: dt.datetime
    kind: str
    severity: str
    source: str
    actor: str
    message: str
    cleared: bool
    cleared_at: dt.datetime | None


class AdminRecord(BaseModel):
    username: str
    active: bool
    created_at: dt.datetime
    last_login: dt.datetime | None


class AdminTokenRecord(BaseModel):
    id: int
    username: str
    kind: str
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used: dt.datetime | None


# The permissions of the seed's figure 15 (what a MiVoice 5000 needs).
MBG_PBX_PERMISSIONS = (
    "Base/managetoken/",
    "/msl/v1/netbackup/",
    "/msl/v1/netrestore/",
    "/msl/v1/events/",
    "/msl/v1/configuration/",
    "/msl/v1/blades/",
    "/msl/v1/installed_blades/",
    "/msl/v1/metrics/",
    "/msl/v1/amc/",
    "/msl/v1/sysuser/",
    "MBG/mbg/v1/globaloptions/",
    "/mbg/v1/metrics/",
    "/mbg/v1/icps/",
    "/mbg/v1/devices/",
)
