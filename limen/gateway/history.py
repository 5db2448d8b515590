"""Bounded SIP message history per Call-ID, recent calls, and the gateway's live view.

:class:`SipHistory` records what :class:`~limen.gateway.stack.SipStack` receives and
sends (the narrowest point that sees every message with its Source or Destination), so
the console can draw a call's ladder and export its signalling as a pcap. It is bounded
three ways, so a flood cannot grow it: at most ``max_calls`` Call-IDs (oldest evicted
first), ``max_messages`` messages per Call-ID (later ones are counted, not kept) and
``max_bytes`` in total (oldest Call-IDs evicted until under). REGISTER
and OPTIONS are not recorded: keepalives and registrations of thousands of phones would
evict every call within seconds.

Memory (measured with tracemalloc, ``tests/web/test_history.py``): 9.4 KiB for a
12-message call with SDP on both legs, i.e. its 5.7 KB of message text plus ~310 bytes of
bookkeeping per message. The byte cap counts that bookkeeping too (``RECORD_OVERHEAD`` per
message), so ``max_bytes`` (32 MiB by default) bounds the whole history: about 3,500
such calls fit before the oldest are evicted.

:class:`RecentCalls` keeps the last calls that ended (outcome, legs, final media
statistics); :class:`GatewayView` is what ``limen serve`` hands the console through
:attr:`limen.core.Core.gateway`.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from limen.sip.addressing import Destination, Source
from limen.sip.message import Message, Request, Response

if TYPE_CHECKING:
    from limen.gateway.calls import CallController
    from limen.gateway.registrar import Registrar

SKIPPED_METHODS = frozenset({"REGISTER", "OPTIONS"})
# Bytes one record costs besides its message text (the record, its tuples, list slot),
# measured with tracemalloc; counted against ``max_bytes``.
RECORD_OVERHEAD = 320


class SipRecord(NamedTuple):
    """One message as it crossed Limen: ``direction`` "in" (received) or "out" (sent).

    A NamedTuple rather than a frozen dataclass: one is made per SIP message on the hot
    path, and it costs a third (see docs/architecture.md, "Where the code differs")."""

    time: float  # epoch seconds
    direction: str
    transport: str
    local: tuple[str, int] | None  # Limen's address (None: not known for this send)
    remote: tuple[str, int]
    call_id: str
    data: bytes

    @property
    def first_line(self) -> str:
        end = self.data.find(b"\r\n")
        return self.data[: end if end >= 0 else 120].decode("utf-8", "replace")

    @property
    def label(self) -> str:
        """``INVITE`` for requests, ``180 Ringing`` for responses (short, for arrows)."""
        line = self.first_line
        if line.startswith("SIP/2.0 "):
            return line[8:38]
        return line.split(" ", 1)[0][:32]


@dataclass(slots=True)
class _CallMessages:
    records: list[SipRecord] = field(default_factory=list)
    dropped: int = 0
    size: int = 0


class SipHistory:
    """The last messages of the last Call-IDs (see the module docstring for the bounds)."""

    def __init__(
        self,
        max_calls: int = 10000,
        max_messages: int = 64,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_calls = max_calls
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.clock = clock
        self._calls: OrderedDict[str, _CallMessages] = OrderedDict()
        self.size = 0

    def __len__(self) -> int:
        return len(self._calls)

    def received(self, message: Request | Response, source: Source) -> None:
        self._add(
            message, bytes(message), "in", source.transport.value, source.local, source.remote
        )

    def sent(self, message: Message, data: bytes, dest: Destination) -> None:
        if not isinstance(message, Request | Response):
            return
        self._add(message, data, "out", dest.transport, dest.local, (dest.host, dest.port))

    def _add(
        self,
        message: Request | Response,
        data: bytes,
        direction: str,
        transport: str,
        local: tuple[str, int] | None,
        remote: tuple[str, int],
    ) -> None:
        try:
            method = message.cseq.method
            call_id = message.call_id
        except Exception:  # a message without the core headers: nothing to file it under
            return
        if method in SKIPPED_METHODS:
            return
        entry = self._calls.get(call_id)
        if entry is None:
            entry = self._calls[call_id] = _CallMessages()
            if len(self._calls) > self.max_calls:
                self._evict()
        if len(entry.records) >= self.max_messages:
            entry.dropped += 1
            return
        record = SipRecord(self.clock(), direction, transport, local, remote, call_id, data)
        entry.records.append(record)
        cost = len(data) + RECORD_OVERHEAD
        entry.size += cost
        self.size += cost
        while self.size > self.max_bytes and len(self._calls) > 1:
            self._evict()

    def _evict(self) -> None:
        _call_id, old = self._calls.popitem(last=False)
        self.size -= old.size

    def messages(self, call_ids: Iterable[str]) -> list[SipRecord]:
        """The messages of these Call-IDs, in the order they crossed Limen."""
        out: list[SipRecord] = []
        for call_id in call_ids:
            entry = self._calls.get(call_id)
            if entry is not None:
                out.extend(entry.records)
        out.sort(key=lambda r: r.time)
        return out

    def dropped(self, call_ids: Iterable[str]) -> int:
        return sum(e.dropped for c in call_ids if (e := self._calls.get(c)) is not None)


class RecentCalls:
    """The last ``keep`` calls that ended, newest first (``CallController.on_end``)."""

    def __init__(self, keep: int = 500) -> None:
        self._calls: deque[dict[str, Any]] = deque(maxlen=keep)

    def add(self, summary: dict[str, Any]) -> None:
        self._calls.appendleft(summary)

    def list(self) -> list[dict[str, Any]]:
        return list(self._calls)


class GatewayView:
    """The running gateway as the console sees it (:class:`limen.core.GatewayView`)."""

    def __init__(
        self,
        registrar: Registrar,
        calls: CallController,
        history: SipHistory,
        recent: RecentCalls,
    ) -> None:
        self._registrar = registrar
        self._calls = calls
        self.history = history
        self.recent = recent

    def registrations(self) -> dict[str, dict[str, Any]]:
        now = self._calls.ctx.stack.now()
        out: dict[str, dict[str, Any]] = {}
        for b in self._registrar.bindings():
            s = b.source
            out[b.device_guid] = {
                "address": f"{s.remote[0]}:{s.remote[1]}",
                "transport": s.transport.value,
                "expires_in": b.expires_in(now),
                "nat": b.nat,
                "user_agent": "",
            }
        return out

    def icp_links(self) -> dict[str, dict[str, int]]:
        """Per ICP name: ICP-side registrations by state (registered, failed, ...)."""
        upstream = getattr(self._registrar, "upstream", None)
        out: dict[str, dict[str, int]] = {}
        if upstream is None:
            return out
        for reg in upstream.registrations():
            states = out.setdefault(reg.device.icp, {})
            states[reg.state.value] = states.get(reg.state.value, 0) + 1
        return out

    def recent_calls(self) -> list[dict[str, Any]]:
        return self.recent.list()

    def messages(self, call_ids: Iterable[str]) -> list[SipRecord]:
        return self.history.messages(call_ids)
