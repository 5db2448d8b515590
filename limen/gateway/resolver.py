"""Locating an ICP by name: RFC 3263 §4 (NAPTR → SRV → A/AAAA) with an RFC 2782 order.

The procedure is split so that its decisions are testable without a network:

- :func:`order_naptr` and :func:`order_srv` are pure (the weighted choice takes an
  ``rng``);
- :class:`TtlCache` keeps answers until their TTL runs out on an injected clock;
- :class:`Rfc3263` runs the procedure over a :class:`Lookup`: :class:`DnsLookup` asks
  DNS servers with dnspython's asyncio resolver (never blocking the event loop), tests
  pass a table.

Deviations, on purpose:

- An ICP always has a port in the store; for a *name*, SRV records win when they exist
  and the port is used only for the A/AAAA fallback (§4.2 would skip SRV when a port is
  given, but then a PBX pair could never be described by DNS alone).
- The ICP's ``sip_capabilities`` are the transports "the client supports" of §4.1; the
  configured ``transport`` is preferred when NAPTR does not order them.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from limen.sip.addressing import Destination, Transport, bracket

log = logging.getLogger("limen.gateway.resolver")

# RFC 3263 §4.1 / RFC 3261 §26: NAPTR services and SRV prefixes per transport.
NAPTR_SERVICES: dict[str, Transport] = {
    "SIP+D2U": Transport.UDP,
    "SIP+D2T": Transport.TCP,
    "SIPS+D2T": Transport.TLS,
}
SRV_PREFIX: dict[Transport, str] = {
    Transport.UDP: "_sip._udp.",
    Transport.TCP: "_sip._tcp.",
    Transport.TLS: "_sips._tcp.",
}
NEGATIVE_TTL = 30.0  # seconds a "no such record" answer is kept (RFC 2308 caps it anyway)
MIN_TTL = 1.0
MAX_TTL = 86400.0


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Target:
    """One place an ICP can be reached: transport, IP literal, port."""

    transport: Transport
    host: str
    port: int
    name: str = ""  # the SRV target (or the ICP's name) it came from

    @property
    def key(self) -> str:
        return f"{self.transport.value}:{bracket(self.host)}:{self.port}"

    def destination(self) -> Destination:
        return Destination(self.transport, self.host, self.port)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def order_naptr(
    records: Sequence[Naptr], allowed: Sequence[Transport]
) -> list[tuple[Transport, str]]:
    """The SRV names to try, best first (§4.1): terminal ``S`` records with a SIP service
    for an allowed transport, by order then preference."""
    chosen = []
    for rec in sorted(records, key=lambda r: (r.order, r.preference)):
        transport = NAPTR_SERVICES.get(rec.service.upper())
        if rec.flags.lower() != "s" or transport is None or transport not in allowed:
            continue
        chosen.append((transport, rec.replacement.rstrip(".")))
    return chosen


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782's order: lowest priority first; within a priority, a weighted random
    draw (weight 0 records first in the running sum, so they are rarely picked first).
    A single record with target "." means "no service here"."""
    usable = [r for r in records if r.target not in (".", "")]
    out: list[Srv] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, rec in enumerate(group):
                running += rec.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


class TtlCache:
    """Answers kept until their TTL runs out (time from ``clock``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 4096):
        self._clock = clock
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, list[Any]]] = {}

    def get(self, name: str, rdtype: str) -> list[Any] | None:
        entry = self._entries.get((name.lower(), rdtype))
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[(name.lower(), rdtype)]
            return None
        return entry[1]

    def put(self, name: str, rdtype: str, records: list[Any], ttl: float) -> None:
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        ttl = min(MAX_TTL, max(MIN_TTL, ttl))
        self._entries[(name.lower(), rdtype)] = (self._clock() + ttl, records)

    def remaining(self, name: str, rdtype: str) -> float | None:
        entry = self._entries.get((name.lower(), rdtype))
        return None if entry is None else entry[0] - self._clock()


class Lookup(Protocol):
    async def query(self, name: str, rdtype: str) -> tuple[list[Any], float]:
        """(records, ttl); ([], negative ttl) when the name has none of that type."""
        ...


@dataclass
class Resolution:
    targets: list[Target]
    ttl: float  # seconds the answer may be used (the smallest TTL involved)


class Rfc3263:
    """RFC 3263 §4 over a :class:`Lookup`, with a TTL cache."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.lookup = lookup
        self.cache = TtlCache(clock)
        self._rng = rng if rng is not None else random.Random()
        self.queries = 0  # answers not served by the cache

    async def _query(self, name: str, rdtype: str) -> tuple[list[Any], float]:
        cached = self.cache.get(name, rdtype)
        if cached is not None:
            return cached, self.cache.remaining(name, rdtype) or MIN_TTL
        self.queries += 1
        try:
            records, ttl = await self.lookup.query(name, rdtype)
        except Exception as exc:  # a dead DNS server: nothing cached, the caller retries
            log.warning("DNS %s %s failed: %s", rdtype, name, exc)
            return [], 0.0
        self.cache.put(name, rdtype, records, ttl)
        return records, ttl

    async def _addresses(self, name: str) -> tuple[list[str], float]:
        hosts: list[str] = []
        ttls: list[float] = []
        for rdtype in ("A", "AAAA"):
            found, ttl = await self._query(name, rdtype)
            hosts += [str(h) for h in found]
            if found:
                ttls.append(ttl)
        return hosts, min(ttls) if ttls else NEGATIVE_TTL

    async def resolve(
        self, host: str, port: int, transports: Sequence[Transport], preferred: Transport
    ) -> Resolution:
        """Every target for ``host``, best first. An IP literal is its own target."""
        host = host.strip("[]").rstrip(".")
        allowed = [preferred, *[t for t in transports if t is not preferred]]
        if is_ip(host):
            return Resolution([Target(preferred, host, port, host)], MAX_TTL)
        ttls: list[float] = []
        naptrs, ttl = await self._query(host, "NAPTR")
        services = order_naptr(naptrs, allowed)
        if naptrs:
            ttls.append(ttl)
        if not services:
            # §4.1: no NAPTR: SRV for each supported transport, ours first.
            services = [(t, SRV_PREFIX[t] + host) for t in allowed]
        targets: list[Target] = []
        for transport, srv_name in services:
            srvs, ttl = await self._query(srv_name, "SRV")
            if srvs:
                ttls.append(ttl)
            for srv in order_srv(srvs, self._rng):
                hosts, ttl = await self._addresses(srv.target.rstrip("."))
                ttls.append(ttl)
                targets += [Target(transport, h, srv.port, srv.target.rstrip(".")) for h in hosts]
        if not targets:
            # §4.2: no SRV: the name's own addresses, with the configured port.
            hosts, ttl = await self._addresses(host)
            ttls.append(ttl)
            targets = [Target(preferred, h, port, host) for h in hosts]
        unique: dict[str, Target] = {}
        for target in targets:
            unique.setdefault(target.key, target)
        return Resolution(list(unique.values()), min(ttls) if ttls else NEGATIVE_TTL)


class DnsLookup:
    """:class:`Lookup` with dnspython's asyncio resolver. ``servers``: ``host`` or
    ``host:port`` (``[v6]:port``) entries; empty means the system's resolv.conf."""

    def __init__(self, servers: Sequence[str] = (), timeout: float = 2.0) -> None:
        import dns.asyncresolver

        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            hosts: list[str] = []
            port = 53
            for entry in servers:
                host, port = _split_server(entry)
                hosts.append(host)
            resolver.nameservers = hosts
            resolver.port = port  # dnspython has one port for plain nameserver strings
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = timeout
        resolver.timeout = timeout
        self._resolver = resolver

    async def query(self, name: str, rdtype: str) -> tuple[list[Any], float]:
        import dns.exception
        import dns.resolver

        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return [], NEGATIVE_TTL
        except dns.exception.DNSException as exc:
            raise OSError(str(exc) or type(exc).__name__) from exc
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else NEGATIVE_TTL
        records: list[Any] = []
        for rd in answer:
            if rdtype == "NAPTR":
                records.append(
                    Naptr(
                        rd.order,
                        rd.preference,
                        rd.flags.decode(),
                        rd.service.decode(),
                        rd.replacement.to_text(omit_final_dot=True),
                    )
                )
            elif rdtype == "SRV":
                records.append(
                    Srv(rd.priority, rd.weight, rd.port, rd.target.to_text(omit_final_dot=True))
                )
            else:
                records.append(rd.address)
        return records, ttl


def _split_server(entry: str) -> tuple[str, int]:
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, 53
