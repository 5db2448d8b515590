"""Bans of source addresses: failed authentications and floods (issue 10), sans-IO.

Every failed authentication — SIP digest, API signature, admin login, console login,
provisioning hash — is reported with :meth:`BanList.failure` and counted per source
address and per (source, user) in a sliding window. Past a threshold the *source* is
banned; a banned source gets no answer at all (the transports drop its packets before
parsing them). The *user* is never locked out: a phone of the same user at another
address keeps working, which is what stops a guesser from turning bans into a denial of
service against a known extension (fail2ban and Kamailio's ``htable`` bans behave alike).

A ban lasts ``ban_time`` seconds, doubled for every repeat offence of the same source
within ``repeat_memory`` seconds, up to ``max_ban_time``. Trusted addresses (the ICPs,
configured networks) are never counted nor banned. Manual bans and unbans are the
operator's (``limen ban``, the API, the console).

State is bounded: at most ``max_sources`` sources with a failure history (the least
recently failing ones are forgotten first) and at most ``max_bans`` bans (beyond that the
ban closest to its end is dropped). Time is an argument (``now``), as everywhere in the
sans-IO core: the caller owns the clock.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BanReason(enum.StrEnum):
    AUTH = "auth"  # too many failed authentications from the source
    USER_GUESS = "user-guess"  # too many failures against one user from the source
    FLOOD = "flood"  # over the message rate limit
    MANUAL = "manual"  # set by an operator


@dataclass(frozen=True, slots=True)
class Ban:
    """One banned source address."""

    address: str
    reason: BanReason
    since: float
    until: float
    offences: int  # how many bans this source has had within the repeat memory
    detail: str = ""  # e.g. the kind and user of the last failure

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now)


@dataclass(slots=True)
class _History:
    failures: deque[float] = field(default_factory=deque)
    by_user: dict[str, deque[float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BanPolicy:
    """Thresholds and durations (``[security]`` in limen.toml)."""

    max_failures: int = 10  # per source within the window
    max_failures_per_user: int = 5  # per (source, user) within the window
    window: float = 60.0
    ban_time: float = 600.0
    max_ban_time: float = 86400.0
    repeat_memory: float = 86400.0
    max_sources: int = 100_000
    max_bans: int = 100_000


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or addresses (``10.0.0.0/8``, ``192.0.2.7``, ``2001:db8::/32``)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


BanListener = Callable[[Ban], None]


class BanList:
    """Failure counting and bans per source address (see the module docstring)."""

    def __init__(
        self,
        policy: BanPolicy | None = None,
        *,
        trusted: Iterable[str] = (),
        on_ban: BanListener | None = None,
    ) -> None:
        self.policy = policy or BanPolicy()
        self._trusted_networks = parse_networks(trusted)
        self._trusted_addresses: frozenset[str] = frozenset()
        self._history: OrderedDict[str, _History] = OrderedDict()
        self._bans: dict[str, Ban] = {}
        self._offences: dict[str, tuple[int, float]] = {}  # address → (count, last ban)
        self.on_ban = on_ban
        self.failures_total = 0
        self.bans_total: dict[str, int] = {reason.value: 0 for reason in BanReason}
        self.dropped_total = 0  # packets/requests refused because their source is banned

    # -- trust -----------------------------------------------------------------------------
    def set_trusted_addresses(self, addresses: Iterable[str]) -> None:
        """Exact addresses that are never banned (the configured ICPs); replaced whole."""
        self._trusted_addresses = frozenset(a.strip("[]").lower() for a in addresses)

    def trusted(self, address: str) -> bool:
        return address.lower() in self._trusted_addresses or in_networks(
            address, self._trusted_networks
        )

    # -- the hot path ----------------------------------------------------------------------
    def banned(self, address: str, now: float) -> bool:
        """Is ``address`` banned at ``now``? One dict lookup when it is not."""
        ban = self._bans.get(address)
        if ban is None:
            return False
        if ban.until <= now:
            self._bans.pop(address, None)  # another thread may have lifted it meanwhile
            return False
        return True

    # -- reporting -------------------------------------------------------------------------
    def failure(
        self, address: str, now: float, *, user: str | None = None, kind: str = "sip"
    ) -> Ban | None:
        """Count one failed authentication; the new ban if this one crossed a threshold."""
        if self.trusted(address):
            return None
        self.failures_total += 1
        policy = self.policy
        history = self._history.get(address)
        if history is None:
            history = self._history[address] = _History()
            while len(self._history) > policy.max_sources:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(address)
        horizon = now - policy.window
        failures = _slide(history.failures, now, horizon)
        if len(failures) >= policy.max_failures:
            return self._ban(address, BanReason.AUTH, now, f"{kind} failures")
        if user is not None:
            key = user.lower()[:128]
            per_user = history.by_user.get(key)
            if per_user is None:
                if len(history.by_user) >= policy.max_failures:  # bounded like the total
                    history.by_user.pop(next(iter(history.by_user)))
                per_user = history.by_user[key] = deque()
            if len(_slide(per_user, now, horizon)) >= policy.max_failures_per_user:
                return self._ban(address, BanReason.USER_GUESS, now, f"{kind} user {user!r}")
        return None

    def flood(self, address: str, now: float, detail: str = "") -> Ban | None:
        """The source went over a rate limit (:class:`~limen.security.ratelimit.RateLimiter`)."""
        if self.trusted(address):
            return None
        return self._ban(address, BanReason.FLOOD, now, detail or "message rate")

    # -- operators -------------------------------------------------------------------------
    def ban(self, address: str, now: float, seconds: float | None = None, detail: str = "") -> Ban:
        """A manual ban (``seconds`` None: the policy's ban time)."""
        duration = seconds if seconds is not None else self.policy.ban_time
        ban = Ban(address, BanReason.MANUAL, now, now + duration, 1, detail or "manual")
        self._install(ban)
        return ban

    def restore(self, bans: Iterable[Ban], now: float) -> int:
        """Reinstall saved bans still in force (after a restart); no listener is called."""
        count = 0
        for ban in bans:
            if ban.until > now:
                self._bans[ban.address] = ban
                self._offences[ban.address] = (ban.offences, ban.since)
                count += 1
        return count

    def unban(self, address: str) -> bool:
        """Lift a ban and forget the source's failures and offences."""
        self._history.pop(address, None)
        self._offences.pop(address, None)
        return self._bans.pop(address, None) is not None

    def bans(self, now: float) -> list[Ban]:
        """The bans in force, newest first."""
        live = [b for b in list(self._bans.values()) if b.until > now]
        return sorted(live, key=lambda b: b.since, reverse=True)

    def expire(self, now: float) -> None:
        """Drop ended bans and stale histories (call now and then: it is O(n))."""
        for address in [a for a, b in self._bans.items() if b.until <= now]:
            del self._bans[address]
        horizon = now - self.policy.window
        for address in [
            a for a, h in self._history.items() if not h.failures or h.failures[-1] < horizon
        ]:
            del self._history[address]
        memory = now - self.policy.repeat_memory
        for address in [a for a, (_, last) in self._offences.items() if last < memory]:
            del self._offences[address]

    @property
    def tracked_sources(self) -> int:
        return len(self._history)

    # -- internals ---------------------------------------------------------------------------
    def _ban(self, address: str, reason: BanReason, now: float, detail: str) -> Ban | None:
        current = self._bans.get(address)
        if current is not None and current.until > now:
            return None  # already banned (a packet in flight before the ban took effect)
        policy = self.policy
        count, last = self._offences.get(address, (0, now))
        if now - last > policy.repeat_memory:
            count = 0
        count += 1
        self._offences[address] = (count, now)
        duration = min(policy.ban_time * 2 ** (count - 1), policy.max_ban_time)
        ban = Ban(address, reason, now, now + duration, count, detail)
        self._history.pop(address, None)  # the ban answers for these failures
        self._install(ban)
        return ban

    def _install(self, ban: Ban) -> None:
        self._bans[ban.address] = ban
        if len(self._bans) > self.policy.max_bans:
            soonest = min(self._bans.values(), key=lambda b: b.until)
            del self._bans[soonest.address]
        if len(self._offences) > self.policy.max_sources:
            self._offences.pop(next(iter(self._offences)))
        self.bans_total[ban.reason.value] += 1
        if self.on_ban is not None:
            self.on_ban(ban)


def _slide(times: deque[float], now: float, horizon: float) -> deque[float]:
    """Append ``now`` to a sliding window of event times and drop those before ``horizon``."""
    times.append(now)
    while times and times[0] < horizon:
        times.popleft()
    return times


def bans_to_json(bans: Iterable[Ban]) -> list[dict[str, object]]:
    """Bans as JSON-ready rows (``bans.json`` in the data folder, the control socket)."""
    return [
        {
            "address": b.address,
            "reason": b.reason.value,
            "since": b.since,
            "until": b.until,
            "offences": b.offences,
            "detail": b.detail,
        }
        for b in bans
    ]


def bans_from_json(rows: object) -> list[Ban]:
    """The inverse of :func:`bans_to_json`; malformed rows are skipped."""
    out: list[Ban] = []
    if not isinstance(rows, list):
        return out
    for row in rows:
        try:
            out.append(
                Ban(
                    address=str(row["address"]),
                    reason=BanReason(row["reason"]),
                    since=float(row["since"]),
                    until=float(row["until"]),
                    offences=int(row["offences"]),
                    detail=str(row.get("detail", "")),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out
