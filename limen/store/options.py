"""Global options: one typed record, defaults from the seed's figure 11 (MBG "Settings").

Stored as one row per option (name → JSON value) so that adding an option needs no
migration; a missing row means the default. Per-device values (``limen.store.schemas``)
override some of them for one phone.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

RegistrationMode = Literal["Max Set-Side", "Max ICP-Side", "Pass-through"]
CodecSupport = Literal["Unrestricted", "G.711 only", "G.722 only", "G.729 only", "Opus only"]
RtpFrameSize = Literal["Dynamic", "10", "20", "30", "40", "60"]
RtpSecurity = Literal["Require", "Prefer", "Disable"]
KeepaliveMode = Literal["Always", "Only behind NAT", "Never"]
SIP_METHODS = (
    "REGISTER",
    "INVITE",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "OPTIONS",
    "PUBLISH",
    "INFO",
    "UPDATE",
    "BYE",
)


def normalise_methods(value: Any) -> Any:
    """Accept "INVITE,subscribe" or a list; uppercase, drop duplicates, check names."""
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list):
        return value
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError("challenge methods are SIP method names")
        method = item.strip().upper()
        if method not in SIP_METHODS:
            raise ValueError(f"unknown SIP method {item!r} (one of {', '.join(SIP_METHODS)})")
        if method not in out:
            out.append(method)
    return out


# What each setting does and which values it takes: one text, used by the pydantic
# Field descriptions (hence the API's schema), `limen options show` and `limen device
# show`. Global options and devices share names (MBG's device field names).
SETTING_HELP: dict[str, str] = {
    "sip_udp": "Phones may use SIP over UDP (MBG 'SIP support: UDP'; seed figure 11: off). "
    "The one switch for UDP from phones: off answers 403 Transport Not Allowed. on/off.",
    "sip_tcp": "Phones may use SIP over TCP (figure 11: on). on/off.",
    "sip_tls": "Phones may use SIP over TLS, port 5061 (figure 11: on). on/off.",
    "registration_mode": "How registrations are split between phone and PBX. Max Set-Side "
    "(figure 11): phones refresh with Limen at setside_reg_expiry, Limen keeps one "
    "registration per phone at the PBX at icpside_reg_expiry. Limen implements Max "
    "Set-Side; Max ICP-Side and Pass-through are accepted for MBG compatibility and behave "
    "as Max Set-Side.",
    "setside_reg_expiry": "Longest registration granted to phones, seconds (60-86400; "
    "figure 11: 900). Shorter means faster detection of vanished phones, more traffic.",
    "icpside_reg_expiry": "Expiry Limen asks the PBX for on each phone's behalf, seconds "
    "(60-86400; default 3600).",
    "allowed_uri_names": "Host names / addresses phones may put in request URIs besides "
    "Limen's own (public_fqdn, public_ip); comma-separated. Figure 11: the public FQDN "
    "when phones are not redirected by RCS. Empty: only Limen's own names.",
    "setside_codec": "Codecs offered toward phones (MBG 'Codec support'; formerly codec_support)"
    ": Unrestricted (figure 11), G.711 only, G.722 only, G.729 only, Opus only.",
    "rtpframesize": "RTP packetisation time, ms (MBG 'RTP frame size'; formerly rtp_frame_size): "
    "Dynamic (figure 11: keep what the endpoints negotiate), 10, 20, 30, 40, 60. Stored "
    "for MBG compatibility: Limen relays the endpoints' a=ptime unchanged for now.",
    "set_side_rtp_security": "SRTP toward phones: Require (figure 11: plain RTP offers are "
    "refused with 488), Prefer (SRTP when the phone offers it), Disable (plain RTP only).",
    "icp_side_rtp_security": "SRTP toward the PBX: Prefer (figure 11: offer SRTP, fall back to "
    "plain RTP when the PBX answers 488; the refusal is remembered per ICP for a while), "
    "Require, Disable (plain RTP: one INVITE per call to a PBX without SRTP).",
    "prack_support": "Reliable provisional responses (RFC 3262, 100rel/PRACK) relayed end to "
    "end (figure 11: on). Off: Limen strips 100rel and refuses INVITEs requiring it. on/off. "
    "(The global value applies; a per-device value is stored but not yet applied.)",
    "options_hb": "SIP OPTIONS keepalives from Limen to registered phones (MBG 'OPTIONS "
    "keepalive'; formerly options_keepalive): Always, Only behind NAT (figure 11: keeps the "
    "home router's NAT binding open), Never.",
    "heartbeat_interval": "Seconds between OPTIONS keepalives (1-180; figure 11: 20; formerly "
    "options_interval). Must stay below the home routers' UDP/TCP NAT timeout.",
    "challenge_methods": "SIP methods from phones that Limen challenges with digest "
    "authentication (figure 11: INVITE, SUBSCRIBE; REGISTER is always challenged); "
    "comma-separated list of REGISTER, INVITE, SUBSCRIBE, NOTIFY, MESSAGE, REFER, OPTIONS, "
    "PUBLISH, INFO, UPDATE, BYE.",
    "srtp_port_min": "Lowest RTP/SRTP relay port (even; 1024-65535; default 20000, as on MBG). "
    "Each call uses 4 ports (RTP + RTCP per side); open the range in the firewall.",
    "srtp_port_max": "Highest RTP/SRTP relay port (default 31000).",
    "max_calls_per_device": "Call admission: calls a phone may have in progress at once; "
    "devices may override it (0 = no limit; default 4).",
    "max_call_attempts_per_minute": "Call admission: call attempts a phone may start per "
    "rolling minute; devices may override it (0 = no limit; default 20).",
    "max_calls_per_icp": "Call admission: calls in progress per ICP (0 = no limit).",
    "max_calls": "Call admission: calls in progress in total (0 = no limit).",
    "max_media_kbps": "Call admission: relayed media in kbit/s, measured, above which new "
    "calls get 503 (0 = no limit).",
}

# Names used before issue 11 (global options had their own names); still accepted on
# input, by the store (rows written under them) and in `limen options set`.
OPTION_ALIASES: dict[str, str] = {
    "options_keepalive": "options_hb",
    "options_interval": "heartbeat_interval",
    "rtp_frame_size": "rtpframesize",
    "codec_support": "setside_codec",
}


def canonical_option(name: str) -> str:
    return OPTION_ALIASES.get(name, name)


def _help(name: str) -> str:
    return SETTING_HELP[name]


class GlobalOptions(BaseModel):
    """MBG's SIP settings screen (seed figure 11). Names are MBG's API field names (the
    per-device ones, so that one setting has one name); values are MBG's labels."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    sip_udp: bool = Field(default=False, description=_help("sip_udp"))
    sip_tcp: bool = Field(default=True, description=_help("sip_tcp"))
    sip_tls: bool = Field(default=True, description=_help("sip_tls"))
    registration_mode: RegistrationMode = Field(
        default="Max Set-Side", description=_help("registration_mode")
    )
    setside_reg_expiry: int = Field(
        default=900, ge=60, le=86400, description=_help("setside_reg_expiry")
    )
    icpside_reg_expiry: int = Field(
        default=3600, ge=60, le=86400, description=_help("icpside_reg_expiry")
    )
    allowed_uri_names: list[str] = Field(
        default_factory=list, description=_help("allowed_uri_names")
    )
    setside_codec: CodecSupport = Field(default="Unrestricted", description=_help("setside_codec"))
    rtpframesize: RtpFrameSize = Field(default="Dynamic", description=_help("rtpframesize"))
    set_side_rtp_security: RtpSecurity = Field(
        default="Require", description=_help("set_side_rtp_security")
    )
    icp_side_rtp_security: RtpSecurity = Field(
        default="Prefer", description=_help("icp_side_rtp_security")
    )
    prack_support: bool = Field(default=True, description=_help("prack_support"))
    options_hb: KeepaliveMode = Field(default="Only behind NAT", description=_help("options_hb"))
    heartbeat_interval: int = Field(
        default=20, ge=1, le=180, description=_help("heartbeat_interval")
    )
    challenge_methods: list[str] = Field(
        default_factory=lambda: ["INVITE", "SUBSCRIBE"], description=_help("challenge_methods")
    )
    srtp_port_min: int = Field(default=20000, ge=1024, le=65535, description=_help("srtp_port_min"))
    srtp_port_max: int = Field(default=31000, ge=1024, le=65535, description=_help("srtp_port_max"))
    # Call admission control (MBG row 29; issue 10).
    max_calls_per_device: int = Field(
        default=4, ge=0, le=1000, description=_help("max_calls_per_device")
    )
    max_call_attempts_per_minute: int = Field(
        default=20, ge=0, le=10000, description=_help("max_call_attempts_per_minute")
    )
    max_calls_per_icp: int = Field(
        default=0, ge=0, le=1_000_000, description=_help("max_calls_per_icp")
    )
    max_calls: int = Field(default=0, ge=0, le=1_000_000, description=_help("max_calls"))
    max_media_kbps: int = Field(
        default=0, ge=0, le=100_000_000, description=_help("max_media_kbps")
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        """Old names (OPTION_ALIASES) are read as the new ones; a new name given too wins."""
        if isinstance(data, dict) and any(k in OPTION_ALIASES for k in data):
            out = {k: v for k, v in data.items() if k not in OPTION_ALIASES}
            for old, new in OPTION_ALIASES.items():
                if old in data and new not in out:
                    out[new] = data[old]
            return out
        return data

    @field_validator("rtpframesize", mode="before")
    @classmethod
    def _frame(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("challenge_methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        return normalise_methods(value)

    @field_validator("allowed_uri_names", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_uri_names")
    @classmethod
    def _sip_hosts(cls, value: list[str]) -> list[str]:
        # These names are compared with Request-URI hosts: each must be a host the SIP
        # layer can parse (imported here: limen.store.schemas imports this module).
        from limen.store.schemas import is_sip_host

        for name in value:
            if not is_sip_host(name):
                raise ValueError(f"{name!r} is not a SIP host name or address")
        return value

    @model_validator(mode="after")
    def _port_range(self) -> GlobalOptions:
        if self.srtp_port_min >= self.srtp_port_max:
            raise ValueError("srtp_port_min must be below srtp_port_max")
        if self.srtp_port_min % 2:
            raise ValueError("srtp_port_min must be even (RTP even, RTCP odd)")
        return self

    @classmethod
    def names(cls) -> list[str]:
        return list(cls.model_fields)

    @classmethod
    def describe(cls, name: str) -> str:
        return cls.model_fields[canonical_option(name)].description or ""

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """The allowed labels of an enumerated option (empty for free values)."""
        annotation = cls.model_fields[name].annotation
        return tuple(get_args(annotation)) if get_origin(annotation) is Literal else ()


def parse_option_text(name: str, text: str) -> Any:
    """Turn a command-line VALUE into the option's type: JSON if it parses as such,
    "a,b" for lists, on/off/true/false for booleans, else the text itself."""
    name = canonical_option(name)
    if name not in GlobalOptions.model_fields:
        raise KeyError(name)
    annotation = GlobalOptions.model_fields[name].annotation
    value: Any = text
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if annotation is int and isinstance(value, str):
        return TypeAdapter(int).validate_python(value)
    if isinstance(value, (int, float)) and annotation not in (int, bool):
        value = text
    return value
