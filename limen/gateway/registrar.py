"""The set-side registrar (RFC 3261 §10.3) in MBG's "Max Set-Side" mode.

Phones REGISTER with Limen over the transports the global options allow; Limen challenges
them (:class:`~limen.gateway.auth.SetSideAuth`, 401 with the set-side credentials), keeps
**one** binding per device in memory (:class:`Binding`), grants at most
``setside_reg_expiry`` seconds, and keeps one ICP-side registration per registered device
itself (:class:`~limen.gateway.upstream.UpstreamRegistrar`), so phone refreshes never reach
the PBX. De-registration (``Expires: 0``, ``Contact: *``), expiry without refresh, a
removed device or keepalive misses (:mod:`limen.gateway.keepalive`) remove the binding
and the upstream registration.

NAT (RFC 3581, RFC 5626 §3.2 in spirit): a binding remembers where the REGISTER really
came from (:class:`~limen.sip.addressing.Source`: transport, address, connection). When
that differs from the Via sent-by or the Contact, the phone is behind NAT; in any case
requests to the phone go to the observed address and, on TCP/TLS, over the phone's own
connection (:meth:`Binding.destination`). A REGISTER from a new address or connection
replaces the binding.

Bindings are written behind to the store (:class:`~limen.store.bindings.BindingRepository`)
in batches from a worker thread, and read back on start: a restart resumes every live
binding and its upstream registration (spread over a few seconds) without asking phones
to re-register.

Deviations, on purpose:

- One binding (one Contact) per device: a phone is one UA. A REGISTER with several
  Contacts binds the first one (§10.3 step 7 would keep them all).
- A REGISTER's To user must be the authenticated device's set-side username (403
  otherwise): a phone registers its own AOR only, never someone else's.
- REGISTER is handled whichever side it arrives from (a phone on the LAN registers too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import random
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limen.gateway.auth import SetSideAuth, derive_secret
from limen.gateway.context import GatewayContext, Side
from limen.gateway.respond import respond
from limen.gateway.timers import TimerHandle
from limen.sip.addressing import Destination, Source, Transport
from limen.sip.errors import SipParseError
from limen.sip.headers import NameAddr, parse_name_addr
from limen.sip.message import Request
from limen.sip.transaction import ServerTransaction
from limen.sip.uri import SipUri, Uri
from limen.store.schemas import DeviceCredentials

if TYPE_CHECKING:
    from limen.gateway.upstream import UpstreamRegistrar
    from limen.store.bindings import BindingRepository, StoredBinding

log = logging.getLogger("limen.gateway.registrar")

DEFAULT_EXPIRES = 3600  # RFC 3261 §10.2.1.1: what a REGISTER without any expiry asks for
MIN_EXPIRES = 60  # below this, 423 Interval Too Brief (§10.3 step 7)


@dataclass(frozen=True, slots=True, init=False)
class Binding:
    """One registered phone: who (device, AOR), its Contact, where it really is.

    Memory (issue 13: one of these per registered phone): the Contact is kept as the text
    Limen answers with, not as parsed objects (:attr:`contact` parses it when asked: an
    INVITE or OPTIONS toward the phone, not every REGISTER); the AOR is the device's own
    username object; the observed host is interned (phones behind one NAT share it).
    """

    device_guid: str
    aor: str  # set-side username
    contact_text: str  # the phone's Contact, as it sent it (without expires)
    source: Source  # observed transport / addresses / connection of the last REGISTER
    expires_at: float  # loop time
    nat: bool
    call_id: str
    cseq: int

    def __init__(
        self,
        device_guid: str,
        aor: str,
        contact: NameAddr | str,
        source: Source,
        expires_at: float,
        nat: bool,
        call_id: str = "",
        cseq: int = 0,
    ) -> None:
        host, port = source.remote
        interned = sys.intern(host)
        if interned is not host:
            source = Source(source.transport, source.local, (interned, port), source.conn_id)
        for name, value in (
            ("device_guid", device_guid),
            ("aor", aor),
            ("contact_text", contact if isinstance(contact, str) else str(contact)),
            ("source", source),
            ("expires_at", expires_at),
            ("nat", nat),
            ("call_id", call_id),
            ("cseq", cseq),
        ):
            object.__setattr__(self, name, value)

    @property
    def contact(self) -> NameAddr:
        """The phone's Contact (without expires), parsed."""
        return parse_name_addr(self.contact_text)

    def destination(self) -> Destination:
        """Where requests to the phone go: the observed address, over its connection."""
        s = self.source
        return Destination(s.transport, s.remote[0], s.remote[1], s.conn_id, s.local)

    def request_uri(self) -> Uri:
        """The Request-URI of requests to the phone (its Contact URI, §12.1.1/§10)."""
        return self.contact.uri

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


def _default_port(transport: Transport) -> int:
    return 5061 if transport is Transport.TLS else 5060


def detect_nat(request: Request, contact: NameAddr, source: Source) -> bool:
    """True when the packet's source differs from the top Via sent-by or the Contact's
    host/port (RFC 3581 §1: the UA does not know its public address)."""
    remote_host, remote_port = source.remote
    try:
        via = request.top_via
        via_port = via.port if via.port is not None else _default_port(source.transport)
        if via.host.strip("[]").lower() != remote_host.lower() or via_port != remote_port:
            return True
    except SipParseError:
        return True
    uri = contact.uri
    if isinstance(uri, SipUri):
        port = uri.port if uri.port is not None else _default_port(source.transport)
        if uri.host.strip("[]").lower() != remote_host.lower() or port != remote_port:
            return True
    return False


def granted_expiry(requested: int, maximum: int) -> int:
    """Max Set-Side: the phone gets what it asked for, at most ``setside_reg_expiry``."""
    return max(0, min(requested, maximum))


class Registrar:
    """The gateway's :class:`~limen.gateway.gateway.RequestHandler` for REGISTER."""

    def __init__(
        self,
        ctx: GatewayContext,
        auth: SetSideAuth | None = None,
        *,
        upstream: UpstreamRegistrar | None = None,
        repository: BindingRepository | None = None,
        min_expires: int = MIN_EXPIRES,
        token_secret: bytes | None = None,
        flush_interval: float = 1.0,
        resume_spread: float = 60.0,
        resume_rate: float = 50.0,
    ) -> None:
        self.ctx = ctx
        self.auth = auth if auth is not None else SetSideAuth(ctx)
        self.upstream = upstream
        self.repository = repository
        self.min_expires = min_expires
        self.flush_interval = flush_interval
        self.resume_spread = resume_spread
        self.resume_rate = resume_rate
        self._token_secret = (
            token_secret if token_secret is not None else derive_secret(ctx, b"contact-token")
        )
        self._bindings: dict[str, Binding] = {}
        self._tokens: dict[str, str] = {}  # contact token -> device guid
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._timer: TimerHandle | None = None  # the housekeeping round (stack's clock)
        self._flushing: asyncio.Task[None] | None = None
        self.registers = 0  # REGISTERs that changed or refreshed a binding
        self.rebuild_tokens()

    # -- public API --------------------------------------------------------------------------
    def binding_for(self, device_guid: str) -> Binding | None:
        return self._bindings.get(device_guid)

    def bindings(self) -> list[Binding]:
        return list(self._bindings.values())

    def contact_token(self, device: DeviceCredentials) -> str:
        """The user part of Limen's ICP-side Contact for ``device``: opaque, stable across
        restarts (derived from the store key), and meaningless to the PBX."""
        return self._token_for(device.guid)

    def _token_for(self, guid: str) -> str:
        mac = hmac.new(self._token_secret, guid.encode(), hashlib.sha256).hexdigest()
        return "lm" + mac[:20]

    def device_for_contact_user(self, user: str) -> DeviceCredentials | None:
        guid = self._tokens.get(user)
        return None if guid is None else self.ctx.directory.devices.get(guid)

    def rebuild_tokens(self) -> None:
        self._tokens = {self._token_for(g): g for g in self.ctx.directory.devices}

    def directory_changed(
        self, added: Iterable[str] | None = None, removed: Iterable[str] = ()
    ) -> None:
        """After the Directory changed: tokens of ``added`` devices; bindings (and tokens)
        of ``removed`` ones go away. Without ``added``, after a whole reload: every token
        anew and every binding checked (a contact token depends on the guid alone, so an
        edited device keeps its own)."""
        if added is None:
            self.rebuild_tokens()
            removed = [g for g in self._bindings if g not in self.ctx.directory.devices]
        else:
            for guid in added:
                if guid in self.ctx.directory.devices:
                    self._tokens[self._token_for(guid)] = guid
        for guid in removed:
            if guid in self.ctx.directory.devices:
                continue
            self._tokens.pop(self._token_for(guid), None)
            if guid in self._bindings:
                self.unregister(guid, "device removed")

    def unregister(self, device_guid: str, reason: str) -> Binding | None:
        """Remove a binding and its upstream registration."""
        binding = self._bindings.pop(device_guid, None)
        if binding is None:
            return None
        log.info("unregistered %s (%s)", binding.aor, reason)
        self._dirty.discard(device_guid)
        self._removed.add(device_guid)
        if self.upstream is not None:
            self.upstream.unbind(device_guid)
        return binding

    def expire(self, now: float) -> list[Binding]:
        """Remove bindings whose expiry passed without a refresh."""
        gone = [b for b in self._bindings.values() if b.expires_at <= now]
        for binding in gone:
            self.unregister(binding.device_guid, "expired")
        return gone

    # -- REGISTER --------------------------------------------------------------------------
    def handle(self, txn: ServerTransaction, request: Request, source: Source, side: Side) -> None:
        if not self._transport_allowed(source.transport):
            self._respond(txn, request, 403, "Transport Not Allowed")
            return
        device = self.auth.check(txn, request, source, proxy=False)
        if device is None:
            return
        try:
            to_user = request.to.sip_uri.user_unescaped
        except SipParseError:
            to_user = None
        if to_user is None or to_user.lower() != device.setside_username.lower():
            self._respond(txn, request, 403, "Not Your AOR")
            return
        now = self.ctx.stack.now()
        try:
            header_expires = request.expires
            star = request.contact_star
            contacts = request.contacts
            contact_expires = contacts[0].expires if contacts else None
        except SipParseError:
            self._respond(txn, request, 400, "Bad Contact or Expires")
            return
        current = self._bindings.get(device.guid)
        if star:
            # §10.3 step 6: "*" only with Expires: 0 and a single Contact.
            if header_expires != 0 or len(request.get_all("contact")) != 1:
                self._respond(txn, request, 400, "Contact * needs Expires: 0")
                return
            self.unregister(device.guid, "de-registered (*)")
            self._respond(txn, request, 200, None)
            return
        if not contacts:  # a query (§10.2.4)
            self._ok(txn, request, current, now)
            return
        contact = contacts[0]
        if not isinstance(contact.uri, SipUri):
            self._respond(txn, request, 416, None)
            return
        requested = contact_expires if contact_expires is not None else header_expires
        if requested is None:
            requested = DEFAULT_EXPIRES
        if requested == 0:
            self.unregister(device.guid, "de-registered")
            self._respond(txn, request, 200, None)
            return
        if requested < self.min_expires:
            self._respond(txn, request, 423, None, [("Min-Expires", str(self.min_expires))])
            return
        call_id, cseq = request.call_id, request.cseq.seq
        if current is not None and current.call_id == call_id and cseq <= current.cseq:
            # §10.3 step 7: an older REGISTER of the same Call-ID arriving late.
            self._respond(txn, request, 500, "Out Of Order", [("Retry-After", "1")])
            return
        granted = granted_expiry(requested, self.ctx.options.setside_reg_expiry)
        bound = contact.with_params(contact.params.without("expires"))
        binding = Binding(
            device_guid=device.guid,
            aor=device.setside_username,
            contact=bound,
            source=source,
            expires_at=now + granted,
            nat=detect_nat(request, contact, source),
            call_id=call_id,
            cseq=cseq,
        )
        self.add_binding(binding, device)
        self._ok(txn, request, binding, now)

    def add_binding(self, binding: Binding, device: DeviceCredentials, delay: float = 0.0) -> None:
        """Install ``binding`` (new, refresh or replacement) and its upstream registration."""
        previous = self._bindings.get(binding.device_guid)
        self._bindings[binding.device_guid] = binding
        self._dirty.add(binding.device_guid)
        self._removed.discard(binding.device_guid)
        self.registers += 1
        if previous is None:
            log.info(
                "registered %s at %s:%d/%s%s",
                binding.aor,
                *binding.source.remote,
                binding.source.transport.value,
                " (NAT)" if binding.nat else "",
            )
        elif previous.source != binding.source:
            log.info("%s moved to %s:%d", binding.aor, *binding.source.remote)
        if self.upstream is not None and not self.upstream.is_bound(binding.device_guid):
            self.upstream.bind(device, self.contact_token(device), delay=delay)

    # -- background work ---------------------------------------------------------------------
    async def start(self) -> None:
        """Resume the stored bindings, then expire and flush every ``flush_interval``."""
        if self.repository is not None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="limen-bindings")
            await self.resume()
        self._timer = self.ctx.stack.later(self.flush_interval, self._housekeeping)

    async def resume(self) -> int:
        if self.repository is None:
            return 0
        loop = asyncio.get_running_loop()
        wall = dt.datetime.now(dt.UTC)
        stored = await loop.run_in_executor(self._executor, self.repository.live, wall)
        now = loop.time()
        count = 0
        # Spread the upstream REGISTERs: about ``resume_rate`` per second, within
        # ``resume_spread`` seconds at most (no registration storm at the PBX).
        spread = min(self.resume_spread, len(stored) / self.resume_rate)
        for row in stored:
            device = self.ctx.directory.devices.get(row.device_guid)
            if device is None:
                self._removed.add(row.device_guid)
                continue
            binding = self._from_row(row, now, wall)
            if binding is None:
                continue
            delay = random.uniform(0.0, spread)
            self.add_binding(binding, device, delay=delay)
            self._dirty.discard(row.device_guid)
            count += 1
        if count:
            log.info("resumed %d registrations from the store", count)
        return count

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.upstream is not None:
            self.upstream.close()
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        await self.flush()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def flush(self) -> None:
        """Write the changed bindings to the store (on the worker thread)."""
        if self.repository is None or self._executor is None:
            self._dirty.clear()
            self._removed.clear()
            return
        if not self._dirty and not self._removed:
            return
        loop = asyncio.get_running_loop()
        wall_offset = time.time() - loop.time()
        upserts = [
            self._to_row(self._bindings[g], wall_offset) for g in self._dirty if g in self._bindings
        ]
        deletes = list(self._removed)
        self._dirty.clear()
        self._removed.clear()
        try:
            await loop.run_in_executor(self._executor, self.repository.apply, upserts, deletes)
        except Exception:
            log.exception("could not write %d registration bindings", len(upserts))
            self._dirty.update(u.device_guid for u in upserts)
            self._removed.update(g for g in deletes if g not in self._bindings)

    def _housekeeping(self) -> None:
        """Every ``flush_interval`` on the stack's clock: expire, then write the changes
        (on the worker thread; one write at a time, a slow store skips rounds)."""
        stack = self.ctx.stack
        self._timer = stack.later(self.flush_interval, self._housekeeping)
        try:
            self.expire(stack.now())
        except Exception:
            log.exception("registrar housekeeping failed")
        if self.repository is None or self._executor is None:
            self._dirty.clear()
            self._removed.clear()
        elif self._flushing is None and (self._dirty or self._removed) and stack.loop:
            self._flushing = stack.loop.create_task(self._flush_round())

    async def _flush_round(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("registrar housekeeping failed")
        finally:
            self._flushing = None

    # -- helpers -------------------------------------------------------------------------------
    def _transport_allowed(self, transport: Transport) -> bool:
        options = self.ctx.options
        return {
            Transport.UDP: options.sip_udp,
            Transport.TCP: options.sip_tcp,
            Transport.TLS: options.sip_tls,
        }[transport]

    def _ok(
        self, txn: ServerTransaction, request: Request, binding: Binding | None, now: float
    ) -> None:
        headers: list[tuple[str, str]] = []
        if binding is not None:
            # The stored text is always the name-addr form without expires (NameAddr's
            # __str__), so the expires parameter is appended, not parsed in (§10.3 step 8).
            headers.append(("Contact", f"{binding.contact_text};expires={binding.expires_in(now)}"))
        self._respond(txn, request, 200, None, headers)

    def _respond(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        respond(self.ctx, txn, request, status, reason, headers, stateless=False)

    @staticmethod
    def _to_row(binding: Binding, wall_offset: float) -> StoredBinding:
        from limen.store.bindings import StoredBinding

        s = binding.source
        return StoredBinding(
            device_guid=binding.device_guid,
            aor=binding.aor,
            contact=binding.contact_text,
            transport=s.transport.value,
            remote_host=s.remote[0],
            remote_port=s.remote[1],
            local_host=s.local[0],
            local_port=s.local[1],
            nat=binding.nat,
            call_id=binding.call_id,
            cseq=binding.cseq,
            expires_at=dt.datetime.fromtimestamp(binding.expires_at + wall_offset, dt.UTC),
        )

    @staticmethod
    def _from_row(row: StoredBinding, now: float, wall: dt.datetime) -> Binding | None:
        try:
            contact = parse_name_addr(row.contact)
            transport = Transport(row.transport)
        except (SipParseError, ValueError):
            log.warning("dropping unreadable stored binding of %s", row.device_guid)
            return None
        # The connection of a TCP/TLS phone died with the old process: no conn_id, until
        # the phone reconnects and re-registers.
        source = Source(
            transport, (row.local_host, row.local_port), (row.remote_host, row.remote_port)
        )
        remaining = (row.expires_at - wall).total_seconds()
        return Binding(
            device_guid=row.device_guid,
            aor=row.aor,
            contact=contact,
            source=source,
            expires_at=now + remaining,
            nat=row.nat,
            call_id=row.call_id,
            cseq=row.cseq,
        )
