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


class GlobalOptions(BaseModel):
    """MBG's SIP settings screen. Field names are Limen's; values are MBG's labels."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    sip_udp: bool = False
    sip_tcp: bool = True
    sip_tls: bool = True
    registration_mode: RegistrationMode = "Max Set-Side"
    setside_reg_expiry: int = Field(default=900, ge=60, le=86400)
    icpside_reg_expiry: int = Field(default=3600, ge=60, le=86400)
    # Host names / addresses phones may put in request URIs (public FQDN when no RCS).
    allowed_uri_names: list[str] = Field(default_factory=list)
    codec_support: CodecSupport = "Unrestricted"
    rtp_frame_size: RtpFrameSize = "Dynamic"
    set_side_rtp_security: RtpSecurity = "Require"
    icp_side_rtp_security: RtpSecurity = "Prefer"
    prack_support: bool = True
    options_keepalive: KeepaliveMode = "Only behind NAT"
    options_interval: int = Field(default=20, ge=1, le=180)
    challenge_methods: list[str] = Field(default_factory=lambda: ["INVITE", "SUBSCRIBE"])
    srtp_port_min: int = Field(default=20000, ge=1024, le=65535)
    srtp_port_max: int = Field(default=31000, ge=1024, le=65535)
    # Call admission control (MBG row 29; issue 10). 0: no limit. Devices may override
    # the two per-device values.
    max_calls_per_device: int = Field(default=4, ge=0, le=1000)
    max_call_attempts_per_minute: int = Field(default=20, ge=0, le=10000)
    max_calls_per_icp: int = Field(default=0, ge=0, le=1_000_000)
    max_calls: int = Field(default=0, ge=0, le=1_000_000)
    max_media_kbps: int = Field(default=0, ge=0, le=100_000_000)

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
    def choices(cls, name: str) -> tuple[str, ...]:
        """The allowed labels of an enumerated option (empty for free values)."""
        annotation = cls.model_fields[name].annotation
        return tuple(get_args(annotation)) if get_origin(annotation) is Literal else ()


def parse_option_text(name: str, text: str) -> Any:
    """Turn a command-line VALUE into the option's type: JSON if it parses as such,
    "a,b" for lists, on/off/true/false for booleans, else the text itself."""
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
