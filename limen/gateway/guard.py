"""The guard at every door (issue 10): who may talk to Limen at all, before the gate.

Policy over the sans-IO mechanisms of :mod:`limen.security`, for every listener:

- **Bans.** :meth:`Guard.auth_failure` counts failed authentications from every listener
  (SIP digest, API signatures and logins, console logins, provisioning hashes) per source
  and per (source, user); a source past the threshold is banned, for longer on each
  repeat. A banned source gets no answer at all: SIP packets are dropped before they are
  parsed (:meth:`Guard.allow_sip_packet`, the transport's ``source_filter``), stream
  connections are refused at accept, HTTP listeners drop the connection.
- **Rate limits.** Every SIP message counts toward its source's rate
  (:class:`~limen.security.ratelimit.RateLimiter`, pike-like); over the limit, the source is
  banned as a flooder.
- **ACLs.** Allow and deny lists per listener (SIP set side, API, provisioning).
- **Scanners.** Requests whose User-Agent names a known scanner are dropped silently.

Trusted networks and the ICPs' addresses are never rate-limited nor banned. Each ban is
logged once, in a stable line fail2ban can match (``BAN <address> reason=...``), raised as
an event (alarm) through ``on_ban``, and counted for Prometheus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from limen.security import Ban, BanList, BanPolicy, RateLimiter, in_networks, parse_networks
from limen.sip.addressing import Source
from limen.sip.message import Request, Response

if TYPE_CHECKING:
    from limen.config import SecuritySettings

log = logging.getLogger("limen.security")

Clock = Callable[[], float]


class Acl:
    """Allow / deny lists of networks; deny wins, an empty allow list allows everyone.
    Decisions are cached per address (bounded), so the hot path is one dict lookup."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = parse_networks(allow)
        self.deny = parse_networks(deny)
        self._cache: dict[str, bool] = {}

    @property
    def open(self) -> bool:
        return not self.allow and not self.deny

    def permits(self, address: str) -> bool:
        if not self.allow and not self.deny:
            return True
        verdict = self._cache.get(address)
        if verdict is None:
            verdict = not in_networks(address, self.deny) and (
                not self.allow or in_networks(address, self.allow)
            )
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[address] = verdict
        return verdict


def ban_line(ban: Ban) -> str:
    """The one log line per ban (stable: fail2ban's ``failregex = ^.* BAN <HOST> ``)."""
    return (
        f"BAN {ban.address} reason={ban.reason.value} duration={ban.until - ban.since:.0f}s "
        f"offences={ban.offences} detail={ban.detail!r}"
    )


class Guard:
    """Bans, rate limits, ACLs and scanner filtering for every listener of one process."""

    def __init__(
        self,
        settings: SecuritySettings,
        *,
        clock: Clock = time.time,
        on_ban: Callable[[Ban], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_ban = on_ban
        policy = BanPolicy(
            max_failures=settings.max_failures,
            max_failures_per_user=settings.max_failures_per_user,
            window=settings.failure_window,
            ban_time=settings.ban_time,
            max_ban_time=settings.max_ban_time,
        )
        self.bans = BanList(policy, trusted=settings.trusted, on_ban=self._banned)
        self.rate = (
            RateLimiter(settings.sip_rate_limit, settings.sip_rate_window)
            if settings.sip_rate_limit
            else None
        )
        self.sip_acl = Acl(settings.sip_allow, settings.sip_deny)
        self.api_acl = Acl(settings.api_allow, settings.api_deny)
        self.provisioning_acl = Acl(settings.provisioning_allow, settings.provisioning_deny)
        self.scanner_agents = tuple(a.lower() for a in settings.scanner_user_agents if a)
        self._icps: frozenset[str] = frozenset()
        self.dropped: dict[str, int] = {"banned": 0, "acl": 0, "rate": 0, "scanner": 0}
        self.failures: dict[str, int] = {}
        self.changes = 0  # bumped on every ban and unban (the app saves bans when it moves)
        # Provisioning strikes (issue 10): a separate, higher bar, see auth_failure.
        self._provisioning = RateLimiter(
            settings.provisioning_ban_failures, settings.failure_window
        )
        # The API, the console and provisioning run on their own thread (limen.app): every
        # change of the ban state takes this lock. The per-packet path only reads dicts.
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------------
    def set_icp_addresses(self, addresses: Iterable[str]) -> None:
        """The ICPs' addresses: trusted, and outside the set-side ACL."""
        self._icps = frozenset(a.strip("[]").lower() for a in addresses)
        self.bans.set_trusted_addresses(self._icps)

    # -- SIP ---------------------------------------------------------------------------------
    def allow_sip_packet(self, address: str) -> bool:
        """Per packet, before parsing (the transport's ``source_filter``); also at accept."""
        now = self.clock()
        if self.bans.banned(address, now):
            self.dropped["banned"] += 1
            self.bans.dropped_total += 1
            return False
        if address in self._icps:
            return True
        if not self.sip_acl.permits(address):
            self.dropped["acl"] += 1
            return False
        rate = self.rate
        if rate is not None and rate.hit(address, now):
            with self._lock:
                ban = self.bans.flood(
                    address, now, f"over {rate.limit} SIP messages in {rate.window:g} s"
                )
            if ban is not None:
                self.dropped["rate"] += 1
                return False
        return True

    def screen(self, message: Request | Response, source: Source) -> bool:
        """Per parsed message: False drops it silently (scanner User-Agents)."""
        if not self.scanner_agents or not isinstance(message, Request):
            return True
        agent = message.get("user-agent")
        if agent is None:
            return True
        lowered = agent.lower()
        if any(pattern in lowered for pattern in self.scanner_agents):
            self.dropped["scanner"] += 1
            log.debug("dropped a scanner's %s from %s", message.method, source.remote[0])
            return False
        return True

    # -- every listener ------------------------------------------------------------------------
    def allow_http(self, address: str, listener: str) -> bool:
        """May ``address`` talk to the ``api`` or ``provisioning`` listener at all?"""
        if self.bans.banned(address, self.clock()):
            self.dropped["banned"] += 1
            self.bans.dropped_total += 1
            return False
        acl = self.api_acl if listener == "api" else self.provisioning_acl
        if not acl.permits(address):
            self.dropped["acl"] += 1
            return False
        return True

    def banned(self, address: str) -> bool:
        return self.bans.banned(address, self.clock())

    def auth_failure(self, address: str, user: str | None, kind: str) -> Ban | None:
        """One failed authentication from ``address`` (``kind``: sip, api, login, console,
        provisioning); the ban it caused, if any."""
        address = address.strip("[]")
        now = self.clock()
        with self._lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if kind == "provisioning":
                # Hash guessing is blocked by the provisioning proxy itself, keyed so that
                # phones behind the guesser's NAT keep their files; banning the address
                # everywhere waits for a guesser at machine speed.
                if not self._provisioning.hit(address, now):
                    return None
                return self.bans.flood(address, now, "provisioning hash guessing")
            return self.bans.failure(address, now, user=user, kind=kind)

    # -- operators -----------------------------------------------------------------------------
    def ban(self, address: str, seconds: float | None = None, detail: str = "") -> Ban:
        with self._lock:
            return self.bans.ban(address.strip("[]"), self.clock(), seconds, detail)

    def unban(self, address: str) -> bool:
        with self._lock:
            lifted = self.bans.unban(address.strip("[]"))
        if lifted:
            self.changes += 1
            log.warning("UNBAN %s", address)
        return lifted

    def list_bans(self) -> list[Ban]:
        with self._lock:
            return self.bans.bans(self.clock())

    def expire(self) -> None:
        with self._lock:
            self.bans.expire(self.clock())

    def counters(self) -> dict[str, dict[str, int]]:
        """Prometheus counters (``limen_<name>{label}``)."""
        return {
            "security_bans_total": dict(self.bans.bans_total),
            "security_dropped_total": dict(self.dropped),
            "auth_failures_total": dict(self.failures),
        }

    def _banned(self, ban: Ban) -> None:
        self.changes += 1
        log.warning("%s", ban_line(ban))
        if self.on_ban is not None:
            try:
                self.on_ban(ban)
            except Exception:
                log.exception("ban listener failed")
