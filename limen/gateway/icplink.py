"""The ICP link (issue 15): where each ICP is reached, whether each of its targets is up,
and how Limen trusts it over TLS.

- **Targets.** An ICP's address may be a name: :class:`~limen.gateway.resolver.Rfc3263`
  turns it into targets, best first (NAPTR → SRV → A/AAAA). Resolution runs in the
  background (dnspython's asyncio resolver) and is redone before the answer's TTL runs
  out; the hot path (:meth:`IcpLinks.destination`) only reads the last answer. An IP
  literal is its own single target, known at once.
- **Failover** (RFC 3263 §4.3): a transaction timeout, a transport error or a 503 marks
  the target down and the caller retries the request at :meth:`IcpLinks.alternative`.
  Callers keep the target that answered (a registration's refreshes, a call's in-dialog
  requests) for as long as it is up: ``sticky``.
- **Link state.** Each target is up, down or unknown, from OPTIONS pings every
  ``options_interval`` seconds (per ICP; 0 disables them) and from the outcomes callers
  report. Changes are logged, counted in metrics and recorded as events (an alarm when a
  target goes down). :meth:`IcpLinks.snapshot` is what ``limen icp show``, the API and
  ``limen doctor`` read.
- **Message size** (RFC 3261 §18.1.1): a request over 1300 bytes that would go over UDP
  goes over TCP when the ICP accepts TCP.
- **TLS trust.** Each TLS target is registered in the transport layer's ``tls_peers``
  with the ICP's :class:`~limen.transport.tls.ClientTls`; a refused certificate marks the
  target down and raises a major alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limen.gateway.resolver import (
    MAX_TTL,
    DnsLookup,
    Lookup,
    Resolution,
    Rfc3263,
    Target,
    is_ip,
)
from limen.sip.addressing import Destination, Transport
from limen.sip.message import Request
from limen.sip.transaction import ResponseReceived
from limen.transport.tls import NO_VERIFY_WARNING, ClientTls, icp_client_tls, refusing_tls

if TYPE_CHECKING:
    from limen.gateway.context import GatewayContext
    from limen.gateway.stack import ClientEvent
    from limen.gateway.timers import TimerHandle
    from limen.store.schemas import IcpRecord

log = logging.getLogger("limen.gateway.icplink")

MTU_LIMIT = 1300  # RFC 3261 §18.1.1: larger requests go over a congestion-controlled transport
RETRY_RESOLVE = 10.0  # seconds between attempts while a name does not resolve
REFRESH_AHEAD = 0.9  # re-resolve at 90 % of the TTL


@dataclass
class TargetState:
    target: Target
    up: bool | None = None  # None: not yet known
    since: float = field(default_factory=time.time)  # wall clock of the last change
    failures: int = 0  # consecutive
    last_error: str = ""
    last_ok: float | None = None
    rtt_ms: float | None = None
    down_events: int = 0
    up_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.key,
            "transport": self.target.transport.value,
            "host": self.target.host,
            "port": self.target.port,
            "name": self.target.name,
            "state": "unknown" if self.up is None else ("up" if self.up else "down"),
            "since": self.since,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_ok": self.last_ok,
            "rtt_ms": self.rtt_ms,
        }


@dataclass
class IcpLink:
    icp: IcpRecord
    targets: list[Target] = field(default_factory=list)
    states: dict[str, TargetState] = field(default_factory=dict)
    resolved: float = 0.0  # loop time of the last resolution
    error: str = ""
    trust: ClientTls | None = None
    refresh: TimerHandle | None = None  # the next resolution (stack's clock)
    resolving: asyncio.Task[None] | None = None
    pinger: TimerHandle | None = None  # the next OPTIONS round (stack's clock)

    @property
    def state(self) -> str:
        """``up`` if any target is up, ``down`` if all known targets are down."""
        ups = [s.up for s in self.states.values()]
        if any(u is True for u in ups):
            return "up"
        if ups and all(u is False for u in ups):
            return "down"
        return "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {
            "icp": self.icp.name,
            "guid": self.icp.guid,
            "address": self.icp.address,
            "state": self.state,
            "error": self.error,
            "tls": None if self.trust is None else self.trust.mode,
            "targets": [self.states[t.key].as_dict() for t in self.targets if t.key in self.states],
        }


class IcpLinks:
    """Targets, failover and link state of every ICP."""

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        lookup: Lookup | None = None,
        resolver: Rfc3263 | None = None,
        on_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.ctx = ctx
        if resolver is None:
            sip = ctx.settings.sip
            resolver = Rfc3263(lookup or DnsLookup(sip.dns_servers))
        self.resolver = resolver
        self.links: dict[str, IcpLink] = {}
        # (message, severity, kind) → an event in the store; app wires it.
        self.on_event = on_event
        self.counters: dict[str, dict[str, int]] = {
            "icp_link_changes_total": {},
            "icp_failovers_total": {},
        }
        self.closed = False

    # -- configuration -------------------------------------------------------------------------
    def load(self, icps: Iterable[IcpRecord]) -> None:
        """Follow the store: new ICPs get a link, changed ones are resolved again,
        removed ones stop."""
        fresh = {icp.guid: icp for icp in icps}
        for guid in list(self.links):
            if guid not in fresh:
                self._stop(self.links.pop(guid))
        for guid, icp in fresh.items():
            link = self.links.get(guid)
            if link is not None and _same_link(link.icp, icp):
                link.icp = icp
                continue
            if link is not None:
                self._stop(link, drop_tls=not _same_trust(link.icp, icp))
            link = IcpLink(icp)
            self.links[guid] = link
            self._set_trust(link)
            if is_ip(icp.address):
                self._apply(link, self._literal(icp))
            else:
                self._resolve_soon(link)
            self._start_pinger(link)

    def _set_trust(self, link: IcpLink) -> None:
        icp = link.icp
        if "tls" not in (icp.transport.lower(), *[c.lower() for c in icp.sip_capabilities]):
            return
        try:
            link.trust = icp_client_tls(self.ctx.settings, icp)
        except (OSError, ValueError) as exc:
            # Fail closed: a TLS setting that cannot be used refuses every connection
            # rather than falling back to the unverified default context.
            link.error = f"TLS settings unusable: {exc}"
            log.error("ICP %s: %s", icp.name, link.error)
            link.trust = refusing_tls(link.error, icp.name)
            return
        if not link.trust.verifies and icp.transport.lower() == "tls":
            log.warning("%s", NO_VERIFY_WARNING.format(name=icp.name))

    @staticmethod
    def _literal(icp: IcpRecord) -> Resolution:
        return Resolution([Target(_transport(icp), icp.address.strip("[]"), icp.port)], MAX_TTL)

    def close(self) -> None:
        self.closed = True
        for link in self.links.values():
            self._stop(link)

    def _stop(self, link: IcpLink, *, drop_tls: bool = True) -> None:
        if link.resolving is not None:
            link.resolving.cancel()
        for timer in (link.pinger, link.refresh):
            if timer is not None:
                timer.cancel()
        layer = self._layer()
        if layer is not None:
            for target in link.targets:
                layer.tls_peers.pop((target.host, target.port), None)
                if drop_tls and target.transport is Transport.TLS:
                    # A connection verified under the old trust must not outlive it.
                    layer.drop_outbound(Transport.TLS, (target.host, target.port))

    def _layer(self) -> Any:
        """The transport layer (the stack's sender) when it takes per-peer TLS trust."""
        sender = getattr(self.ctx.stack, "sender", None)
        return sender if hasattr(sender, "tls_peers") else None

    # -- resolution ----------------------------------------------------------------------------
    def _resolve_soon(self, link: IcpLink) -> None:
        if self.closed or (link.resolving is not None and not link.resolving.done()):
            return
        link.resolving = asyncio.get_running_loop().create_task(self._resolve(link))

    async def _resolve(self, link: IcpLink) -> None:
        icp = link.icp
        transports = [Transport(c) for c in icp.sip_capabilities if c in ("udp", "tcp", "tls")]
        try:
            result = await self.resolver.resolve(icp.address, icp.port, transports, _transport(icp))
        except Exception:  # never let a resolution bug stop the retries
            log.exception("ICP %s: resolving %s failed", icp.name, icp.address)
            result = Resolution([], RETRY_RESOLVE)
        if self.links.get(icp.guid) is not link:
            return
        if result.targets:
            link.error = ""
            self._apply(link, result)
            delay = max(1.0, result.ttl * REFRESH_AHEAD)
        else:
            link.error = f"{icp.address} does not resolve"
            log.warning(
                "ICP %s: %s; keeping %d known target(s)", icp.name, link.error, len(link.targets)
            )
            delay = RETRY_RESOLVE
        link.refresh = self.ctx.stack.later(delay, lambda: self._resolve_soon(link))

    async def wait_resolved(self, icp: IcpRecord, timeout: float = 5.0) -> bool:
        """Wait (bounded) for an ICP's first resolution; True when it has targets."""
        link = self.links.get(icp.guid)
        if link is None:
            return False
        if not link.targets and link.resolving is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(link.resolving), timeout)
        return bool(link.targets)

    def _apply(self, link: IcpLink, result: Resolution) -> None:
        layer = self._layer()
        old = {t.key for t in link.targets}
        link.targets = result.targets
        link.resolved = time.monotonic()
        states = {}
        for target in result.targets:
            states[target.key] = link.states.get(target.key) or TargetState(target)
            if layer is not None and link.trust is not None and target.transport is Transport.TLS:
                layer.tls_peers[(target.host, target.port)] = link.trust
        link.states = states
        if {t.key for t in result.targets} != old:
            log.info("ICP %s: targets %s", link.icp.name, ", ".join(t.key for t in result.targets))
        self.ctx.directory.set_icp_targets(link.icp.guid, [t.host for t in result.targets])

    # -- the hot path --------------------------------------------------------------------------
    def destination(
        self, icp: IcpRecord, *, size: int = 0, sticky: Destination | None = None
    ) -> Destination | None:
        """Where to send a request to ``icp`` now: ``sticky`` while its target is not down,
        else the best target not known to be down (else the best one: trying is the only
        way to notice a recovery). None while a name has never resolved."""
        link = self.links.get(icp.guid)
        if link is None:
            return None
        if sticky is not None:
            state = link.states.get(_key(sticky))
            if state is not None and state.up is not False:
                return self._sized(link, sticky, size)
        if not link.targets:
            if not is_ip(icp.address):
                self._resolve_soon(link)
            return None
        choice = next(
            (t for t in link.targets if link.states[t.key].up is not False), link.targets[0]
        )
        return self._sized(link, choice.destination(), size)

    def alternative(self, icp: IcpRecord, tried: Iterable[Destination]) -> Destination | None:
        """The next target to fail over to (§4.3), skipping those already tried."""
        link = self.links.get(icp.guid)
        if link is None:
            return None
        seen = {_key(d) for d in tried}
        for target in link.targets:
            if target.key not in seen and link.states[target.key].up is not False:
                self._count("icp_failovers_total", icp.name)
                return target.destination()
        return None

    def _sized(self, link: IcpLink, dest: Destination, size: int) -> Destination:
        """RFC 3261 §18.1.1: over 1300 bytes, UDP gives way to TCP when the ICP has it."""
        if (
            size > MTU_LIMIT
            and dest.transport is Transport.UDP
            and "tcp" in [c.lower() for c in link.icp.sip_capabilities]
        ):
            tcp = next(
                (t for t in link.targets if t.transport is Transport.TCP and t.host == dest.host),
                None,
            )
            return Destination(Transport.TCP, dest.host, tcp.port if tcp else dest.port)
        return dest

    # -- outcomes ------------------------------------------------------------------------------
    def report(self, icp: IcpRecord | None, dest: Destination, ok: bool, reason: str = "") -> None:
        """A transaction's outcome at ``dest``: any response but 503 means the target is
        up; a timeout, a transport error or a 503 that it is down."""
        if icp is None:
            return
        link = self.links.get(icp.guid)
        state = None if link is None else link.states.get(_key(dest))
        if link is None or state is None:
            return
        if ok:
            state.failures = 0
            state.last_ok = time.time()
            self._set(link, state, True, "")
        else:
            state.failures += 1
            state.last_error = reason
            self._set(link, state, False, reason)

    def report_event(self, icp: IcpRecord | None, dest: Destination, event: ClientEvent) -> bool:
        """:meth:`report` for a client transaction event; True when it is a failure that
        calls for failover (timeout, transport error, 503)."""
        if isinstance(event, ResponseReceived):
            status = event.response.status
            if status < 200:
                return False
            failed = status == 503
            self.report(icp, dest, not failed, "503" if failed else "")
            return failed
        self.report(icp, dest, False, type(event).__name__)
        return True

    def tls_refused(self, dest: Destination, reason: str) -> None:
        """The transport layer refused a target's certificate: down, and a major alarm."""
        for link in self.links.values():
            state = link.states.get(_key(dest))
            if state is None:
                continue
            state.last_error = reason
            if state.up is not False:  # one alarm per failure streak, not per attempt
                self._emit(
                    f"ICP {link.icp.name}: TLS connection to {state.target.key} refused: {reason}",
                    "major",
                )
            self._set(link, state, False, reason)
            return

    def _set(self, link: IcpLink, state: TargetState, up: bool, reason: str) -> None:
        if state.up is up:
            return
        previous = state.up
        state.up = up
        state.since = time.time()
        name = f"{link.icp.name} {state.target.key}"
        if up:
            state.up_events += 1
            self._count("icp_link_changes_total", f"{link.icp.name} up")
            log.info("ICP target %s is up", name)
            if previous is False:
                self._emit(f"ICP target {name} is up again", "info")
        else:
            state.down_events += 1
            self._count("icp_link_changes_total", f"{link.icp.name} down")
            log.warning("ICP target %s is down: %s", name, reason)
            self._emit(f"ICP target {name} is down: {reason}", "major")

    def _emit(self, message: str, severity: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(message, severity, "alarm" if severity != "info" else "event")
            except Exception:
                log.exception("could not record the ICP link event")

    def _count(self, counter: str, label: str) -> None:
        by_label = self.counters[counter]
        by_label[label] = by_label.get(label, 0) + 1

    # -- OPTIONS pings -------------------------------------------------------------------------
    def _start_pinger(self, link: IcpLink) -> None:
        if link.icp.options_interval > 0 and link.icp.link_enabled and not self.closed:
            # The first round after at most 1 s: let the listeners and resolution settle.
            delay = min(1.0, float(link.icp.options_interval))
            link.pinger = self.ctx.stack.later(delay, lambda: self._ping_round(link))

    def _ping_round(self, link: IcpLink) -> None:
        if self.closed:
            return
        interval = float(link.icp.options_interval)
        link.pinger = self.ctx.stack.later(interval, lambda: self._ping_round(link))
        for target in list(link.targets):
            self.ping(link, target)

    def ping(self, link: IcpLink, target: Target) -> None:
        """One OPTIONS (RFC 3261 §11) to ``target``. Without an answer within the ping
        interval (at most Timer F) the target is down; a late answer brings it back."""
        ctx = self.ctx
        dest = target.destination()
        from limen.gateway.context import Side

        via = ctx.addresses.via(Side.ICP, dest.transport)
        host = via.host
        domain = link.icp.domain or link.icp.address
        uri = f"sip:{domain}" if ":" not in domain else f"sip:[{domain}]"
        headers: list[tuple[str, object]] = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"<sip:limen@{host}>;tag={secrets.token_hex(6)}"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"{secrets.token_hex(12)}@limen"),
            ("CSeq", "1 OPTIONS"),
        ]
        if ctx.settings.sip.server_header:
            headers.append(("User-Agent", ctx.settings.sip.server_header))
        request = Request("OPTIONS", uri, headers)
        stack = ctx.stack
        started = stack.now()
        icp = link.icp
        answered = False
        limit = min(float(max(1, icp.options_interval)), 64 * ctx.settings.sip.t1)

        def expired() -> None:
            if not answered:
                self.report(icp, dest, False, "no answer to OPTIONS")

        timer = stack.later(limit, expired)

        def on_event(event: ClientEvent) -> None:
            nonlocal answered
            if isinstance(event, ResponseReceived) and event.response.status < 200:
                return
            answered = True
            timer.cancel()
            if isinstance(event, ResponseReceived):
                state = link.states.get(target.key)
                if state is not None:
                    state.rtt_ms = round((stack.now() - started) * 1000.0, 1)
            self.report_event(icp, dest, event)

        try:
            ctx.stack.send_request(request, dest, on_event)
        except Exception as exc:  # a malformed target must not kill the loop
            timer.cancel()
            self.report(icp, dest, False, str(exc))

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        return [link.as_dict() for link in self.links.values()]

    def state_of(self, icp_guid: str) -> str | None:
        """``up`` / ``down`` / ``unknown`` for an ICP (None if it is not known)."""
        link = self.links.get(icp_guid)
        return None if link is None else link.state

    def gauges(self) -> dict[str, int]:
        """1 per target that is up, 0 otherwise: ``"<icp> <target>"`` → 0/1."""
        return {
            f"{link.icp.name} {key}": 1 if state.up else 0
            for link in self.links.values()
            for key, state in link.states.items()
        }


def _key(dest: Destination) -> str:
    return Target(dest.transport, dest.host.strip("[]"), dest.port).key


def _transport(icp: IcpRecord) -> Transport:
    try:
        return Transport(icp.transport.lower())
    except ValueError:
        return Transport.UDP


def _same_trust(a: IcpRecord, b: IcpRecord) -> bool:
    fields = (
        "address",
        "domain",
        "tls_verify",
        "tls_ca_file",
        "tls_pin_sha256",
        "tls_server_name",
        "tls_client_cert",
        "tls_client_key",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _same_link(a: IcpRecord, b: IcpRecord) -> bool:
    fields = (
        "address",
        "port",
        "transport",
        "sip_capabilities",
        "domain",
        "link_enabled",
        "options_interval",
        "tls_verify",
        "tls_ca_file",
        "tls_pin_sha256",
        "tls_server_name",
        "tls_client_cert",
        "tls_client_key",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)
