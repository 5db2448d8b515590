"""Mitel/Aastra 6800i configuration files, rendered by Limen (issue 6).

Two files, in the phones' ``key: value`` line format (one parameter per line, ``#``
starts a comment line):

- ``aastra.cfg``, shared by every phone of an ICP: where to register (Limen's public
  address, SIP/TLS port 5061, ``sip transport protocol: 4`` = TLS), mandatory SRTP
  (``sip srtp mode: 2``), and where to fetch files later (``https server`` / ``https
  port`` / ``https path`` = the ICP's hash); optionally the trust-list file to download.
- ``<MAC>.cfg``, per phone: SIP line 1 with the **set-side** credentials (what the phone
  uses toward Limen): auth name, user name, password, display and screen name.

Values are validated, not escaped: the format has no escape for a line break, so a value
holding CR, LF or any other control character (C0, DEL, C1, U+2028/U+2029), or leading /
trailing white space (which the phone would strip), is refused with
:class:`ConfigValueError` naming the field — never written, so a device field cannot add
a line (``...\\nsip line1 password: x``) to a phone's file. ``#`` and ``:`` inside a value
are kept as they are: the phone treats ``#`` as a comment only at the start of a line and
splits a line at its first ``:``, which always belongs to our key.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limen.store.schemas import normalise_mac

if TYPE_CHECKING:
    from limen.config import Settings
    from limen.store import Store
    from limen.store.schemas import DeviceCredentials, DeviceRecord, IcpRecord

SHARED_FILE = "aastra.cfg"
CA_FILE = "limen-ca.pem"
TRANSPORT_TLS = 4
SRTP_MANDATORY = 2


class ConfigValueError(ValueError):
    """A value that cannot go into a phone's file; ``field`` names the parameter."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_value(field: str, value: str | int) -> str:
    """The value as written, or :class:`ConfigValueError`."""
    text = str(value)
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ConfigValueError(field, f"control character U+{ord(char):04X} is not allowed")
    if text != text.strip():
        raise ConfigValueError(field, "leading or trailing white space is not allowed")
    return text


def _render(title: str, pairs: list[tuple[str, str | int]]) -> str:
    body = [f"{key}: {check_value(key, value)}" for key, value in pairs]
    head = [f"# {check_value('comment', title)}", "# Rendered by Limen; edits are overwritten."]
    return "\n".join(head + body) + "\n"


@dataclass(frozen=True, slots=True)
class PhoneProfile:
    """What every phone of one ICP shares (``aastra.cfg``)."""

    icp: str
    server: str
    sip_port: int
    https_port: int
    https_path: str
    trusted_certificates: str = ""


@dataclass(frozen=True, slots=True)
class PhoneLine:
    """Line 1 of one phone (``<MAC>.cfg``), set-side credentials."""

    mac: str
    auth_name: str
    user_name: str
    password: str
    display_name: str


def render_shared(profile: PhoneProfile) -> str:
    pairs: list[tuple[str, str | int]] = [
        ("download protocol", "HTTPS"),
        ("https server", profile.server),
        ("https port", profile.https_port),
        ("https path", profile.https_path),
        ("sip proxy ip", profile.server),
        ("sip proxy port", profile.sip_port),
        ("sip registrar ip", profile.server),
        ("sip registrar port", profile.sip_port),
        ("sip outbound proxy", profile.server),
        ("sip outbound proxy port", profile.sip_port),
        ("sip transport protocol", TRANSPORT_TLS),
        ("sip srtp mode", SRTP_MANDATORY),
    ]
    if profile.trusted_certificates:
        pairs.append(("sips trusted certificates", profile.trusted_certificates))
    return _render(f"{SHARED_FILE}: shared settings of the phones of ICP {profile.icp}", pairs)


def render_phone(line: PhoneLine) -> str:
    return _render(
        f"{line.mac}.cfg: line 1 of {line.user_name}",
        [
            ("sip line1 auth name", line.auth_name),
            ("sip line1 user name", line.user_name),
            ("sip line1 password", line.password),
            ("sip line1 display name", line.display_name),
            ("sip line1 screen name", line.display_name),
        ],
    )


def public_address(settings: Settings) -> str:
    """The address phones and the PBX's TMA file are given: the public IP, or the FQDN
    when the configuration says it resolves for phones (``Settings.set_side_host``)."""
    address = settings.set_side_host
    if not address:
        raise ValueError("set public_fqdn or public_ip in the configuration first")
    return address


def profile_for(settings: Settings, icp: IcpRecord, *, with_ca: bool = True) -> PhoneProfile:
    if not icp.hashes:
        raise ValueError(f"ICP {icp.name} has no provisioning hash")
    return PhoneProfile(
        icp=icp.name,
        server=public_address(settings),
        sip_port=settings.sip.tls_port,
        https_port=settings.provisioning.port,
        https_path=icp.hashes[0],
        trusted_certificates=CA_FILE if with_ca else "",
    )


def line_for(device: DeviceRecord, credentials: DeviceCredentials) -> PhoneLine:
    if device.clientid is None:
        raise ValueError(f"device {device.setside_username} has no MAC address")
    display = device.description.strip() or device.setside_username
    return PhoneLine(
        mac=normalise_mac(device.clientid),
        auth_name=credentials.setside_username,
        user_name=credentials.setside_username,
        password=credentials.setside_password,
        display_name=display,
    )


def phone_file(store: Store, mac: str) -> tuple[str, str]:
    """(``<MAC>.cfg``, its text) for the device with this MAC (store errors propagate)."""
    device = store.devices.get(normalise_mac(mac))
    text = render_phone(line_for(device, store.devices.credentials(device.guid)))
    return f"{normalise_mac(mac)}.cfg", text


def shared_file(store: Store, settings: Settings, icp: str) -> tuple[str, str]:
    """(``aastra.cfg``, its text) for the phones of ``icp`` (name or guid)."""
    from limen.certs import ca_paths

    record = store.icps.get(icp)
    with_ca = ca_paths(settings)[0].exists()
    return SHARED_FILE, render_shared(profile_for(settings, record, with_ca=with_ca))
