"""The media relay in N worker processes (issue 5, "Performance design"): a
:class:`~limen.media.engine.MediaEngine` that forwards each call to the worker owning it.

Process model
    Each worker is a fresh interpreter (``subprocess`` running :func:`main`: a spawn, never
    a fork of the parent, whose event loop and threads must not be duplicated; not
    ``multiprocessing``, whose spawn start method also leaves a resource-tracker child
    behind and re-imports ``__main__``). A worker runs its own uvloop loop with a
    :class:`~limen.media.relay.MediaRelay` over its slice of the port range
    (:meth:`~limen.media.ports.PortPool.split`), pinned to one core when the parent may run
    on more than one. Workers ignore SIGINT/SIGTERM (the parent stops them) and exit when
    the parent's end of the control channel closes, so a dead parent leaves no orphans.

Control protocol
    Two socketpairs per worker, frames of a 4-byte big-endian length and a JSON object
    (SDP travels as a latin-1 string, i.e. bytes unchanged):

    - *control*, parent → worker requests ``{"id", "op", ...}`` (``offer``, ``answer``,
      ``delete``, ``query``, ``totals``, ``bytes``, ``stop``; the first frame is the
      worker's configuration) and worker → parent replies ``{"id", "result"}`` or
      ``{"id", "error": {"status", "reason"}}`` (a :class:`MediaError`), correlated by id.
    - *events*, worker → parent: ``ready``, ``timeout`` (a call's media timed out: the
      parent calls ``on_timeout``), ``log`` (the worker's log records, re-logged by the
      parent under the same logger name).

Sync control, on purpose
    The gateway's call controller calls ``offer``/``answer``/``delete`` synchronously and
    uses the SDP they return at once, so the parent side of the control channel is a
    blocking send + receive with a short timeout (``request_timeout``, 2 s). That blocks the
    parent's loop for one local round trip per call-setup step (tens of microseconds; the
    worker answers between packets), never per packet: packets never cross the parent.
    A request without an answer in time fails with 503 (a late answer is recognised by its
    id and skipped); a worker that misses ``max_misses`` (3) in a row, or whose channel
    breaks, is killed and restarted like a crashed one.

Calls and crashes
    A new call goes to the least loaded ready worker (the next one if that worker's slice is
    exhausted) and stays there. The event channel's EOF tells the parent a worker died: its
    calls are reported ended through ``on_timeout`` (the gateway sends BYE both ways), the
    process is reaped, and a new worker is started on the same slice (the kernel freed its
    sockets). ``totals`` and ``bytes_received`` sum the workers' answers; bytes counted by a
    worker that died are kept (up to its last answer).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from limen.media.engine import TimeoutCallback
from limen.media.errors import MediaError
from limen.media.policy import LegPolicy, LegSpec, Security
from limen.media.ports import PortPool
from limen.sdp import CryptoSuite

log = logging.getLogger("limen.media")

_HEADER = struct.Struct("!I")
MAX_FRAME = 16 * 1024 * 1024

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


class Desynchronised(ConnectionError):
    """A frame was cut short (a timeout in the middle of it): the channel is unusable."""


def _recv_exact(sock: socket.socket, size: int, deadline: float, *, started: bool) -> bytes:
    """``size`` bytes before ``deadline``. TimeoutError only when nothing of the frame has
    arrived (``started`` false and ``buf`` empty): the channel is still in step then."""
    buf = bytearray()
    while len(buf) < size:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("media worker did not answer")
            sock.settimeout(remaining)
            chunk = sock.recv(size - len(buf))
        except TimeoutError:
            if started or buf:
                raise Desynchronised("media worker sent half a message") from None
            raise
        if not chunk:
            raise ConnectionError("media worker closed its control channel")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, deadline: float) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline, started=False))
    if size > MAX_FRAME:
        raise ValueError("control message too large")
    return decode_body(_recv_exact(sock, size, deadline, started=True))


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


# -- the worker process --------------------------------------------------------------------


class _EventLog(logging.Handler):
    """Sends the worker's log records to the parent over the event channel."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        if self.writer.is_closing():
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            event = {"event": "log", "name": record.name, "level": record.levelno, "msg": message}
            self.writer.write(encode_frame(event))
        except Exception:
            self.handleError(record)


def _dispatch(relay: Any, message: Mapping[str, Any]) -> dict[str, Any]:
    rid = message.get("id")
    op = message.get("op")
    try:
        result: Any
        if op == "offer":
            wire = message.get("policy")
            policy = {k: policy_from_wire(v) for k, v in wire.items()} if wire else None
            result = relay.offer(
                message["call_id"],
                message["leg"],
                message["sdp"].encode("latin-1"),
                policy=policy,
                plain=bool(message.get("plain")),
            ).decode("latin-1")
        elif op == "answer":
            result = relay.answer(
                message["call_id"], message["leg"], message["sdp"].encode("latin-1")
            ).decode("latin-1")
        elif op == "delete":
            result = relay.delete(message["call_id"])
        elif op == "query":
            result = relay.query(message["call_id"])
        elif op == "totals":
            result = relay.totals()
        elif op == "bytes":
            result = relay.bytes_received()
        else:
            raise ValueError(f"unknown media worker request {op!r}")
    except MediaError as exc:
        return {"id": rid, "error": {"status": exc.status, "reason": exc.reason}}
    except Exception as exc:
        log.exception("media worker request %s failed", op)
        return {"id": rid, "error": {"type": type(exc).__name__, "reason": str(exc)}}
    return {"id": rid, "result": result}


async def _serve(control: socket.socket, events: socket.socket) -> None:
    from limen.media.relay import MediaRelay  # the parent never needs the packet path

    control_in, control_out = await asyncio.open_connection(sock=control)
    _, events_out = await asyncio.open_connection(sock=events)
    config = await read_frame(control_in)
    handler = _EventLog(events_out)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(int(config.get("log_level", logging.INFO)))
    cpu = config.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError as exc:
            log.debug("media worker: cannot pin to cpu %s: %s", cpu, exc)
    relay = MediaRelay(
        [spec_from_wire(spec) for spec in config["legs"]],
        port_min=int(config["port_min"]),
        port_max=int(config["port_max"]),
        media_timeout=float(config["media_timeout"]),
        hold_timeout=float(config["hold_timeout"]),
    )

    def timed_out(call_id: str) -> None:
        events_out.write(encode_frame({"event": "timeout", "call_id": call_id}))

    relay.on_timeout = timed_out
    await relay.start()
    events_out.write(encode_frame({"event": "ready", "pid": os.getpid()}))
    try:
        while True:
            try:
                message = await read_frame(control_in)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the parent is gone
            if message.get("op") == "stop":
                await relay.close()
                control_out.write(encode_frame({"id": message.get("id"), "result": None}))
                break
            control_out.write(encode_frame(_dispatch(relay, message)))
    finally:
        await relay.close()
        root.handlers[:] = []
        for writer in (control_out, events_out):
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Worker process entry: ``main([control_fd, event_fd])``."""
    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control = socket.socket(fileno=int(args[0]))
    events = socket.socket(fileno=int(args[1]))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(control, events))
    else:
        uvloop.run(_serve(control, events))


# -- the parent side -----------------------------------------------------------------------


class _Worker:
    """One slot: its slice of the port range and the process currently serving it."""

    def __init__(self, index: int, pool: PortPool) -> None:
        self.index = index
        self.port_min = pool.port_min
        self.port_max = pool.port_max
        self.process: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.events: asyncio.StreamWriter | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] | None = None
        self.live = False  # started and answering requests
        self.misses = 0  # requests in a row without an answer in time
        self.calls: set[str] = set()
        self.last_bytes: dict[str, int] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


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
        request_timeout: float = 2.0,
        max_misses: int = 3,
        start_timeout: float = 30.0,
        pin: bool = True,
    ) -> None:
        if len(legs) != 2 or legs[0].name == legs[1].name:
            raise ValueError("a relay joins exactly two differently named legs")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.legs = list(legs)
        self._leg_names = {spec.name for spec in legs}
        self.media_timeout = media_timeout
        self.hold_timeout = hold_timeout
        self.request_timeout = request_timeout
        self.max_misses = max_misses
        self.start_timeout = start_timeout
        self.on_timeout: TimeoutCallback | None = None
        self.workers = [
            _Worker(i, pool) for i, pool in enumerate(PortPool(port_min, port_max).split(workers))
        ]
        cpus: list[int] = []
        if pin and hasattr(os, "sched_getaffinity"):
            cpus = sorted(os.sched_getaffinity(0))
        self._cpus = cpus if len(cpus) > 1 else []
        self._owner: dict[str, _Worker] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._lost_bytes: dict[str, int] = dict.fromkeys(self._leg_names, 0)
        self.timeouts = 0
        self.restarts = 0
        self.crashed_calls = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each is ready (raises if one cannot start)."""
        self._closing = False
        try:
            await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the workers (a ``stop`` request, then SIGKILL for stragglers), reap them."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for worker in self.workers:
            worker.live = False
            if worker.control is not None:
                with contextlib.suppress(OSError):
                    worker.control.settimeout(0.5)
                    worker.control.sendall(encode_frame({"id": next(self._ids), "op": "stop"}))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            w.process is not None and w.process.poll() is None for w in self.workers
        ):
            await asyncio.sleep(0.01)
        for worker in self.workers:
            self._reap(worker)
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._owner.clear()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every worker is live (after a restart)."""
        deadline = time.monotonic() + timeout
        while not all(worker.live for worker in self.workers):
            if time.monotonic() > deadline:
                raise TimeoutError("media workers not ready")
            await asyncio.sleep(0.01)

    def _reap(self, worker: _Worker) -> None:
        """Kill (if still running) and wait for the worker's process; close its channels."""
        worker.live = False
        process = worker.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
        if worker.watcher is not None and worker.watcher is not asyncio.current_task():
            worker.watcher.cancel()
        worker.watcher = None
        if worker.control is not None:
            worker.control.close()
            worker.control = None
        if worker.events is not None:
            worker.events.close()
            worker.events = None

    async def _spawn(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        control, child_control = socket.socketpair()
        events, child_events = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        fds = (child_control.fileno(), child_events.fileno())
        try:
            worker.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, *map(str, fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            for sock in (control, child_control, events, child_events):
                sock.close()
            raise
        child_control.close()
        child_events.close()
        worker.control = control
        worker.ready = loop.create_future()
        try:
            cpu = self._cpus[worker.index % len(self._cpus)] if self._cpus else None
            config = {
                "legs": [spec_to_wire(spec) for spec in self.legs],
                "port_min": worker.port_min,
                "port_max": worker.port_max,
                "media_timeout": self.media_timeout,
                "hold_timeout": self.hold_timeout,
                "log_level": logging.getLogger("limen.media").getEffectiveLevel(),
                "cpu": cpu,
            }
            control.settimeout(self.request_timeout)
            control.sendall(encode_frame(config))
            reader, worker.events = await asyncio.open_connection(sock=events)
            worker.watcher = loop.create_task(self._watch(worker, reader, worker.ready))
            await asyncio.wait_for(asyncio.shield(worker.ready), self.start_timeout)
        except BaseException:
            self._reap(worker)
            raise
        worker.live = True
        worker.misses = 0
        worker.last_bytes = dict.fromkeys(self._leg_names, 0)
        log.info(
            "media worker %d (pid %s) ready on ports %d-%d%s",
            worker.index,
            worker.pid,
            worker.port_min,
            worker.port_max,
            f", cpu {cpu}" if cpu is not None else "",
        )

    async def _watch(
        self, worker: _Worker, reader: asyncio.StreamReader, ready: asyncio.Future[None]
    ) -> None:
        """Events from one worker process; its end (EOF) is the worker's death."""
        try:
            while True:
                event = await read_frame(reader)
                kind = event.get("event")
                if kind == "ready":
                    if not ready.done():
                        ready.set_result(None)
                elif kind == "timeout":
                    self._timed_out(worker, str(event.get("call_id")))
                elif kind == "log":
                    logging.getLogger(str(event.get("name", "limen.media"))).log(
                        int(event.get("level", logging.INFO)),
                        "media worker %d: %s",
                        worker.index,
                        event.get("msg"),
                    )
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        if not ready.done():
            ready.set_exception(RuntimeError(f"media worker {worker.index} exited at start"))
            return
        if self._closing or worker.watcher is not asyncio.current_task():
            return
        self._crashed(worker)

    def _timed_out(self, worker: _Worker, call_id: str) -> None:
        if self._owner.get(call_id) is not worker:
            return
        self.timeouts += 1
        self._report_ended(call_id)

    def _report_ended(self, call_id: str) -> None:
        if self.on_timeout is None:
            return
        try:
            self.on_timeout(call_id)
        except Exception:
            log.exception("media %s: timeout callback failed", call_id)

    def _crashed(self, worker: _Worker) -> None:
        """The worker died: reap it, end its calls, start a new one on the same slice."""
        process = worker.process
        self._reap(worker)
        status = process.returncode if process is not None else None
        ended = sorted(worker.calls)
        worker.calls.clear()
        for call_id in ended:
            self._owner.pop(call_id, None)
        for name, count in worker.last_bytes.items():
            self._lost_bytes[name] = self._lost_bytes.get(name, 0) + count
        worker.last_bytes = {}
        self.crashed_calls += len(ended)
        log.error(
            "media worker %d (pid %s) died (status %s); %d calls ended, restarting",
            worker.index,
            process.pid if process is not None else None,
            status,
            len(ended),
        )
        for call_id in ended:
            self._report_ended(call_id)
        task = asyncio.get_running_loop().create_task(self._restart(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, worker: _Worker) -> None:
        delay = 0.1
        while not self._closing:
            try:
                await self._spawn(worker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("media worker %d: restart failed: %s", worker.index, exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
            else:
                self.restarts += 1
                return

    # -- requests --------------------------------------------------------------------------

    def _request(self, worker: _Worker, message: dict[str, Any]) -> Any:
        """One blocking round trip on the worker's control channel (see the module doc)."""
        sock = worker.control
        if not worker.live or sock is None:
            raise MediaError(503, "media worker unavailable")
        rid = next(self._ids)
        message["id"] = rid
        deadline = time.monotonic() + self.request_timeout
        try:
            sock.settimeout(self.request_timeout)
            sock.sendall(encode_frame(message))
            while True:
                reply = recv_frame(sock, deadline)
                if reply.get("id") == rid:
                    break
        except TimeoutError:
            # Slow, not broken: the channel is in step (a late reply is skipped by its id).
            # Only a worker that keeps not answering is killed.
            worker.misses += 1
            log.error(
                "media worker %d: no answer to %s (%d in a row)",
                worker.index,
                message.get("op"),
                worker.misses,
            )
            if worker.misses >= self.max_misses:
                self._kill(worker)
            raise MediaError(503, "media worker unavailable") from None
        except (OSError, ValueError) as exc:  # a dead worker or a broken channel
            log.error("media worker %d: %s failed: %s", worker.index, message.get("op"), exc)
            self._kill(worker)
            raise MediaError(503, "media worker unavailable") from None
        worker.misses = 0
        error = reply.get("error")
        if error is not None:
            if "status" in error:
                raise MediaError(int(error["status"]), str(error["reason"]))
            if error.get("type") == "ValueError":
                raise ValueError(error.get("reason"))
            raise RuntimeError(f"media worker: {error.get('type')}: {error.get('reason')}")
        return reply.get("result")

    @staticmethod
    def _kill(worker: _Worker) -> None:
        """Take the worker out of service; its watcher sees EOF and restarts it."""
        worker.live = False
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()

    def _check_leg(self, leg: str) -> None:
        if leg not in self._leg_names:
            raise ValueError(f"unknown leg {leg!r}")

    def offer(
        self,
        call_id: str,
        from_leg: str,
        sdp: bytes,
        *,
        policy: Mapping[str, LegPolicy] | None = None,
        plain: bool = False,
    ) -> bytes:
        self._check_leg(from_leg)
        message: dict[str, Any] = {
            "op": "offer",
            "call_id": call_id,
            "leg": from_leg,
            "sdp": sdp.decode("latin-1"),
            "policy": {k: policy_to_wire(v) for k, v in policy.items()} if policy else None,
            "plain": plain,
        }
        owner = self._owner.get(call_id)
        if owner is not None:
            return str(self._request(owner, message)).encode("latin-1")
        candidates = sorted(
            (w for w in self.workers if w.live), key=lambda w: (len(w.calls), w.index)
        )
        refusal = MediaError(503, "no media worker available")
        for worker in candidates:
            try:
                out = str(self._request(worker, dict(message))).encode("latin-1")
            except MediaError as exc:
                if exc.status != 503:
                    raise
                refusal = exc  # this worker's slice is full (or it is gone): try the next
                continue
            worker.calls.add(call_id)
            self._owner[call_id] = worker
            return out
        raise refusal

    def answer(self, call_id: str, from_leg: str, sdp: bytes) -> bytes:
        self._check_leg(from_leg)
        owner = self._owner.get(call_id)
        if owner is None:
            raise MediaError(481, "no such media session")
        message = {
            "op": "answer",
            "call_id": call_id,
            "leg": from_leg,
            "sdp": sdp.decode("latin-1"),
        }
        return str(self._request(owner, message)).encode("latin-1")

    def delete(self, call_id: str) -> dict[str, Any] | None:
        owner = self._owner.pop(call_id, None)
        if owner is None:
            return None
        owner.calls.discard(call_id)
        try:
            stats = self._request(owner, {"op": "delete", "call_id": call_id})
        except MediaError:
            return None
        return stats if isinstance(stats, dict) else None

    def query(self, call_id: str) -> dict[str, Any]:
        owner = self._owner.get(call_id)
        if owner is None:
            return {}
        try:
            stats = self._request(owner, {"op": "query", "call_id": call_id})
        except MediaError:
            return {}
        return stats if isinstance(stats, dict) else {}

    def worker_of(self, call_id: str) -> int | None:
        """The index of the worker owning the call (None: no such call)."""
        owner = self._owner.get(call_id)
        return owner.index if owner is not None else None

    def totals(self) -> dict[str, Any]:
        per_worker = []
        calls = in_use = available = 0
        for worker in self.workers:
            entry: dict[str, Any] = {
                "index": worker.index,
                "pid": worker.pid,
                "live": worker.live,
                "port_min": worker.port_min,
                "port_max": worker.port_max,
                "calls": len(worker.calls),
            }
            if worker.live:
                try:
                    answer = self._request(worker, {"op": "totals"})
                except MediaError:
                    answer = None
                if isinstance(answer, dict):
                    entry["ports_in_use"] = int(answer.get("ports_in_use", 0))
                    entry["ports_available"] = int(answer.get("ports_available", 0))
                    in_use += entry["ports_in_use"]
                    available += entry["ports_available"]
            calls += len(worker.calls)
            per_worker.append(entry)
        return {
            "calls": calls,
            "ports_in_use": in_use,
            "ports_available": available,
            "timeouts": self.timeouts,
            "restarts": self.restarts,
            "crashed_calls": self.crashed_calls,
            "workers": per_worker,
        }

    def bytes_received(self) -> dict[str, int]:
        """Media bytes received per leg across the workers (see MediaRelay.bytes_received);
        a worker that died contributes what it reported last."""
        totals = dict(self._lost_bytes)
        for worker in self.workers:
            if worker.live:
                try:
                    answer = self._request(worker, {"op": "bytes"})
                except MediaError:
                    answer = None
                if isinstance(answer, dict):
                    worker.last_bytes = {str(k): int(v) for k, v in answer.items()}
            for name, count in worker.last_bytes.items():
                totals[name] = totals.get(name, 0) + count
        return totals
