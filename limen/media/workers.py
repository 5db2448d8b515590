"""The media relay in N worker processes: a :class:`~limen.media.engine.MediaEngine` whose
control plane runs in the SIP process and whose packet path runs in the workers.

The split (rtpengine's daemon and kernel forwarding table, in processes)
    The parent does everything the signalling waits for, synchronously and cheaply: SDP
    parse and rewrite, the offer/answer state (:mod:`limen.media.call` on *control
    endpoints* that have no sockets and no SRTP contexts), SDES keys, and port allocation
    from the :class:`~limen.media.ports.PortPool` slice of the worker owning the call. The
    SDP goes back to the caller at once. What the data plane needs (per stream: port,
    remote, latching, SRTP keys in and out, codec clock rates) is then sent to the owning
    worker as a one-way ``apply`` command; ``delete`` likewise. The event loop never
    waits on a worker: writes go to the channel's buffer and nothing awaits an answer.

    Like rtpengine, a call is owned by exactly one worker for its whole life (its ports
    are in that worker's slice, its sockets are bound there); a new call goes to the
    least loaded healthy worker (the next one when that slice is full).

Channel
    One unix socketpair per worker, asyncio streams at both ends, frames of a 4-byte
    big-endian length and a JSON object (SDP never crosses it; keys travel as ``a=crypto``
    values). Parent → worker: the configuration (first frame), ``apply``, ``delete``,
    ``stop``, each with a sequence number. Worker → parent, all asynchronous: ``ready``,
    ``ack`` (the last sequence number done, coalesced), ``failed`` (a call could not be
    set up there, e.g. a port held by another program), ``freed`` (ports whose sockets are
    really closed: only then does the parent reuse them), ``timeout`` (no media),
    ``totals`` (bytes, drops: also the heartbeat) every ``stats_interval`` (1 s), ``stats``
    (per-call statistics, in chunks) every ``call_stats_every`` heartbeats (5: they cost
    the worker ~15 µs per stream), and ``log`` (the worker's log records, re-logged
    by the parent under the same logger name).

    ``query``, ``totals``, ``bytes_received`` and ``drops`` answer from what the parent
    holds: the last statistics pushed (or the control state, before the first push).

Failure
    A worker is *suspect* when it has been silent (no heartbeat, or a command unacked) for
    more than two ``stats_interval``: new calls avoid it. Silent for ``stall_timeout``, or
    its channel closes (it died), or its channel backs up: it is *lost*. An alarm is
    raised, each of its calls is reported ended through ``on_timeout(call_id, reason)``
    (the gateway sends BYE both ways), the process is killed (SIGKILL also ends a
    SIGSTOPped one) and reaped without blocking, and a new worker starts on the same
    slice (the kernel freed its sockets). A slice whose worker fails to start
    ``max_start_failures`` times in a row is retired (another alarm). Other workers'
    calls and the event loop are never affected.

Process model
    Each worker is a fresh interpreter (``subprocess`` running :func:`main`: a spawn, never
    a fork of the parent, whose event loop and threads must not be duplicated). A worker
    runs its own uvloop loop with a :class:`WorkerRelay`, pinned to one core when the
    parent may run on more than one. Workers ignore SIGINT/SIGTERM (the parent stops them)
    and exit when the channel closes, so a dead parent leaves no orphans.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from limen.media.call import (
    Leg,
    MediaCall,
    apply_answer,
    apply_offer,
    new_call,
    stream_stats,
)
from limen.media.engine import AlarmCallback, TimeoutCallback
from limen.media.errors import MediaRefused
from limen.media.policy import LegPolicy, LegSpec, Security
from limen.media.ports import PortPool
from limen.media.relay import MediaRelay
from limen.media.stream import Activity, Endpoint
from limen.sdp import CryptoAttribute, CryptoSuite, SdpParseError, parse_sdp

log = logging.getLogger("limen.media")

_HEADER = struct.Struct("!I")
MAX_FRAME = 16 * 1024 * 1024
# Bytes waiting in the parent's send buffer toward one worker before it counts as lost
# (a stopped worker stops reading; the kernel buffer fills, then asyncio's).
MAX_BACKLOG = 4 * 1024 * 1024
STATS_CHUNK = 64  # calls per ``stats`` frame: the parent decodes each in well under 1 ms

# -- wire format ---------------------------------------------------------------------------


def encode_frame(message: Mapping[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError("control message too large")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("control message is not an object")
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ValueError("control message too large")
    return decode_body(await reader.readexactly(size))


def policy_to_wire(policy: LegPolicy) -> dict[str, Any]:
    return {
        "security": policy.security.value,
        "codecs": list(policy.codecs) if policy.codecs is not None else None,
        "suites": [suite.value for suite in policy.suites],
        "peer": policy.peer,
    }


def policy_from_wire(data: Mapping[str, Any]) -> LegPolicy:
    codecs = data.get("codecs")
    return LegPolicy(
        Security(data["security"]),
        tuple(codecs) if codecs is not None else None,
        tuple(CryptoSuite(name) for name in data["suites"]),
        data.get("peer"),
    )


def spec_to_wire(spec: LegSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "address": spec.address,
        "bind": spec.bind,
        "latch": spec.latch,
        "policy": policy_to_wire(spec.policy),
    }


def spec_from_wire(data: Mapping[str, Any]) -> LegSpec:
    return LegSpec(
        data["name"],
        data["address"],
        data["bind"],
        latch=bool(data["latch"]),
        policy=policy_from_wire(data["policy"]),
    )


def _crypto(value: str | None) -> CryptoAttribute | None:
    return CryptoAttribute.parse(value) if value is not None else None


# -- the control plane's view of a stream ------------------------------------------------------


def _no_clock() -> float:
    return 0.0


class ControlEndpoint(Endpoint):
    """An endpoint as the parent sees it: the offer/answer code of :mod:`limen.media.call`
    runs on it unchanged, but it has no sockets and builds no SRTP context (the worker
    does). It records the remotes the SDP gave (``set_remote`` is not idempotent on the
    worker's side, where latching state lives, so each call is replayed exactly once)."""

    __slots__ = ("remote_args", "remote_gen", "sent_gen")

    def __init__(self, leg: str, index: int, port: int, *, latch: bool, activity: Activity) -> None:
        super().__init__(leg, index, port, latch=latch, activity=activity, time=_no_clock)
        self.remote_args: tuple[str | None, int, int | None] | None = None
        self.remote_gen = 0  # set_remote calls so far
        self.sent_gen = 0  # ... of which the worker has been told

    def set_remote(self, host: str | None, port: int, rtcp_port: int | None) -> None:
        self.remote_args = (host, port, rtcp_port)
        self.remote_gen += 1
        super().set_remote(host, port, rtcp_port)

    def set_srtp_in(self, crypto: CryptoAttribute | None) -> None:
        self.crypto_in = crypto

    def set_srtp_out(self, crypto: CryptoAttribute | None) -> None:
        self.crypto_out = crypto

    def describe(self) -> dict[str, Any]:
        """What the worker needs to (re)configure its endpoint."""
        out: dict[str, Any] = {
            "leg": self.leg,
            "index": self.index,
            "port": self.port,
            "rtcp_mux": self.rtcp_mux,
            "rejected": self.rejected,
            "peer_host": self.peer_host,
            "crypto_in": str(self.crypto_in) if self.crypto_in is not None else None,
            "crypto_out": str(self.crypto_out) if self.crypto_out is not None else None,
            "clock_rates": self.clock_rates,
            "codec": self.codec,
            "ptime": self.ptime,
        }
        if self.remote_gen != self.sent_gen:
            out["remote"] = self.remote_args
            self.sent_gen = self.remote_gen
        return out


def describe_call(call: MediaCall, *, answered: bool) -> dict[str, Any]:
    streams = [
        endpoint.describe()
        for endpoint in call.endpoints()
        if isinstance(endpoint, ControlEndpoint)
    ]
    return {
        "op": "apply",
        "call_id": call.call_id,
        "held": {name: leg.held for name, leg in call.legs.items()},
        "answered": answered,
        "streams": streams,
    }


# -- the worker process --------------------------------------------------------------------


class _Outbox:
    """The worker's channel to the parent: frames written at once, plus the small events
    (acks, freed ports) coalesced into one frame per loop iteration."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.acked: int | None = None
        self.freed: list[int] = []
        self._scheduled = False

    def send(self, message: Mapping[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(message))

    def ack(self, seq: int) -> None:
        self.acked = seq
        self._schedule()

    def free(self, port: int) -> None:
        self.freed.append(port)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self.freed:
            self.send({"event": "freed", "ports": self.freed})
            self.freed = []
        if self.acked is not None:
            self.send({"event": "ack", "seq": self.acked})
            self.acked = None


class _EventLog(logging.Handler):
    """Sends the worker's log records to the parent over the channel."""

    def __init__(self, outbox: _Outbox) -> None:
        super().__init__()
        self.outbox = outbox

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.outbox.send(
                {"event": "log", "name": record.name, "level": record.levelno, "msg": message}
            )
        except Exception:
            self.handleError(record)


class WorkerRelay(MediaRelay):
    """The data plane in a worker: a :class:`MediaRelay` whose calls are configured by the
    parent's ``apply`` commands (ports chosen by the parent, in this worker's slice)
    instead of by SDP."""

    def __init__(self, legs: Sequence[LegSpec], outbox: _Outbox, **options: Any) -> None:
        super().__init__(legs, **options)
        self.outbox = outbox
        self._assigned: dict[str, set[int]] = {}

    def apply(self, message: Mapping[str, Any]) -> None:
        """Create or update a call from the parent's description (MediaRefused: a port
        could not be bound; what was set up stays until the parent's ``delete``)."""
        call_id = str(message["call_id"])
        call = self.calls.get(call_id)
        if call is None:
            call = new_call(call_id, list(self.legs.values()), {}, self._time())
            self.calls[call_id] = call
            self._assigned[call_id] = set()
            log.info("media %s: call set up in worker", call_id)
        assigned = self._assigned[call_id]
        for stream in message["streams"]:
            leg = call.legs[stream["leg"]]
            index = int(stream["index"])
            endpoint = leg.endpoint(index)
            if endpoint is None:
                port = int(stream["port"])
                assigned.add(port)
                endpoint = self.bind_endpoint(
                    call, leg.spec, index, port, functools.partial(self.outbox.free, port)
                )
                if endpoint is None:
                    raise MediaRefused(503, f"media port {port} cannot be bound")
                while len(leg.endpoints) <= index:
                    leg.endpoints.append(None)
                leg.endpoints[index] = endpoint
            _configure(endpoint, stream)
        legs = list(call.legs.values())
        for ea, eb in zip(legs[0].endpoints, legs[1].endpoints, strict=False):
            if ea is not None and eb is not None:
                ea.peer, eb.peer = eb, ea
        for name, held in message["held"].items():
            call.legs[name].held = bool(held)
        if message.get("answered"):
            call.answered = True
            call.activity.last = max(call.activity.last, self._time())

    def delete(self, call_id: str) -> dict[str, Any] | None:
        call = self.calls.get(call_id)
        assigned = self._assigned.pop(call_id, set())
        bound = {endpoint.port for endpoint in call.endpoints()} if call is not None else set()
        stats = super().delete(call_id)
        for port in sorted(assigned - bound):  # never bound: nothing to wait for
            self.outbox.free(port)
        return stats

    def push_stats(self, *, calls: bool = True) -> None:
        """The heartbeat: totals always, each answered call's statistics if ``calls``."""
        items = [
            (call_id, stream_stats(call))
            for call_id, call in self.calls.items()
            if calls and call.answered
        ]
        for start in range(0, len(items), STATS_CHUNK):
            self.outbox.send({"event": "stats", "calls": dict(items[start : start + STATS_CHUNK])})
        self.outbox.send(
            {
                "event": "totals",
                "bytes": self.bytes_received(),
                "drops": self.drops(),
                "calls": len(self.calls),
            }
        )


def _configure(endpoint: Endpoint, stream: Mapping[str, Any]) -> None:
    if "remote" in stream:
        remote = stream["remote"]
        if remote is not None:
            endpoint.set_remote(remote[0], int(remote[1]), remote[2])
    endpoint.rtcp_mux = bool(stream["rtcp_mux"])
    endpoint.rejected = bool(stream["rejected"])
    endpoint.peer_host = stream["peer_host"]
    endpoint.set_srtp_in(_crypto(stream["crypto_in"]))
    endpoint.set_srtp_out(_crypto(stream["crypto_out"]))
    endpoint.clock_rates = {int(pt): int(rate) for pt, rate in stream["clock_rates"].items()}
    endpoint.codec = str(stream["codec"])
    endpoint.ptime = int(stream["ptime"])


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    outbox = _Outbox(writer)
    config = await read_frame(reader)
    root = logging.getLogger()
    root.handlers[:] = [_EventLog(outbox)]
    root.setLevel(int(config.get("log_level", logging.INFO)))
    cpu = config.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError as exc:
            log.debug("media worker: cannot pin to cpu %s: %s", cpu, exc)
    relay = WorkerRelay(
        [spec_from_wire(spec) for spec in config["legs"]],
        outbox,
        port_min=int(config["port_min"]),
        port_max=int(config["port_max"]),
        media_timeout=float(config["media_timeout"]),
        hold_timeout=float(config["hold_timeout"]),
    )

    def timed_out(call_id: str, reason: str) -> None:
        outbox.send({"event": "timeout", "call_id": call_id, "reason": reason})

    relay.on_timeout = timed_out
    await relay.start()
    interval = float(config["stats_interval"])

    every = max(1, int(config.get("call_stats_every", 1)))

    async def push() -> None:
        for tick in itertools.count():
            relay.push_stats(calls=tick % every == 0)
            await asyncio.sleep(interval)

    pusher = asyncio.create_task(push())
    outbox.send({"event": "ready", "pid": os.getpid()})
    try:
        while True:
            try:
                message = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the parent is gone
            op = message.get("op")
            if op == "stop":
                break
            call_id = str(message.get("call_id"))
            try:
                if op == "apply":
                    relay.apply(message)
                elif op == "delete":
                    relay.delete(call_id)
                else:
                    raise ValueError(f"unknown media worker command {op!r}")
            except MediaRefused as exc:
                log.warning("media %s: %s", call_id, exc.reason)
                outbox.send({"event": "failed", "call_id": call_id, "reason": exc.reason})
            except Exception as exc:
                log.exception("media worker command %s failed", op)
                outbox.send({"event": "failed", "call_id": call_id, "reason": str(exc)})
            outbox.ack(int(message.get("seq", 0)))
    finally:
        pusher.cancel()
        await relay.close()
        outbox.flush()
        root.handlers[:] = []
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Worker process entry: ``main([channel_fd])``."""
    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(sock))
    else:
        uvloop.run(_serve(sock))


# -- the parent side -----------------------------------------------------------------------


class _Worker:
    """One slot: its slice of the port range and the process currently serving it."""

    def __init__(self, index: int, pool: PortPool) -> None:
        self.index = index
        self.port_min = pool.port_min
        self.port_max = pool.port_max
        self.pool = pool
        self.process: subprocess.Popen[bytes] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] | None = None
        self.state = "stopped"  # starting, live, lost, retired, stopped
        self.calls: set[str] = set()
        self.closing: set[int] = set()  # ports of deleted calls, until the worker frees them
        self.last_heard = 0.0
        self.unacked: collections.deque[tuple[int, float]] = collections.deque()
        self.bytes: dict[str, int] = {}
        self.drops: dict[str, int] = {}
        self.start_failures = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def live(self) -> bool:
        return self.state == "live"

    def silence(self, now: float) -> float:
        """How long the worker has owed us a sign of life."""
        silent = now - self.last_heard
        if self.unacked:
            silent = max(silent, now - self.unacked[0][1])
        return silent


_WORKER_CODE = "from limen.media.workers import main; main()"


class WorkerPoolEngine:
    """A :class:`~limen.media.engine.MediaEngine` over ``workers`` relay processes."""

    def __init__(
        self,
        legs: Sequence[LegSpec],
        *,
        port_min: int,
        port_max: int,
        workers: int,
        media_timeout: float = 60.0,
        hold_timeout: float = 3600.0,
        stats_interval: float = 1.0,
        call_stats_every: int = 5,
        stall_timeout: float = 3.0,
        start_timeout: float = 30.0,
        max_start_failures: int = 5,
        pin: bool = True,
    ) -> None:
        if len(legs) != 2 or legs[0].name == legs[1].name:
            raise ValueError("a relay joins exactly two differently named legs")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.legs = {spec.name: spec for spec in legs}
        self.media_timeout = media_timeout
        self.hold_timeout = hold_timeout
        self.stats_interval = stats_interval
        self.call_stats_every = call_stats_every
        self.stall_timeout = stall_timeout
        self.suspect_after = min(stall_timeout, 2 * stats_interval)
        self.start_timeout = start_timeout
        self.max_start_failures = max_start_failures
        self.on_timeout: TimeoutCallback | None = None
        self.on_alarm: AlarmCallback | None = None
        self.workers = [
            _Worker(i, pool) for i, pool in enumerate(PortPool(port_min, port_max).split(workers))
        ]
        cpus: list[int] = []
        if pin and hasattr(os, "sched_getaffinity"):
            cpus = sorted(os.sched_getaffinity(0))
        self._cpus = cpus if len(cpus) > 1 else []
        self.calls: dict[str, MediaCall] = {}  # the control state, by call id
        self._owner: dict[str, _Worker] = {}
        self._stats: dict[str, dict[str, Any]] = {}  # last pushed, by call id
        self._seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._monitor: asyncio.TimerHandle | None = None
        self._check_due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._lost_bytes: dict[str, int] = dict.fromkeys(self.legs, 0)
        self._lost_drops: dict[str, int] = {}
        self.alarms: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.timeouts = 0
        self.restarts = 0
        self.crashed_calls = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each is ready (raises if one cannot start)."""
        self._closing = False
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        except BaseException:
            await self.close()
            raise
        self._schedule_monitor()

    async def close(self) -> None:
        """Stop the workers (``stop``, then SIGKILL for stragglers) and reap them."""
        self._closing = True
        if self._monitor is not None:
            self._monitor.cancel()
            self._monitor = None
        for task in list(self._tasks):
            task.cancel()
        for worker in self.workers:
            if worker.writer is not None and not worker.writer.is_closing():
                worker.writer.write(encode_frame({"op": "stop", "seq": next(self._seq)}))
            worker.state = "stopped"
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            w.process is not None and w.process.poll() is None for w in self.workers
        ):
            await asyncio.sleep(0.01)
        for worker in self.workers:
            await self._reap(worker)
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self.calls.clear()
        self._owner.clear()
        self._stats.clear()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every slice that is not retired has a live worker (after a restart)."""
        deadline = time.monotonic() + timeout
        while not all(w.live or w.state == "retired" for w in self.workers):
            if time.monotonic() > deadline:
                raise TimeoutError("media workers not ready")
            await asyncio.sleep(0.01)

    async def settled(self, call_id: str | None = None, timeout: float = 5.0) -> None:
        """Until the worker owning ``call_id`` (None: every live worker) has done every
        command sent so far. For tests and benchmarks that send media the moment the SDP
        is back: in a real call the SDP crosses the network first, and the worker binds
        the ports within that time."""
        deadline = time.monotonic() + timeout
        owner = self._owner.get(call_id) if call_id is not None else None
        workers = [owner] if owner is not None else self.workers
        while any(w.live and w.unacked for w in workers):
            if time.monotonic() > deadline:
                raise TimeoutError("media workers did not catch up")
            await asyncio.sleep(0.002)

    def _time(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    async def _reap(self, worker: _Worker) -> None:
        """Kill (if still running) and wait for the worker's process without blocking the
        loop; close its channel."""
        process = worker.process
        if worker.watcher is not None and worker.watcher is not asyncio.current_task():
            worker.watcher.cancel()
        worker.watcher = None
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            while process.poll() is None:
                await asyncio.sleep(0.005)

    async def _spawn(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        worker.state = "starting"
        try:
            worker.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            theirs.close()
            worker.state = "stopped"
            raise
        theirs.close()
        worker.ready = loop.create_future()
        worker.pool = PortPool(worker.port_min, worker.port_max)  # a fresh process: all free
        worker.closing.clear()
        worker.unacked.clear()
        worker.bytes, worker.drops = dict.fromkeys(self.legs, 0), {}
        cpu = self._cpus[worker.index % len(self._cpus)] if self._cpus else None
        try:
            reader, worker.writer = await asyncio.open_unix_connection(sock=ours)
            worker.writer.write(
                encode_frame(
                    {
                        "legs": [spec_to_wire(spec) for spec in self.legs.values()],
                        "port_min": worker.port_min,
                        "port_max": worker.port_max,
                        "media_timeout": self.media_timeout,
                        "hold_timeout": self.hold_timeout,
                        "stats_interval": self.stats_interval,
                        "call_stats_every": self.call_stats_every,
                        "log_level": logging.getLogger("limen.media").getEffectiveLevel(),
                        "cpu": cpu,
                    }
                )
            )
            worker.watcher = loop.create_task(self._watch(worker, worker.process, reader))
            await asyncio.wait_for(asyncio.shield(worker.ready), self.start_timeout)
        except BaseException:
            await self._reap(worker)
            worker.state = "stopped"
            raise
        worker.state = "live"
        worker.last_heard = self._time()
        worker.start_failures = 0
        log.info(
            "media worker %d (pid %s) ready on ports %d-%d%s",
            worker.index,
            worker.pid,
            worker.port_min,
            worker.port_max,
            f", cpu {cpu}" if cpu is not None else "",
        )

    async def _watch(
        self, worker: _Worker, process: subprocess.Popen[bytes], reader: asyncio.StreamReader
    ) -> None:
        """Messages from one worker process; their end (EOF) is the worker's death."""
        ready = worker.ready
        try:
            while True:
                message = await read_frame(reader)
                if worker.process is not process:
                    return  # a process we already gave up on
                worker.last_heard = self._time()
                self._event(worker, message)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        if ready is not None and not ready.done():
            ready.set_exception(RuntimeError(f"media worker {worker.index} exited at start"))
            return
        if self._closing or worker.process is not process:
            return
        status = process.poll()
        self._lose(
            worker,
            f"media worker {worker.index} (pid {process.pid}) died"
            + (f" (status {status})" if status is not None else ""),
        )

    def _event(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        kind = message.get("event")
        if kind == "ack":
            seq = int(message["seq"])
            while worker.unacked and worker.unacked[0][0] <= seq:
                worker.unacked.popleft()
        elif kind == "stats":
            for call_id, stats in message["calls"].items():
                if self._owner.get(call_id) is worker:
                    self._stats[call_id] = stats
        elif kind == "totals":
            worker.bytes = {str(k): int(v) for k, v in message["bytes"].items()}
            worker.drops = {str(k): int(v) for k, v in message["drops"].items()}
        elif kind == "freed":
            for port in message["ports"]:
                if port in worker.closing:
                    worker.closing.discard(port)
                    worker.pool.release(port)
        elif kind == "timeout":
            call_id = str(message["call_id"])
            if self._owner.get(call_id) is worker:
                self.timeouts += 1
                self._report_ended(call_id, str(message.get("reason", "media timeout")))
        elif kind == "failed":
            call_id = str(message["call_id"])
            if self._owner.get(call_id) is worker:
                reason = f"media setup failed in worker {worker.index}: {message.get('reason')}"
                self.delete(call_id)
                self._report_ended(call_id, reason)
        elif kind == "log":
            logging.getLogger(str(message.get("name", "limen.media"))).log(
                int(message.get("level", logging.INFO)),
                "media worker %d: %s",
                worker.index,
                message.get("msg"),
            )
        elif kind == "ready" and worker.ready is not None and not worker.ready.done():
            worker.ready.set_result(None)

    def _report_ended(self, call_id: str, reason: str) -> None:
        if self.on_timeout is None:
            return
        try:
            self.on_timeout(call_id, reason)
        except Exception:
            log.exception("media %s: ended-call callback failed", call_id)

    def _alarm(self, message: str, severity: str = "error") -> None:
        log.log(logging.ERROR if severity == "error" else logging.WARNING, "%s", message)
        self.alarms.append({"time": time.time(), "severity": severity, "message": message})
        if self.on_alarm is not None:
            try:
                self.on_alarm(message, severity)
            except Exception:
                log.exception("media alarm callback failed")

    # -- health ----------------------------------------------------------------------------

    def _schedule_monitor(self) -> None:
        if self._closing:
            return
        interval = max(0.01, min(self.stats_interval, self.stall_timeout / 4))
        self._check_due = self._time() + interval
        self._monitor = asyncio.get_running_loop().call_later(interval, self._check)

    def _check(self) -> None:
        try:
            now = self._time()
            if now - self._check_due > self.stats_interval:
                # This process was held up itself (the workers' messages are still unread
                # in the channels): judge nobody on this round.
                return
            for worker in self.workers:
                if worker.live and worker.silence(now) > self.stall_timeout:
                    self._lose(
                        worker,
                        f"media worker {worker.index} (pid {worker.pid}) stopped answering "
                        f"for {worker.silence(now):.1f} s",
                    )
        finally:
            self._schedule_monitor()

    def _healthy(self, worker: _Worker, now: float) -> bool:
        return worker.live and worker.silence(now) <= self.suspect_after

    def _lose(self, worker: _Worker, reason: str) -> None:
        """Give up on the worker's process: alarm, end its calls, kill it, start another."""
        if worker.state not in ("live", "starting") or self._closing:
            return
        worker.state = "lost"
        ended = sorted(worker.calls)
        self._alarm(f"{reason}; {len(ended)} calls ended, restarting it")
        for call_id in ended:
            self.calls.pop(call_id, None)
            self._owner.pop(call_id, None)
            self._stats.pop(call_id, None)
        worker.calls.clear()
        self.crashed_calls += len(ended)
        for name, count in worker.bytes.items():
            self._lost_bytes[name] = self._lost_bytes.get(name, 0) + count
        for reason_name, count in worker.drops.items():
            self._lost_drops[reason_name] = self._lost_drops.get(reason_name, 0) + count
        worker.bytes, worker.drops = {}, {}
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        if worker.process is not None and worker.process.poll() is None:
            with contextlib.suppress(OSError):
                worker.process.kill()  # also ends a SIGSTOPped process
        loop = asyncio.get_running_loop()
        for call_id in ended:  # not from inside whatever called us (an offer, say)
            loop.call_soon(self._report_ended, call_id, reason)
        task = loop.create_task(self._restart(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, worker: _Worker) -> None:
        await self._reap(worker)
        delay = 0.1
        while not self._closing:
            try:
                await self._spawn(worker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                worker.start_failures += 1
                if worker.start_failures >= self.max_start_failures:
                    worker.state = "retired"
                    self._alarm(
                        f"media worker {worker.index}: {worker.start_failures} failed starts "
                        f"({exc}); ports {worker.port_min}-{worker.port_max} retired"
                    )
                    return
                log.error("media worker %d: restart failed: %s", worker.index, exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
            else:
                self.restarts += 1
                self._alarm(f"media worker {worker.index} restarted (pid {worker.pid})", "warning")
                return

    # -- control ---------------------------------------------------------------------------

    def _send(self, worker: _Worker, message: dict[str, Any]) -> None:
        """One way: into the channel's buffer, never waiting for the worker."""
        writer = worker.writer
        if writer is None or writer.is_closing() or not worker.live:
            return
        seq = next(self._seq)
        message["seq"] = seq
        worker.unacked.append((seq, self._time()))
        writer.write(encode_frame(message))
        if writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            self._lose(worker, f"media worker {worker.index} (pid {worker.pid}) is not reading")

    @staticmethod
    def _parse(sdp: bytes) -> Any:
        try:
            return parse_sdp(sdp)
        except SdpParseError as exc:
            raise MediaRefused(488, f"bad SDP: {exc}") from None

    def offer(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
    ) -> bytes:
        return self._offer(call_id, from_leg, sdp, policy, plain=False)

    def reoffer_plain(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
    ) -> bytes:
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
        if call is not None:
            owner = self._owner[call_id]
            if policy:
                for name, leg_policy in policy.items():
                    if name in call.legs:
                        call.legs[name].policy = leg_policy
            out = self._apply_offer(owner, call, from_leg, parsed, plain)
            self._send(owner, describe_call(call, answered=False))
            return out
        now = self._time()
        candidates = sorted(
            (w for w in self.workers if self._healthy(w, now)),
            key=lambda w: (len(w.calls), w.index),
        )
        refusal = MediaRefused(503, "no media worker available")
        for worker in candidates:
            call = new_call(call_id, list(self.legs.values()), dict(policy or {}), now)
            try:
                out = self._apply_offer(worker, call, from_leg, parsed, plain)
            except MediaRefused as exc:
                if exc.status != 503:
                    raise
                refusal = exc  # this worker's slice is full: try the next
                continue
            self.calls[call_id] = call
            self._owner[call_id] = worker
            worker.calls.add(call_id)
            self._send(worker, describe_call(call, answered=False))
            return out
        raise refusal

    def _apply_offer(
        self, worker: _Worker, call: MediaCall, from_leg: str, parsed: Any, plain: bool
    ) -> bytes:
        pool = worker.pool

        def allocate(leg: Leg, index: int) -> Endpoint:
            port = pool.take()
            if port is None:
                raise MediaRefused(503, "no media ports left")
            return ControlEndpoint(
                leg.spec.name, index, port, latch=leg.spec.latch, activity=call.activity
            )

        def release(endpoint: Endpoint) -> None:  # never sent to the worker: free at once
            pool.release(endpoint.port)

        out = apply_offer(
            call,
            from_leg,
            parsed,
            plain=plain,
            allocate=allocate,
            release=release,
            available=pool.available,
        )
        return bytes(out)

    def answer(self, call_id: str, from_leg: str, sdp: bytes) -> bytes:
        if from_leg not in self.legs:
            raise ValueError(f"unknown leg {from_leg!r}")
        call = self.calls.get(call_id)
        if call is None:
            raise MediaRefused(481, "no such media session")
        out = apply_answer(call, from_leg, self._parse(sdp), now=self._time())
        self._send(self._owner[call_id], describe_call(call, answered=True))
        return bytes(out)

    def delete(self, call_id: str) -> dict[str, Any] | None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return None
        worker = self._owner.pop(call_id)
        worker.calls.discard(call_id)
        stats = self._stats.pop(call_id, None) or stream_stats(call)
        if worker.live:  # else the slice's pool is renewed with the next process
            worker.closing.update(endpoint.port for endpoint in call.endpoints())
            self._send(worker, {"op": "delete", "call_id": call_id})
        return stats

    def query(self, call_id: str) -> dict[str, Any]:
        stats = self._stats.get(call_id)
        if stats is not None:
            return stats
        call = self.calls.get(call_id)
        return stream_stats(call) if call is not None else {}

    def worker_of(self, call_id: str) -> int | None:
        """The index of the worker owning the call (None: no such call)."""
        owner = self._owner.get(call_id)
        return owner.index if owner is not None else None

    def totals(self) -> dict[str, Any]:
        now = self._time() if self._loop is not None else 0.0
        per_worker = []
        for worker in self.workers:
            in_use = worker.pool.in_use * 2 if worker.live else 0
            per_worker.append(
                {
                    "index": worker.index,
                    "pid": worker.pid,
                    "state": worker.state,
                    "live": worker.live,
                    "healthy": self._healthy(worker, now),
                    "port_min": worker.port_min,
                    "port_max": worker.port_max,
                    "calls": len(worker.calls),
                    "ports_in_use": in_use,
                    "ports_available": worker.pool.available * 2 if worker.live else 0,
                    "silent_s": round(worker.silence(now), 3) if worker.live else None,
                }
            )
        return {
            "calls": len(self.calls),
            "ports_in_use": sum(w["ports_in_use"] for w in per_worker),
            "ports_available": sum(w["ports_available"] for w in per_worker),
            "timeouts": self.timeouts,
            "restarts": self.restarts,
            "crashed_calls": self.crashed_calls,
            "alarms": list(self.alarms),
            "workers": per_worker,
        }

    def bytes_received(self) -> dict[str, int]:
        """Media bytes received per leg across the workers, as last pushed (a worker that
        was lost contributes what it pushed last)."""
        totals = dict(self._lost_bytes)
        for worker in self.workers:
            for name, count in worker.bytes.items():
                totals[name] = totals.get(name, 0) + count
        return totals

    def drops(self) -> dict[str, int]:
        totals = dict(self._lost_drops)
        for worker in self.workers:
            for reason, count in worker.drops.items():
                totals[reason] = totals.get(reason, 0) + count
        return totals
