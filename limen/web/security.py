"""Console sessions, CSRF tokens and the naive login throttle.

- The session is an admin session token of the store (``AdminRepository.issue_token``,
  kind ``session``, the same the API's ``/session/`` hands out) kept in a cookie that is
  ``Secure``, ``HttpOnly`` and ``SameSite=Strict``, named with the ``__Host-`` prefix
  (RFC 6265bis §4.1.3.2: no Domain, Path=/, only over HTTPS). Logging out or changing the
  password deletes it in the store, so a stolen cookie dies with it.
- CSRF: every form carries a token that is an HMAC of the session token (the
  "synchroniser token" bound to the session, OWASP's HMAC-based pattern); a cross-site
  page cannot read the cookie, so it cannot compute it. The login form, before any
  session exists, uses a double-submit cookie instead. Every POST is checked; a missing
  or wrong token is refused with 403 before any handler runs.
- Failed logins: :class:`LoginThrottle` refuses an address for ``window`` seconds after
  ``limit`` failures, and every failure is reported to ``on_auth_failure(ip, user,
  kind="console")`` so the gateway's ban registry can count it with the API's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

SESSION_COOKIE = "__Host-limen_console"
LOGIN_COOKIE = "__Host-limen_login"
CSRF_FIELD = "csrf_token"

AuthFailureHook = Callable[..., None]


def csrf_for(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session token itself."""
    return hmac.new(session_token.encode(), b"limen-console-csrf", hashlib.sha256).hexdigest()


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


def new_login_nonce() -> str:
    return secrets.token_hex(16)


class LoginThrottle:
    """At most ``limit`` failed logins per address within ``window`` seconds.

    Bounded: at most ``max_addresses`` addresses are tracked (oldest forgotten first), so
    a spray from many addresses costs a fixed amount of memory.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 300.0,
        max_addresses: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, ip: str) -> list[float]:
        now = self.clock()
        times = [t for t in self._failures.get(ip, []) if now - t < self.window]
        if times:
            self._failures[ip] = times
        else:
            self._failures.pop(ip, None)
        return times

    def blocked(self, ip: str) -> bool:
        return len(self._recent(ip)) >= self.limit

    def failed(self, ip: str) -> None:
        times = self._recent(ip)
        times.append(self.clock())
        self._failures[ip] = times
        self._failures.move_to_end(ip)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)
