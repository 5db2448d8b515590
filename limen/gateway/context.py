"""What every part of the gateway shares: the two sides, local addresses, configuration.

Limen sits between two networks. The **set side** faces the phones (the internet, or a
home behind NAT); the **ICP side** faces the PBX on the LAN. Every header Limen writes on
one side names only that side's address (topology hiding): ``public_fqdn``/``public_ip``
toward phones, ``lan_ip`` toward the PBX.

:class:`Directory` is the gateway's in-memory copy of the store's configuration (ICPs,
devices with their credentials and own option values, global options), updated entry by
entry when the store announces a change, so the hot path never waits on the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from limen.config import Settings
from limen.gateway.sides import Side  # re-exported: most of the gateway imports it from here
from limen.sip.addressing import Destination, Source, Transport, bracket
from limen.sip.grammar import Params
from limen.sip.headers import NameAddr, Via
from limen.sip.transaction import new_via
from limen.sip.uri import SipUri
from limen.store import Change, GlobalOptions, Store
from limen.store.schemas import DeviceCredentials, DeviceOverrides, IcpRecord

if TYPE_CHECKING:
    from limen.gateway.icplink import IcpLinks
    from limen.gateway.media import MediaController
    from limen.gateway.stack import SipStack

log = logging.getLogger("limen.gateway")


# Changes to more devices than this share of the cache reload it whole (a CSV import):
# one streamed SELECT is cheaper than many keyed ones.
FULL_RELOAD_SHARE = 0.5
# How far back a sync after another process's change re-reads devices by ``updated_at``:
# covers the writer's clock being behind ours (cluster nodes) and commits that were in
# flight when the previous sync read the table.
SYNC_MARGIN = dt.timedelta(seconds=30)


@dataclass(slots=True)
class DirectoryPatch:
    """What changed in the store, read off the event loop (:meth:`Directory.fetch`), to be
    applied on it (:meth:`Directory.apply`). Only the rows concerned are read."""

    options: GlobalOptions | None = None
    icps: list[IcpRecord] | None = None  # every ICP, when any ICP changed
    devices: list[DeviceCredentials] = field(default_factory=list)  # created or changed
    deleted: set[str] = field(default_factory=set)  # device guids
    present: set[str] | None = None  # every device guid (a sync): others were deleted
    full: bool = False  # ``devices`` is every device: replace the cache
    synced_at: dt.datetime | None = None


@dataclass(slots=True)
class DirectoryDelta:
    """What :meth:`Directory.apply` changed: device guids added, changed, removed."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    icps_changed: bool = False
    full: bool = False


def _index_key(username: str) -> str:
    low = username.lower()
    return username if low == username else low  # one string object when already lower


@dataclass
class Directory:
    """Configuration the gateway reads on every message, cached from the store.

    A change to the store updates only what it concerns (issue 13): one device's edit
    re-reads and re-decrypts that device, not the 10,000 others. Each cached device
    (:class:`DeviceCredentials`) carries its own option values (:meth:`overrides`), so
    no hot path (SDP offer, admission, keepalive, challenge) reads the store.
    """

    options: GlobalOptions = field(default_factory=GlobalOptions)
    icps: dict[str, IcpRecord] = field(default_factory=dict)  # by guid
    devices: dict[str, DeviceCredentials] = field(default_factory=dict)  # by guid
    _by_setside: dict[str, DeviceCredentials] = field(default_factory=dict)
    _icp_by_host: dict[str, IcpRecord] = field(default_factory=dict)
    _icp_by_name: dict[str, IcpRecord] = field(default_factory=dict)
    # Resolved target addresses of ICPs addressed by name (issue 15), by ICP guid; kept
    # across reloads (the ICP links update them when a name resolves again).
    _icp_targets: dict[str, list[str]] = field(default_factory=dict)
    # When the devices were last read whole or synced (this process's clock, UTC).
    synced_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.devices and not self._by_setside:
            self._by_setside = {_index_key(d.setside_username): d for d in self.devices.values()}
        self._index_icps()

    @classmethod
    def load(cls, store: Store) -> Directory:
        directory = cls()
        directory.reload(store)
        return directory

    def reload(self, store: Store) -> None:
        """Read everything again (start-up; a bulk change)."""
        self.apply(self.fetch(store, None))

    # -- incremental updates ------------------------------------------------------------
    def fetch(self, store: Store, changes: Iterable[Change] | None) -> DirectoryPatch:
        """Read what ``changes`` concern (None: everything). Blocking: call it off the loop.

        A change with key ``"*"`` (another process changed something: the store's
        configuration version moved) syncs: every ICP and the options, the set of device
        guids (deletions), and the devices whose ``updated_at`` is recent.
        """
        patch = DirectoryPatch()
        now = dt.datetime.now(dt.UTC)
        if changes is None:
            patch.options = store.options.get()
            patch.icps = store.icps.list()
            patch.devices = list(store.devices.iter_credentials())
            patch.full = True
            patch.synced_at = now
            return patch
        wanted: set[str] = set()
        sync = options = icps = False
        for change in changes:
            if change.key == "*":
                sync = True
            elif change.resource == "options":
                options = True
            elif change.resource == "icp":
                icps = True
            elif change.resource == "device":
                if change.action == "deleted":
                    patch.deleted.add(change.key)
                    wanted.discard(change.key)
                else:
                    wanted.add(change.key)
                    patch.deleted.discard(change.key)
        if sync:
            options = icps = True
            patch.present = store.devices.guids()
            since = (self.synced_at or now) - SYNC_MARGIN
            patch.devices = list(store.devices.iter_credentials(changed_since=since))
            patch.synced_at = now
            seen = {d.guid for d in patch.devices}
            wanted -= seen
        if options:
            patch.options = store.options.get()
        if icps:
            patch.icps = store.icps.list()
            # Devices carry their ICP's name: after a rename, build their new records
            # here, off the loop (a snapshot of the cache; the loop only swaps them in).
            names = {icp.guid: icp.name for icp in patch.icps}
            fresh = wanted | {d.guid for d in patch.devices}  # read anew: already right
            patch.devices.extend(
                replace(d, icp=names[d.icp_guid])
                for d in list(self.devices.values())
                if names.get(d.icp_guid, d.icp) != d.icp and d.guid not in fresh
            )
        if len(wanted) > FULL_RELOAD_SHARE * max(len(self.devices), 1) and len(wanted) > 100:
            return self.fetch(store, None)
        if wanted:
            patch.devices.extend(store.devices.iter_credentials(wanted))
            # Created then deleted before this read: the change said created, the row is gone.
            found = {d.guid for d in patch.devices}
            patch.deleted.update(g for g in wanted if g not in found)
        return patch

    def apply(self, patch: DirectoryPatch) -> DirectoryDelta:
        """Apply a fetched patch (on the loop: plain dict updates, no I/O)."""
        delta = DirectoryDelta(full=patch.full)
        if patch.options is not None:
            self.options = patch.options
        if patch.icps is not None:
            self._set_icps(patch.icps)
            delta.icps_changed = True
        if patch.full:
            old = self.devices
            self.devices = {d.guid: d for d in patch.devices}
            self._by_setside = {_index_key(d.setside_username): d for d in patch.devices}
            delta.removed = [g for g in old if g not in self.devices]
            delta.added = [g for g in self.devices if g not in old]
            delta.changed = [g for g in self.devices if g in old]
        else:
            gone = set(patch.deleted)
            if patch.present is not None:
                gone.update(g for g in self.devices if g not in patch.present)
            for guid in gone:
                if self._drop_device(guid):
                    delta.removed.append(guid)
            for device in patch.devices:
                if device.guid in gone:
                    continue
                if self._put_device(device):
                    delta.changed.append(device.guid)
                else:
                    delta.added.append(device.guid)
        if patch.synced_at is not None:
            self.synced_at = patch.synced_at
        if delta.icps_changed:
            self._rename_icps()
        return delta

    def _put_device(self, device: DeviceCredentials) -> bool:
        """Insert or replace one device and its username index; True if it replaced one."""
        old = self.devices.get(device.guid)
        if old is not None:
            key = _index_key(old.setside_username)
            if self._by_setside.get(key) is old:
                del self._by_setside[key]
        self.devices[device.guid] = device
        self._by_setside[_index_key(device.setside_username)] = device
        return old is not None

    def _drop_device(self, guid: str) -> bool:
        old = self.devices.pop(guid, None)
        if old is None:
            return False
        key = _index_key(old.setside_username)
        if self._by_setside.get(key) is old:
            del self._by_setside[key]
        return True

    def _set_icps(self, icps: Iterable[IcpRecord]) -> None:
        self.icps = {icp.guid: icp for icp in icps}
        self._index_icps()

    def _index_icps(self) -> None:
        self._icp_by_host = {icp.address.lower().strip("[]"): icp for icp in self.icps.values()}
        self._icp_by_name = {icp.name: icp for icp in self.icps.values()}

    def _rename_icps(self) -> None:
        """Devices carry their ICP's name: after an ICP rename, theirs changes too."""
        for device in list(self.devices.values()):
            icp = self.icps.get(device.icp_guid)
            if icp is not None and icp.name != device.icp:
                self._put_device(replace(device, icp=icp.name))

    # -- reads (hot path) ----------------------------------------------------------------
    def device_by_setside(self, username: str) -> DeviceCredentials | None:
        return self._by_setside.get(_index_key(username))

    def overrides(self, device_guid: str) -> DeviceOverrides | None:
        """The device's own option values (SRTP, codecs, frame size, PRACK, keepalive,
        call limits), from the cache: None for an unknown device."""
        device = self.devices.get(device_guid)
        return None if device is None else device.overrides

    def icp_of(self, device: DeviceCredentials) -> IcpRecord | None:
        icp = self.icps.get(device.icp_guid) if device.icp_guid else None
        if icp is not None:
            return icp
        return self._icp_by_name.get(device.icp) or self.icps.get(device.icp)

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
