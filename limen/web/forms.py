"""HTML form values → the API's pydantic inputs, and what the screens show about options.

The console validates with the very models the API uses (``limen.store.schemas``,
``limen.store.options``): a form is turned into the same dict a JSON client would send.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from limen.store.options import GlobalOptions
from limen.store.schemas import MBG_PBX_PERMISSIONS

# The paths of MBG's consumer permission grid (seed fig. 15), in its order: the same list
# `limen consumer add --mbg-defaults` grants.
MBG_PATHS = MBG_PBX_PERMISSIONS

# The Settings screen as MBG groups it (seed fig. 11), then Limen's media ports.
OPTION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SIP support", ("sip_udp", "sip_tcp", "sip_tls")),
    (
        "Registration mode",
        ("registration_mode", "setside_reg_expiry", "icpside_reg_expiry", "allowed_uri_names"),
    ),
    (
        "Local streaming",
        ("setside_codec", "rtpframesize", "set_side_rtp_security", "icp_side_rtp_security"),
    ),
    (
        "PRACK support",
        ("prack_support", "options_hb", "heartbeat_interval", "challenge_methods"),
    ),
    ("Media ports", ("srtp_port_min", "srtp_port_max")),
    (
        "Call admission control",
        (
            "max_calls_per_device",
            "max_call_attempts_per_minute",
            "max_calls_per_icp",
            "max_calls",
            "max_media_kbps",
        ),
    ),
)


def option_groups() -> list[tuple[str, tuple[str, ...]]]:
    """The groups above, restricted to options that exist, plus any option they do not
    name (added since) under "Other", so that no option is left off the screen."""
    known = set(GlobalOptions.model_fields)
    groups = [(t, tuple(n for n in names if n in known)) for t, names in OPTION_GROUPS]
    listed = {n for _t, names in groups for n in names}
    rest = tuple(n for n in GlobalOptions.model_fields if n not in listed)
    return [g for g in groups if g[1]] + ([("Other", rest)] if rest else [])


OPTION_LABELS = {
    "sip_udp": "UDP",
    "sip_tcp": "TCP",
    "sip_tls": "TCP/TLS",
    "registration_mode": "Registration mode",
    "setside_reg_expiry": "Set-side registration expiry time (s)",
    "icpside_reg_expiry": "ICP-side registration expiry time (s)",
    "allowed_uri_names": "Allowed URI names",
    "setside_codec": "Codec support",
    "rtpframesize": "RTP framesize",
    "set_side_rtp_security": "Set-side RTP security",
    "icp_side_rtp_security": "ICP-side RTP security",
    "prack_support": "PRACK support",
    "options_hb": "Send OPTIONS keepalives",
    "heartbeat_interval": "OPTIONS interval (s)",
    "challenge_methods": "Challenge methods",
    "srtp_port_min": "RTP/SRTP port range: first",
    "srtp_port_max": "RTP/SRTP port range: last",
    "max_calls_per_device": "Calls per device (0: no limit)",
    "max_call_attempts_per_minute": "Call attempts per device per minute",
    "max_calls_per_icp": "Calls per ICP (0: no limit)",
    "max_calls": "Calls in total (0: no limit)",
    "max_media_kbps": "Media bandwidth, kbit/s (0: no limit)",
}


def option_help(name: str) -> str:
    """The option's description from the schema (issue 11), else its field name."""
    field = GlobalOptions.model_fields[name]
    return field.description or name


def option_kind(name: str) -> str:
    annotation = GlobalOptions.model_fields[name].annotation
    if GlobalOptions.choices(name):
        return "choice"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    return "list"


def option_value_from_form(name: str, form: FormData) -> Any:
    kind = option_kind(name)
    raw = form.get(name)
    if kind == "bool":
        return raw is not None
    text = str(raw or "").strip()
    if kind == "int":
        return text
    if kind == "list":
        return [p for p in re.split(r"[,\s]+", text) if p]
    return text


def split_list(text: str) -> list[str]:
    return [p for p in re.split(r"[,\s]+", text.strip()) if p]


def field_errors(exc: ValidationError) -> dict[str, str]:
    """``{field: message}`` for a form (first message per field; "form" for the whole)."""
    out: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        where = str(error["loc"][0]) if error["loc"] else "form"
        message = str(error["msg"]).removeprefix("Value error, ")
        out.setdefault(where, message)
    return out


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional(form: FormData, name: str) -> str | None:
    value = text(form, name)
    return value or None


def checked(form: FormData, name: str) -> bool:
    return form.get(name) is not None


def icp_values(form: FormData) -> dict[str, Any]:
    """An ICP form as the API's ``IcpCreate``/``IcpUpdate`` body."""
    return {
        "name": text(form, "name"),
        "address": text(form, "address"),
        "port": text(form, "port") or "5060",
        "transport": text(form, "transport") or "tcp",
        "type": text(form, "type") or "MiVoice 5000",
        "sip_capabilities": [t for t in ("udp", "tcp", "tls") if checked(form, f"cap_{t}")],
        "link_enabled": checked(form, "link_enabled"),
        "xml_listen_port": text(form, "xml_listen_port") or "4445",
        "xml_destination_port": text(form, "xml_destination_port") or "4445",
        "tls": checked(form, "tls"),
        "serves_configs": checked(form, "serves_configs"),
        "hashes": split_list(text(form, "hashes")),
        "domain": text(form, "domain"),
        "description": text(form, "description"),
    }


def permissions_from_form(form: FormData) -> list[dict[str, Any]]:
    """The Read/Write grid (``read_N``/``write_N`` for ``MBG_PATHS[N]``) plus extra rows
    typed as ``path`` lines ending in ``r``, ``w`` or ``rw``."""
    out: list[dict[str, Any]] = []
    for index, path in enumerate(MBG_PATHS):
        read, write = checked(form, f"read_{index}"), checked(form, f"write_{index}")
        if read or write:
            out.append({"path": path, "read": read, "write": write})
    for line in text(form, "extra_permissions").splitlines():
        parts = line.split()
        if not parts:
            continue
        mode = parts[1].lower() if len(parts) > 1 else "r"
        out.append({"path": parts[0], "read": "r" in mode, "write": "w" in mode})
    return out


# Per-device overrides of the global options (MBG's device fields), with the global
# option each one overrides (for its label and help).
DEVICE_OPTIONS = {
    "challenge_methods": "challenge_methods",
    "options_hb": "options_hb",
    "heartbeat_interval": "heartbeat_interval",
    "prack_support": "prack_support",
    "set_side_rtp_security": "set_side_rtp_security",
    "setside_codec": "setside_codec",
    "rtpframesize": "rtpframesize",
    "max_calls": "max_calls_per_device",
    "max_call_attempts": "max_call_attempts_per_minute",
}


def device_option_rows(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The device form's option rows: a choice list ("" = global) or free text."""
    rows = []
    for name, global_name in DEVICE_OPTIONS.items():
        value = values.get(name)
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        choices: tuple[str, ...] = GlobalOptions.choices(global_name)
        if global_name == "prack_support":
            choices = ("true", "false")
        rows.append(
            {
                "name": name,
                "label": OPTION_LABELS.get(global_name, name),
                "choices": choices,
                "value": "" if value is None else str(value),
            }
        )
    return rows
