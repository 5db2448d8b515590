"""The in-process media relay: ports, sockets, calls, timeouts (a :class:`MediaEngine`).

Sockets are created and bound synchronously inside ``offer`` (so a port that cannot be
bound is skipped and exhaustion is known before any SDP leaves), then handed to the event
loop as ``asyncio`` datagram endpoints (uvloop when the loop is uvloop). Packets that arrive
before the endpoint is attached wait in the kernel's socket buffer.

Media timeout: a timer every ``min(1 s, timeout / 4)`` looks for calls whose endpoints saw
no packet for ``media_timeout`` seconds (``hold_timeout`` while a leg holds) and calls
``on_timeout(call_id, reason)`` once per call; the gateway then sends BYE on both legs and calls
``delete``. :meth:`MediaRelay.expired` is the sans-IO part (explicit ``now``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from limen.media.call import (
    Leg,
    MediaCall,
    apply_answer,
    apply_offer,
    new_call,
    release_all,
    stream_stats,
)
from limen.media.engine import AlarmCallback, TimeoutCallback
from limen.media.errors import MediaRefused
from limen.media.policy import LegPolicy, LegSpec
from limen.media.ports import PortPool
from limen.media.stream import Endpoint
from limen.sdp import SdpParseError, parse_sdp

log = logging.getLogger("limen.media")


class _Protocol(asyncio.DatagramProtocol):
    """Hands datagrams straight to an endpoint method (no per-packet indirection)."""

    def __init__(self, receive: Any, attach: Any, lost: Any) -> None:
        self.datagram_received = receive  # type: ignore[method-assign]
        self._attach = attach
        self._lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._attach(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable after a send
        log.debug("media socket error: %s", exc)


class _Binding:
    """The two sockets of one endpoint and their transports."""

    __slots__ = ("closed", "endpoint", "on_closed", "open", "sockets", "tasks")

    def __init__(
        self, endpoint: Endpoint, sockets: list[socket.socket], on_closed: Callable[[], None]
    ) -> None:
        self.endpoint = endpoint
        self.sockets = sockets
        self.tasks: list[asyncio.Future[Any]] = []
        self.closed = False
        self.open = len(sockets)
        self.on_closed = on_closed  # both sockets really closed: the ports may be reused

    def close(self) -> None:
        """Close both transports (now, or when their creation completes)."""
        self.closed = True
        for task, sock in zip(self.tasks, self.sockets, strict=True):
            if task.done():
                self._close_result(task, sock=sock)
            else:
                task.add_done_callback(functools.partial(self._close_result, sock=sock))
        self.endpoint.transport = self.endpoint.rtcp_transport = None

    def _close_result(self, task: asyncio.Future[Any], *, sock: socket.socket) -> None:
        if not task.cancelled() and task.exception() is None:
            task.result()[0].close()  # connection_lost follows
        else:
            sock.close()
            self.socket_closed()

    def socket_closed(self) -> None:
        self.open -= 1
        if self.open == 0:
            self.on_closed()


class MediaRelay:
    """In-process :class:`~limen.media.engine.MediaEngine` over two leg kinds."""

    def __init__(
        self,
        legs: Sequence[LegSpec],
        *,
        port_min: int,
        port_max: int,
        media_timeout: float = 60.0,
        hold_timeout: float = 3600.0,
    ) -> None:
        if len(legs) != 2 or legs[0].name == legs[1].name:
            raise ValueError("a relay joins exactly two differently named legs")
        self.legs = {spec.name: spec for spec in legs}
        self.pool = PortPool(port_min, port_max)
        self.media_timeout = media_timeout
        self.hold_timeout = hold_timeout
        self.on_timeout: TimeoutCallback | None = None
        self.on_alarm: AlarmCallback | None = None  # nothing here to alarm about (one process)
        self.calls: dict[str, MediaCall] = {}
        self._bindings: dict[int, _Binding] = {}  # by id(endpoint)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.timeouts = 0
        # Bytes received per leg by calls that have ended (live calls are summed on demand).
        self._ended_bytes: dict[str, int] = dict.fromkeys(self.legs, 0)
        # Packets dropped by reason (srtp-auth, srtp-replay, source, stun, dtls ...) by
        # calls that have ended.
        self._ended_drops: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for call_id in list(self.calls):
            self.delete(call_id)
        for _ in range(100):  # let pending endpoint tasks finish and sockets close
            if not self.pool.in_use:
                break
            await asyncio.sleep(0.001)

    def _time(self) -> float:
        return self._get_loop().time()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- control ---------------------------------------------------------------------------

    def offer(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
    ) -> bytes:
        """SDP offered by ``from_leg`` → the SDP to offer the other leg (new call or
        re-offer)."""
        return self._offer(call_id, from_leg, sdp, policy, plain=False)

    def reoffer_plain(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
    ) -> bytes:
        """The same offer, plain RTP/AVP toward the other leg whatever its policy (the
        retry after a 488/606 to an SRTP offer under "Prefer"), on the same ports."""
        if call_id not in self.calls:
            raise MediaRefused(481, "no such media session")
        return self._offer(call_id, from_leg, sdp, policy, plain=True)

    def _offer(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        policy: Mapping[str, LegPolicy] | None,
        *,
        plain: bool,
    ) -> bytes:
        if from_leg not in self.legs:
            raise ValueError(f"unknown leg {from_leg!r}")
        parsed = self._parse(sdp)
        call = self.calls.get(call_id)
        created = call is None
        if call is None:
            call = new_call(call_id, list(self.legs.values()), dict(policy or {}), self._time())
        elif policy:
            for name, leg_policy in policy.items():
                if name in call.legs:
                    call.legs[name].policy = leg_policy
        try:
            out = apply_offer(
                call,
                from_leg,
                parsed,
                plain=plain,
                allocate=lambda leg, index: self._allocate(call, leg, index),
                release=self._release,
                available=self.pool.available,
            )
        except MediaRefused:
            if created:
                release_all(call, self._release)
            raise
        if created:
            self.calls[call_id] = call
            log.info("media %s: call created by %s offer", call_id, from_leg)
        return bytes(out)

    def answer(self, call_id: str, from_leg: str, sdp: bytes) -> bytes:
        call = self.calls.get(call_id)
        if call is None:
            raise MediaRefused(481, "no such media session")
        out = apply_answer(call, from_leg, self._parse(sdp), now=self._time())
        return bytes(out)

    def delete(self, call_id: str) -> dict[str, Any] | None:
        """End the call's media, free its ports; returns (and logs) its final stats."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return None
        stats = stream_stats(call)
        for name, leg in call.legs.items():
            self._ended_bytes[name] += sum(ep.bytes_in for ep in leg.endpoints if ep is not None)
        for endpoint in call.endpoints():
            for reason, count in endpoint.dropped.items():
                self._ended_drops[reason] = self._ended_drops.get(reason, 0) + count
        release_all(call, self._release)
        for name, leg in stats["legs"].items():  # type: ignore[attr-defined]
            for s in leg["streams"]:
                log.info(
                    "media %s %s#%s: %s packets %s bytes lost %s jitter %s ms rtt %s ms mos %s "
                    "dropped %s",
                    call_id,
                    name,
                    s["index"],
                    s["packets"],
                    s["bytes"],
                    s["lost"],
                    s["jitter_ms"],
                    s["rtt_ms"],
                    s["mos"],
                    s["dropped"],
                )
        return stats

    def bytes_received(self) -> dict[str, int]:
        """Media bytes received so far on each leg, ended calls included (monotonic): what
        the metrics turn into MBG's bandwidth gauges. A leg's bytes out are the other
        leg's bytes in (give or take the SRTP tag)."""
        totals = dict(self._ended_bytes)
        for call in self.calls.values():
            for name, leg in call.legs.items():
                totals[name] += sum(ep.bytes_in for ep in leg.endpoints if ep is not None)
        return totals

    def drops(self) -> dict[str, int]:
        """Packets dropped so far by reason, ended calls included (monotonic): never
        forwarded (RTP bleed, forged or replayed SRTP, STUN/DTLS we do not speak)."""
        totals = dict(self._ended_drops)
        for call in self.calls.values():
            for endpoint in call.endpoints():
                for reason, count in endpoint.dropped.items():
                    totals[reason] = totals.get(reason, 0) + count
        return totals

    def query(self, call_id: str) -> dict[str, Any]:
        call = self.calls.get(call_id)
        return stream_stats(call) if call is not None else {}

    def totals(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "ports_in_use": self.pool.in_use * 2,
            "ports_available": self.pool.available * 2,
            "timeouts": self.timeouts,
        }

    # -- timeouts --------------------------------------------------------------------------

    def expired(self, now: float) -> list[str]:
        """Calls silent past their timeout at ``now`` (each reported once)."""
        out = []
        for call in self.calls.values():
            if call.timed_out:
                continue
            limit = self.hold_timeout if call.held else self.media_timeout
            if now - call.activity.last >= limit:
                call.timed_out = True
                out.append(call.call_id)
        return out

    def _schedule(self) -> None:
        interval = max(0.01, min(1.0, self.media_timeout / 4))
        self._timer = self._get_loop().call_later(interval, self._tick)

    def _tick(self) -> None:
        try:
            for call_id in self.expired(self._time()):
                self.timeouts += 1
                log.info("media %s: no media, timing out", call_id)
                if self.on_timeout is not None:
                    try:
                        self.on_timeout(call_id, "media timeout")
                    except Exception:
                        log.exception("media %s: timeout callback failed", call_id)
        finally:
            self._schedule()

    # -- sockets ---------------------------------------------------------------------------

    @staticmethod
    def _parse(sdp: bytes) -> Any:
        try:
            return parse_sdp(sdp)
        except SdpParseError as exc:
            raise MediaRefused(488, f"bad SDP: {exc}") from None

    def _allocate(self, call: MediaCall, leg: Leg, index: int) -> Endpoint:
        for _ in range(self.pool.capacity):
            port = self.pool.take()
            if port is None:
                break
            endpoint = self.bind_endpoint(call, leg.spec, index, port)
            if endpoint is not None:
                return endpoint
            self.pool.release(port)  # to the end of the queue: try the next pair
        raise MediaRefused(503, "no media ports left")

    def bind_endpoint(
        self,
        call: MediaCall,
        spec: LegSpec,
        index: int,
        port: int,
        on_closed: Callable[[], None] | None = None,
    ) -> Endpoint | None:
        """Bind ``port`` and ``port + 1`` and attach them to the loop: the endpoint, or
        None when the pair cannot be bound (some other program holds a port).
        ``on_closed``: called once both sockets are really closed (default: the pair goes
        back to this relay's pool)."""
        loop = self._get_loop()
        family = socket.AF_INET6 if ":" in spec.bind else socket.AF_INET
        sockets: list[socket.socket] = []
        try:
            for number in (port, port + 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.setblocking(False)
                sock.bind((spec.bind, number))
        except OSError:
            for sock in sockets:
                sock.close()
            return None
        endpoint = Endpoint(
            spec.name,
            index,
            port,
            latch=spec.latch,
            activity=call.activity,
            time=loop.time,
        )
        closed = on_closed if on_closed is not None else functools.partial(self.pool.release, port)
        binding = _Binding(endpoint, sockets, closed)
        self._bindings[id(endpoint)] = binding
        self._attach(loop, binding, sockets[0], endpoint.receive_rtp, False)
        self._attach(loop, binding, sockets[1], endpoint.receive_rtcp, True)
        return endpoint

    @staticmethod
    def _attach(
        loop: asyncio.AbstractEventLoop,
        binding: _Binding,
        sock: socket.socket,
        receive: Any,
        rtcp: bool,
    ) -> None:
        endpoint = binding.endpoint

        def attached(transport: asyncio.BaseTransport) -> None:
            if binding.closed:
                return
            if rtcp:
                endpoint.rtcp_transport = transport  # type: ignore[assignment]
            else:
                endpoint.transport = transport  # type: ignore[assignment]

        task = asyncio.ensure_future(
            loop.create_datagram_endpoint(
                lambda: _Protocol(receive, attached, binding.socket_closed), sock=sock
            )
        )
        binding.tasks.append(task)

    def _release(self, endpoint: Endpoint) -> None:
        binding = self._bindings.pop(id(endpoint), None)
        if binding is not None:
            binding.close()  # the port pair returns to the pool when both sockets closed
