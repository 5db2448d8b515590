"""What every part of the gateway shares: the two sides, local addresses, configuration.

Limen sits between two networks. The **set side** faces the phones (the internet, or a
home behind NAT); the **ICP side** faces the PBX on the LAN. Every header Limen writes on
one side names only that side's address (topology hiding): ``public_fqdn``/``public_ip``
toward phones, ``lan_ip`` toward the PBX.

:class:`Directory` is the gateway's in-memory copy of the store's configuration (ICPs,
devices with their credentials, global options), reloaded when the store announces a
change, so the hot path never waits on the database.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limen.config import Settings
from limen.gateway.sides import Side  # re-exported: most of the gateway imports it from here
from limen.sip.addressing import Destination, Source, Transport, bracket
from limen.sip.grammar import Params
from limen.sip.headers import NameAddr, Via
from limen.sip.transaction import new_via
from limen.sip.uri import SipUri
from limen.store import GlobalOptions, Store
from limen.store.schemas import DeviceCredentials, IcpRecord

if TYPE_CHECKING:
    from limen.gateway.icplink import IcpLinks
    from limen.gateway.media import MediaController
    from limen.gateway.stack import SipStack

log = logging.getLogger("limen.gateway")


# DeviceRecord fields that override a global option of the same name (None: the global).
DEVICE_OVERRIDES = (
    "challenge_methods",
    "options_hb",
    "heartbeat_interval",
    "prack_support",
    "set_side_rtp_security",
    "setside_codec",
    "rtpframesize",
    "max_calls",
    "max_call_attempts",
)
_NO_OVERRIDES: Mapping[str, Any] = {}


@dataclass
class Directory:
    """Configuration the gateway reads on every message, cached from the store."""

    options: GlobalOptions = field(default_factory=GlobalOptions)
    icps: dict[str, IcpRecord] = field(default_factory=dict)  # by guid
    devices: dict[str, DeviceCredentials] = field(default_factory=dict)  # by guid
    _by_setside: dict[str, DeviceCredentials] = field(default_factory=dict)
    _icp_by_host: dict[str, IcpRecord] = field(default_factory=dict)
    # Resolved target addresses of ICPs addressed by name (issue 15), by ICP guid; kept
    # across reloads (the ICP links update them when a name resolves again).
    _icp_targets: dict[str, list[str]] = field(default_factory=dict)
    # Per-device overrides of the global options (only the fields a device sets), by guid.
    _overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store) -> Directory:
        directory = cls()
        directory.reload(store)
        return directory

    def reload(self, store: Store) -> None:
        self.options = store.options.get()
        self.icps = {icp.guid: icp for icp in store.icps.list()}
        self.devices = {dev.guid: dev for dev in store.devices.all_credentials()}
        self._by_setside = {d.setside_username.lower(): d for d in self.devices.values()}
        self._icp_by_host = {icp.address.lower().strip("[]"): icp for icp in self.icps.values()}
        self._overrides = {
            record.guid: {
                name: value
                for name in DEVICE_OVERRIDES
                if (value := getattr(record, name)) is not None
            }
            for record in store.devices.list()
        }

    def overrides(self, device_guid: str) -> Mapping[str, Any]:
        """The device's overrides of the global options ({} for none, or an unknown
        device), from memory: the hot path never reads the store for them."""
        return self._overrides.get(device_guid, _NO_OVERRIDES)

    def device_by_setside(self, username: str) -> DeviceCredentials | None:
        return self._by_setside.get(username.lower())

    def icp_of(self, device: DeviceCredentials) -> IcpRecord | None:
        icp = self.icps.get(device.icp)
        if icp is not None:
            return icp
        return next((i for i in self.icps.values() if i.name == device.icp), None)

    def icp_at(self, host: str) -> IcpRecord | None:
        host = host.lower().strip("[]")
        found = self._icp_by_host.get(host)
        if found is None and self._icp_targets:
            for guid, hosts in self._icp_targets.items():
                if host in hosts:
                    return self.icps.get(guid)
        return found

    def set_icp_targets(self, icp_guid: str, hosts: list[str]) -> None:
        """The addresses an ICP's name resolved to: messages from them are ICP side."""
        self._icp_targets[icp_guid] = [h.lower().strip("[]") for h in hosts]


@dataclass
class LocalAddresses:
    """The addresses Limen writes in Via / Contact / Record-Route, per side, and the
    ports its listeners actually bound (one set of listeners serves both sides)."""

    set_host: str
    icp_host: str
    ports: dict[Transport, int] = field(default_factory=dict)

    def host(self, side: Side) -> str:
        return self.set_host if side is Side.SET else self.icp_host

    def port(self, transport: Transport) -> int:
        default = 5061 if transport is Transport.TLS else 5060
        return self.ports.get(transport, default)

    def via(self, side: Side, transport: Transport) -> Via:
        """A top Via with a fresh branch and ``rport`` (RFC 3581)."""
        return new_via(transport, self._bracketed(side), self.port(transport))

    def contact(self, side: Side, transport: Transport, user: str | None = None) -> NameAddr:
        # sip: with transport=tls rather than sips: (RFC 5630 §3.1.3 deprecates the
        # hop-by-hop reading of sips; phones in the field expect transport=tls).
        params = (
            Params() if transport is Transport.UDP else Params((("transport", transport.value),))
        )
        return NameAddr(
            SipUri(self._bracketed(side), "sip", user, None, self.port(transport), params)
        )

    def _bracketed(self, side: Side) -> str:
        return bracket(self.host(side))


def route_source_address(host: str, port: int = 5060) -> str | None:
    """The local address the kernel would use to reach ``host`` (no packet is sent:
    connecting a UDP socket only consults the routing table)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host.strip("[]"), port))
            return str(sock.getsockname()[0])
    except OSError:
        return None


def local_addresses(settings: Settings, directory: Directory) -> LocalAddresses:
    """Set side: what phones can reach (``Settings.set_side_host``: the public IP unless
    the FQDN is declared resolvable for phones). ICP side: ``sip.lan_ip`` if configured, else the
    address the routing table picks toward the first ICP, else the bind address."""
    set_host = settings.set_side_host or settings.sip.bind
    icp_host = settings.sip.lan_ip
    if not icp_host:
        for icp in directory.icps.values():
            found = route_source_address(icp.address, icp.port)
            if found:
                icp_host = found
                break
    if not icp_host:
        icp_host = settings.sip.bind if settings.sip.bind not in ("0.0.0.0", "::") else set_host
    return LocalAddresses(set_host=set_host, icp_host=icp_host)


def side_of(source: Source, directory: Directory) -> Side:
    """A message from a configured ICP's address is ICP side; everything else set side."""
    return Side.ICP if directory.icp_at(source.remote[0]) is not None else Side.SET


def icp_destination(
    icp: IcpRecord,
    links: IcpLinks | None = None,
    *,
    size: int = 0,
    sticky: Destination | None = None,
) -> Destination | None:
    """Where a request to ``icp`` goes now. With the ICP links (issue 15): the target
    chosen by RFC 3263 and the link state (None while a name has not resolved yet);
    without them, the ICP's address as configured (an IP literal)."""
    if links is not None:
        return links.destination(icp, size=size, sticky=sticky)
    try:
        transport = Transport(icp.transport.lower())
    except ValueError:
        transport = Transport.UDP
    return Destination(transport, icp.address.strip("[]"), icp.port)


@dataclass
class GatewayContext:
    """Everything a gateway part needs, passed explicitly (no module-level singletons)."""

    settings: Settings
    stack: SipStack
    directory: Directory
    addresses: LocalAddresses
    media: MediaController
    store: Store | None = None
    links: IcpLinks | None = None  # the ICP links (targets, failover, link state)

    @property
    def options(self) -> GlobalOptions:
        return self.directory.options

    @property
    def realm(self) -> str:
        return self.settings.sip.realm or self.settings.public_fqdn or "limen"

    def server_headers(self) -> list[tuple[str, str]]:
        header = self.settings.sip.server_header
        return [("Server", header)] if header else []
