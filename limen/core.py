"""The core object handed to the API (and later the UI): settings, store and services.

No module-level singletons: ``Core.open(settings)`` builds one, tests build their own.
Services the SIP side will fill later (metrics) are interfaces with a neutral default.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from limen.config import Settings
from limen.store import Change, Store, open_store

log = logging.getLogger(__name__)

Subscriber = Callable[[Change], None]


class ChangeBus:
    """In-process publish/subscribe of committed configuration changes.

    The API and the CLI change the store; the gateway subscribes here to apply changes
    without a restart. Publishing may happen on a worker thread (the API runs store calls
    in a thread pool): a subscriber registered with its ``loop`` is always called on that
    loop's thread; one registered without is called synchronously by the publisher.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[Subscriber, asyncio.AbstractEventLoop | None]] = []

    def subscribe(
        self, callback: Subscriber, loop: asyncio.AbstractEventLoop | None = None
    ) -> Callable[[], None]:
        entry = (callback, loop)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def publish(self, change: Change) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback, loop in subscribers:
            if loop is None:
                try:
                    callback(change)
                except Exception:
                    log.exception("change subscriber failed on %s", change)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(callback, change)


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """One point of MBG's ``/mbg/v1/metrics/``: gauges at ``timestamp`` (epoch seconds)."""

    timestamp: float
    active_calls: int = 0
    active_connections: int = 0
    registrations: int = 0
    bandwidth_icp_in: int = 0
    bandwidth_icp_out: int = 0
    bandwidth_set_in: int = 0
    bandwidth_set_out: int = 0
    calls_per_hour: int = 0


class MetricsProvider(Protocol):
    """What the gateway exposes for metrics; the API and ``/metrics`` read it."""

    def current(self) -> MetricsSample: ...

    def history(self, start: float, end: float) -> list[MetricsSample]: ...

    def counters(self) -> dict[str, dict[str, int]]:
        """Monotonic counters by name, each split by a label value (e.g. errors by kind)."""
        ...

    def calls(self) -> list[dict[str, Any]]:
        """Calls in progress with their media statistics (``/mslrest/limen/v1/calls/``)."""
        ...


class NullMetrics:
    """Until the SIP gateway plugs its own provider in: every gauge is zero, no history."""

    def current(self) -> MetricsSample:
        import time

        return MetricsSample(timestamp=time.time())

    def history(self, start: float, end: float) -> list[MetricsSample]:
        return []

    def counters(self) -> dict[str, dict[str, int]]:
        return {"sip_transactions_total": {}, "sip_errors_total": {}}

    def calls(self) -> list[dict[str, Any]]:
        return []


class GatewayView(Protocol):
    """What the console reads from the running gateway (``limen.gateway.history``)."""

    def registrations(self) -> dict[str, dict[str, Any]]:
        """Registered phones by device guid: address, transport, expires_in, nat."""
        ...

    def icp_links(self) -> dict[str, dict[str, int]]:
        """ICP-side registrations per ICP name, counted by state."""
        ...

    def recent_calls(self) -> list[dict[str, Any]]:
        """Calls that ended, newest first, with their outcome."""
        ...

    def messages(self, call_ids: Iterable[str]) -> list[Any]:
        """The recorded SIP messages (``SipRecord``) of these Call-IDs, oldest first."""
        ...


class NullGateway:
    """No SIP side running (the API or console alone): nothing registered, no calls."""

    def registrations(self) -> dict[str, dict[str, Any]]:
        return {}

    def icp_links(self) -> dict[str, dict[str, int]]:
        return {}

    def recent_calls(self) -> list[dict[str, Any]]:
        return []

    def messages(self, call_ids: Iterable[str]) -> list[Any]:
        return []


class SecurityHooks(Protocol):
    """What the listeners above the gateway (API, console, provisioning) need of the
    guard (:class:`limen.gateway.guard.Guard`): report failures, ask about bans."""

    def auth_failure(self, address: str, user: str | None, kind: str) -> object: ...

    def allow_http(self, address: str, listener: str) -> bool: ...

    def banned(self, address: str) -> bool: ...

    def list_bans(self) -> list[Any]: ...

    def ban(self, address: str, seconds: float | None = None, detail: str = "") -> Any: ...

    def unban(self, address: str) -> bool: ...


@dataclass
class Core:
    """Settings, store and services of one Limen process."""

    settings: Settings
    store: Store
    bus: ChangeBus = field(default_factory=ChangeBus)
    metrics: MetricsProvider = field(default_factory=NullMetrics)
    gateway: GatewayView = field(default_factory=NullGateway)
    # The provisioning proxy's last requests (``AccessRecord``), refusals included.
    provisioning_log: Sequence[Any] = field(default_factory=list)

    # The running guard (set by limen.app.start); None in tools and tests without one.
    security: SecurityHooks | None = None
    # The ICP links of the running gateway (limen.gateway.icplink.IcpLinks: targets and
    # their up/down state, ``snapshot()`` / ``state_of(guid)``); None without one.
    icp_links: Any = None

    def auth_failure(self, address: str | None, user: str | None, kind: str) -> None:
        """Report a failed authentication toward bans (no-op without a guard)."""
        if self.security is not None and address:
            self.security.auth_failure(address, user, kind)

    def __post_init__(self) -> None:
        self.store.on_change = self.bus.publish

    @classmethod
    def open(cls, settings: Settings) -> Core:
        """Open the store (applying migrations) and build the core around it."""
        return cls(settings=settings, store=open_store(settings))

    def close(self) -> None:
        self.store.close()
