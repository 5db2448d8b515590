"""OPTIONS keepalives toward registered phones (MBG's "SIP OPTIONS keepalive").

Per the global option ``options_hb`` (or the device's own ``options_hb``): "Never",
"Only behind NAT" (the binding's NAT flag, :func:`~limen.gateway.registrar.detect_nat`) or
"Always". Every ``heartbeat_interval`` seconds (global option, or the device's own) Limen
sends an out-of-dialog OPTIONS (RFC 3261 §11) to the phone's Contact, over the binding's
destination (observed address, the phone's own TCP/TLS connection): the traffic keeps NAT
and firewall pinholes open, and the answer tells the phone is alive. Any final response
counts as an answer (a phone may well say 405 or 501). A probe that times out, fails to be
sent, or is still unanswered when the next one is due is a miss; ``max_misses`` misses in
a row unregister the phone and its ICP-side registration.

:meth:`Keepalive.due` holds the pure scheduling decision (explicit ``now``); a round every
``tick`` seconds on the stack's clock (:mod:`limen.gateway.timers`) only calls it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from limen.gateway.context import GatewayContext, Side
from limen.gateway.registrar import Binding, Registrar
from limen.gateway.stack import ClientEvent
from limen.gateway.timers import TimerHandle
from limen.sip.addressing import Source
from limen.sip.message import Request
from limen.sip.transaction import ResponseReceived

log = logging.getLogger("limen.gateway.keepalive")

DEFAULT_MAX_MISSES = 3


@dataclass(slots=True)
class _Probe:
    source: Source  # the binding's source when probing started (reset when it changes)
    next_at: float
    misses: int = 0
    outstanding: int | None = None  # sequence number of the unanswered probe
    seq: int = 0


class Keepalive:
    """Probes registered phones with OPTIONS and unregisters the silent ones."""

    def __init__(
        self,
        ctx: GatewayContext,
        registrar: Registrar,
        *,
        max_misses: int = DEFAULT_MAX_MISSES,
        tick: float = 1.0,
    ) -> None:
        self.ctx = ctx
        self.registrar = registrar
        self.max_misses = max_misses
        self.tick = tick
        self._probes: dict[str, _Probe] = {}
        self._timer: TimerHandle | None = None
        self.sent = 0
        self.unregistered = 0

    # -- policy ------------------------------------------------------------------------------
    def wanted(self, binding: Binding) -> bool:
        device = self.ctx.directory.devices.get(binding.device_guid)
        mode = (device.options_hb if device is not None else None) or (self.ctx.options.options_hb)
        if mode == "Always":
            return True
        if mode == "Only behind NAT":
            return binding.nat
        return False

    def interval(self, binding: Binding) -> float:
        device = self.ctx.directory.devices.get(binding.device_guid)
        if device is not None and device.heartbeat_interval:
            return float(device.heartbeat_interval)
        return float(self.ctx.options.heartbeat_interval)

    def due(self, now: float) -> list[Binding]:
        """Bindings to probe at ``now``; counts the misses of unanswered probes and
        unregisters phones that reached ``max_misses``."""
        out: list[Binding] = []
        live = {b.device_guid: b for b in self.registrar.bindings()}
        for guid in [g for g in self._probes if g not in live]:
            del self._probes[guid]
        for guid, binding in live.items():
            if not self.wanted(binding):
                self._probes.pop(guid, None)
                continue
            probe = self._probes.get(guid)
            if probe is None or probe.source != binding.source:
                # New or moved phone: it just registered, first probe one interval later.
                self._probes[guid] = _Probe(binding.source, now + self.interval(binding))
                continue
            if now < probe.next_at:
                continue
            if probe.outstanding is not None:
                probe.outstanding = None
                if self._miss(guid, probe, "no answer"):
                    continue
            probe.next_at = now + self.interval(binding)
            out.append(binding)
        return out

    def answered(self, guid: str, seq: int) -> None:
        probe = self._probes.get(guid)
        if probe is not None and probe.outstanding == seq:
            probe.outstanding = None
            probe.misses = 0

    def failed(self, guid: str, seq: int, why: str) -> None:
        probe = self._probes.get(guid)
        if probe is not None and probe.outstanding == seq:
            probe.outstanding = None
            self._miss(guid, probe, why)

    def _miss(self, guid: str, probe: _Probe, why: str) -> bool:
        probe.misses += 1
        log.debug("keepalive miss %d/%d for %s (%s)", probe.misses, self.max_misses, guid, why)
        if probe.misses < self.max_misses:
            return False
        self._probes.pop(guid, None)
        self.unregistered += 1
        self.registrar.unregister(guid, f"{probe.misses} keepalives unanswered")
        return True

    # -- I/O ---------------------------------------------------------------------------------
    def probe(self, binding: Binding) -> None:
        probe = self._probes.get(binding.device_guid)
        if probe is None:
            return
        probe.seq += 1
        seq = probe.seq
        probe.outstanding = seq
        dest = binding.destination()
        uri = binding.request_uri()
        host = self.ctx.addresses.via(Side.SET, dest.transport).host
        request = Request(
            "OPTIONS",
            uri,
            [
                ("Via", self.ctx.addresses.via(Side.SET, dest.transport)),
                ("Max-Forwards", "70"),
                ("From", f"<sip:limen@{host}>;tag={secrets.token_hex(6)}"),
                ("To", f"<{uri}>"),
                ("Call-ID", f"{secrets.token_hex(12)}@limen"),
                ("CSeq", "1 OPTIONS"),
                *(
                    [("User-Agent", self.ctx.settings.sip.server_header)]
                    if self.ctx.settings.sip.server_header
                    else []
                ),
            ],
        )
        guid = binding.device_guid
        self.sent += 1

        def on_event(event: ClientEvent) -> None:
            if isinstance(event, ResponseReceived):
                if event.response.status >= 200:
                    self.answered(guid, seq)
            else:
                self.failed(guid, seq, type(event).__name__)

        self.ctx.stack.send_request(request, dest, on_event)

    def start(self) -> None:
        self._timer = self.ctx.stack.later(self.tick, self._round)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _round(self) -> None:
        stack = self.ctx.stack
        # The next round first: a round that fails must not stop the ones after it.
        self._timer = stack.later(self.tick, self._round)
        try:
            for binding in self.due(stack.now()):
                self.probe(binding)
        except Exception:
            log.exception("keepalive round failed")
