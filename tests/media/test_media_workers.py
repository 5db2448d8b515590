"""The relay in worker processes (limen.media.workers): real processes, real UDP on
127.0.0.1, real SRTP (pylibsrtp with the keys in the SDP), real signals (SIGSTOP, SIGKILL).

What a stopped or dead worker may cost: its own calls (ended with a reason, after a bounded
time). What it may not: the event loop (a loop-lag probe runs through each failure test and
no tick may be late by 50 ms), call setup on the other workers, media of their calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from media_support import (
    UdpPeer,
    crypto_line,
    free_port_range,
    g711,
    media_of,
    new_key,
    sdp,
    srtp_rx,
    srtp_tx,
)
from pylibsrtp import Session

from limen.app import prepare, start
from limen.config import ApiSettings, MediaSettings, ProvisioningSettings, Settings, SipSettings
from limen.gateway.context import Side
from limen.media import LegPolicy, LegSpec, MediaRefused, Security
from limen.media import workers as workers_module
from limen.media.workers import WorkerPoolEngine

pytestmark = pytest.mark.timeout(40)


def unused_port_range(size: int) -> tuple[int, int]:
    """A random range none of whose ports is bound right now (other test runs and benches
    on this host hold blocks of media ports)."""
    for _ in range(50):
        low, high = free_port_range(size)
        try:
            for port in range(low, high + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low, high
    raise RuntimeError("no free port range")


def make_pool(workers: int = 2, size: int = 200, **options: float) -> WorkerPoolEngine:
    low, high = unused_port_range(size)
    options.setdefault("stats_interval", 0.1)
    options.setdefault("call_stats_every", 1)
    return WorkerPoolEngine(
        [
            LegSpec(
                "set", "127.0.0.1", "127.0.0.1", latch=True, policy=LegPolicy(Security.REQUIRE)
            ),
            LegSpec(
                "icp", "127.0.0.1", "127.0.0.1", latch=False, policy=LegPolicy(Security.PREFER)
            ),
        ],
        port_min=low,
        port_max=high,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )


def assert_reaped(pids: list[int]) -> None:
    """Each pid was our child and has been waited for: no zombie, no orphan."""
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists():  # reused by some unrelated process: not ours
            assert int(stat.read_text().rsplit(")", 1)[1].split()[1]) != os.getpid()


@dataclass
class Call:
    """A phone and a PBX joined through the pool; SRTP on the phone side unless plain."""

    call_id: str
    phone: UdpPeer
    pbx: UdpPeer
    to_phone_port: int
    to_pbx_port: int
    phone_tx: Session | None = None
    phone_rx: Session | None = None

    async def phone_to_pbx(self, seqs: range, ssrc: int = 0xAAAA) -> list[bytes]:
        for seq in seqs:
            packet = g711(seq, ssrc)
            self.phone.send(
                self.phone_tx.protect(packet) if self.phone_tx else packet, self.to_phone_port
            )
        return await self.pbx.receive(len(seqs))

    async def pbx_to_phone(self, seqs: range, ssrc: int = 0xBBBB) -> list[bytes]:
        for seq in seqs:
            self.pbx.send(g711(seq, ssrc), self.to_pbx_port)
        got = await self.phone.receive(len(seqs))
        return [self.phone_rx.unprotect(p) for p in got] if self.phone_rx else got

    def close(self) -> None:
        self.phone.close()
        self.pbx.close()


async def open_call(
    engine: WorkerPoolEngine, call_id: str, *, srtp: bool = True, timings: list[float] | None = None
) -> Call:
    """Offer and answer through the pool; ``timings`` gets how long each took (seconds)."""
    phone, pbx = await UdpPeer.open(), await UdpPeer.open()
    started = time.perf_counter()
    if srtp:
        key = new_key()
        offer = engine.offer(call_id, "set", sdp(phone.port, crypto=[crypto_line(key)]))
    else:
        plain = {"set": LegPolicy(Security.PREFER), "icp": LegPolicy(Security.OFF)}
        offer = engine.offer(call_id, "set", sdp(phone.port), policy=plain)
    toward_pbx = media_of(offer)
    assert toward_pbx.proto == ("RTP/SAVP" if srtp else "RTP/AVP")
    answer = sdp(pbx.port, user="pbx", rtcp=pbx.port)  # plain answer from the PBX
    toward_phone = media_of(engine.answer(call_id, "icp", answer))
    if timings is not None:
        timings.append(time.perf_counter() - started)
    await engine.settled(call_id)  # its worker has bound the ports (in life: the SDP's trip)
    call = Call(call_id, phone, pbx, toward_phone.port, toward_pbx.port)
    if srtp:
        assert toward_phone.proto == "RTP/SAVP"
        (_, suite, our_key) = toward_phone.crypto[0]
        call.phone_tx, call.phone_rx = srtp_tx(key), srtp_rx(our_key, suite)
    else:
        assert toward_phone.proto == "RTP/AVP"
    return call


@pytest.fixture
async def engine() -> AsyncIterator[WorkerPoolEngine]:
    pool = make_pool()
    await pool.start()
    yield pool
    pids = [w.pid for w in pool.workers if w.pid is not None]
    await pool.close()
    assert_reaped(pids)


def slice_of(engine: WorkerPoolEngine, port: int) -> int:
    return next(w.index for w in engine.workers if w.port_min <= port <= w.port_max)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


class LoopLag:
    """How late the event loop runs a 5 ms sleep (what a blocked loop would show)."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.perf_counter() - before - self.period)

    @contextlib.contextmanager
    def running(self) -> Iterator[LoopLag]:
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()


async def test_calls_spread_over_workers_and_relay_both_ways(engine: WorkerPoolEngine) -> None:
    pids = {w.pid for w in engine.workers}
    assert len(pids) == 2 and os.getpid() not in pids
    secure = await open_call(engine, "secure", srtp=True)
    plain = await open_call(engine, "plain", srtp=False)
    try:
        assert {engine.worker_of("secure"), engine.worker_of("plain")} == {0, 1}
        for call in (secure, plain):
            worker = engine.worker_of(call.call_id)
            assert slice_of(engine, call.to_phone_port) == worker
            assert slice_of(engine, call.to_pbx_port) == worker
            # SRTP → RTP (or RTP → RTP) and back, through the worker's sockets.
            assert await call.phone_to_pbx(range(1, 6)) == [g711(s, 0xAAAA) for s in range(1, 6)]
            assert await call.pbx_to_phone(range(1, 6)) == [g711(s, 0xBBBB) for s in range(1, 6)]

        def packets(call_id: str) -> dict[str, int]:
            stats = engine.query(call_id)
            return {
                name: sum(s["packets"] for s in leg["streams"])
                for name, leg in stats["legs"].items()
            }

        # The workers push their statistics; query answers from what the parent holds.
        await wait_for(lambda: packets("secure") == {"set": 5, "icp": 5})
        assert engine.query("nobody") == {}
        await wait_for(lambda: engine.bytes_received()["set"] >= 10 * 172)
        received = engine.bytes_received()
        assert received["icp"] >= 10 * 172

        totals = engine.totals()
        assert totals["calls"] == 2 and totals["ports_in_use"] == 8  # 2 calls, 2 legs, RTP+RTCP
        assert [w["calls"] for w in totals["workers"]] == [1, 1]
        assert [w["ports_in_use"] for w in totals["workers"]] == [4, 4]

        # Re-offer on the same call stays on its worker; refusals are decided in the parent.
        again = engine.offer("secure", "icp", sdp(secure.pbx.port, user="pbx", version=2))
        assert slice_of(engine, media_of(again).port) == engine.worker_of("secure")
        with pytest.raises(MediaRefused) as info:
            engine.answer("nobody", "icp", sdp(1000))
        assert info.value.status == 481
        with pytest.raises(MediaRefused) as info:  # a plain phone under Require
            engine.offer("refused", "set", sdp(secure.phone.port))
        assert info.value.status == 488 and engine.worker_of("refused") is None

        # Delete returns the last stats; the ports come back once the worker closed them.
        worker = engine.worker_of("secure")
        assert worker is not None
        final = engine.delete("secure")
        assert final is not None and final["legs"]["set"]["streams"][0]["packets"] == 5
        assert engine.delete("secure") is None
        await wait_for(lambda: engine.totals()["workers"][worker]["ports_in_use"] == 0)
        assert engine.totals()["workers"][1 - worker]["ports_in_use"] == 4
        await asyncio.sleep(0.3)  # a few pushes later: ended calls still count
        assert engine.bytes_received()["set"] >= received["set"]
    finally:
        secure.close()
        plain.close()


async def test_media_timeout_in_a_worker_reaches_the_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "limen.media")
    engine = make_pool(media_timeout=0.2)
    fired: list[tuple[str, str]] = []
    engine.on_timeout = lambda call_id, reason: fired.append((call_id, reason))
    await engine.start()
    call = await open_call(engine, "quiet")
    try:
        await call.phone_to_pbx(range(2))
        await wait_for(lambda: fired == [("quiet", "media timeout")])
        assert engine.totals()["timeouts"] == 1
        # The worker's log records come through the parent's logging.
        await wait_for(
            lambda: any(
                r.name == "limen.media" and "quiet: no media, timing out" in r.getMessage()
                for r in caplog.records
            )
        )
        engine.delete("quiet")
    finally:
        call.close()
        pids = [w.pid for w in engine.workers if w.pid is not None]
        await engine.close()
        assert_reaped(pids)


async def test_stopped_worker_costs_only_its_own_calls() -> None:
    """SIGSTOP mid-call: the loop never waits on it, new calls go to the other worker and
    flow, the other worker's call keeps flowing; the stopped worker's call is ended with a
    reason within the stall timeout, an alarm is raised, and its slice gets a new worker."""
    engine = make_pool(stall_timeout=1.0)
    ended: list[tuple[str, str]] = []
    alarms: list[tuple[str, str]] = []
    engine.on_timeout = lambda call_id, reason: ended.append((call_id, reason))
    engine.on_alarm = lambda message, severity: alarms.append((message, severity))
    await engine.start()
    pids = [w.pid for w in engine.workers if w.pid is not None]
    calls: list[Call] = []
    stopped: int | None = None
    timings: list[float] = []
    try:
        calls.append(await open_call(engine, "victim"))
        calls.append(await open_call(engine, "bystander"))
        victim = engine.worker_of("victim")
        assert victim is not None and engine.worker_of("bystander") == 1 - victim
        stopped = engine.workers[victim].pid
        assert stopped is not None
        with LoopLag().running() as lag:
            os.kill(stopped, signal.SIGSTOP)
            since = time.monotonic()
            # The stopped worker's own call: a re-offer still answers at once (the command
            # waits in the channel), nothing waits for the worker.
            began = time.perf_counter()
            engine.offer("victim", "icp", sdp(calls[0].pbx.port, user="pbx", version=2))
            timings.append(time.perf_counter() - began)
            await asyncio.sleep(0.3)  # silent past two stats intervals: suspect
            assert not engine.totals()["workers"][victim]["healthy"]
            for name in ("new-1", "new-2", "new-3"):
                call = await open_call(engine, name, timings=timings)
                calls.append(call)
                assert engine.worker_of(name) == 1 - victim
                assert await call.phone_to_pbx(range(1, 4)) == [
                    g711(s, 0xAAAA) for s in range(1, 4)
                ]
                assert await call.pbx_to_phone(range(1, 4)) == [
                    g711(s, 0xBBBB) for s in range(1, 4)
                ]
            assert await calls[1].phone_to_pbx(range(10, 13)) == [
                g711(s, 0xAAAA) for s in range(10, 13)
            ]
            await wait_for(lambda: [c for c, _ in ended] == ["victim"])
            took = time.monotonic() - since
            # The stall is counted from the worker's last message, which came up to one
            # stats interval (0.1 s) before the SIGSTOP: not before 0.9 s after it.
            assert 0.9 <= took < 2.0, took
            assert "stopped answering" in ended[0][1]
            assert engine.worker_of("victim") is None and engine.delete("victim") is None
            await engine.wait_ready(20)
        assert lag.worst < 0.05, f"the loop was held {lag.worst * 1000:.1f} ms"
        assert max(timings) < 0.02, timings  # offer + answer, in the parent, in ms
        assert [sev for _, sev in alarms][:1] == ["error"] and "stopped answering" in alarms[0][0]
        assert engine.workers[victim].pid not in (None, stopped)
        pids.append(engine.workers[victim].pid)  # type: ignore[arg-type]
        assert_reaped([stopped])
        stopped = None
        totals = engine.totals()
        assert totals["crashed_calls"] == 1 and totals["restarts"] == 1
        # The new worker takes calls again.
        again = await open_call(engine, "again")
        calls.append(again)
        assert engine.worker_of("again") == victim
        assert await again.phone_to_pbx(range(1, 4)) == [g711(s, 0xAAAA) for s in range(1, 4)]
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        for call in calls:
            call.close()
        await engine.close()
        assert_reaped([p for p in pids if p is not None])


async def test_killed_worker_ends_its_calls_and_is_restarted() -> None:
    engine = make_pool(stall_timeout=1.0)
    ended: list[tuple[str, str]] = []
    engine.on_timeout = lambda call_id, reason: ended.append((call_id, reason))
    await engine.start()
    pids = [w.pid for w in engine.workers if w.pid is not None]
    first = await open_call(engine, "first")
    second = await open_call(engine, "second")
    calls = [first, second]
    timings: list[float] = []
    try:
        victim = engine.worker_of("first")
        assert victim is not None and engine.worker_of("second") == 1 - victim
        old_pid = engine.workers[victim].pid
        assert old_pid is not None
        with LoopLag().running() as lag:
            os.kill(old_pid, signal.SIGKILL)
            since = time.monotonic()
            await wait_for(lambda: [c for c, _ in ended] == ["first"])
            assert time.monotonic() - since < 0.5  # EOF on its channel: no need to wait
            assert "died" in ended[0][1]
            assert engine.worker_of("first") is None
            assert engine.delete("first") is None  # what the gateway does after BYE
            # Meanwhile calls keep being set up, on the survivor, and flow.
            for name in ("during-1", "during-2"):
                call = await open_call(engine, name, timings=timings)
                calls.append(call)
                assert await call.phone_to_pbx(range(1, 3)) == [g711(s, 0xAAAA) for s in (1, 2)]
            await engine.wait_ready(20)
        assert lag.worst < 0.05, f"the loop was held {lag.worst * 1000:.1f} ms"
        assert max(timings) < 0.02, timings
        assert engine.workers[victim].pid not in (None, old_pid)
        pids.append(engine.workers[victim].pid)  # type: ignore[arg-type]
        assert_reaped([old_pid])
        assert engine.totals()["restarts"] == 1 and engine.totals()["crashed_calls"] == 1

        # The survivor's call never noticed.
        assert await second.phone_to_pbx(range(1, 4)) == [g711(s, 0xAAAA) for s in range(1, 4)]
        # New calls work, and the least loaded worker is the restarted one.
        third = await open_call(engine, "third")
        calls.append(third)
        assert engine.worker_of("third") == victim
        assert slice_of(engine, third.to_phone_port) == victim
        assert await third.phone_to_pbx(range(1, 4)) == [g711(s, 0xAAAA) for s in range(1, 4)]
        assert await third.pbx_to_phone(range(1, 4)) == [g711(s, 0xBBBB) for s in range(1, 4)]
    finally:
        for call in calls:
            call.close()
        await engine.close()
        assert_reaped([p for p in pids if p is not None])


async def test_a_slice_whose_worker_cannot_start_is_retired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that dies and cannot be started again (here: every new process exits at
    once) is retried with backoff, then its slice is retired with an alarm; the pool goes
    on with the other worker."""
    engine = make_pool(max_start_failures=3)  # type: ignore[arg-type]
    alarms: list[tuple[str, str]] = []
    engine.on_alarm = lambda message, severity: alarms.append((message, severity))
    await engine.start()
    pids = [w.pid for w in engine.workers if w.pid is not None]
    try:
        monkeypatch.setattr(workers_module, "_WORKER_CODE", "import sys; sys.exit(3)")
        os.kill(pids[0], signal.SIGKILL)
        await wait_for(lambda: engine.workers[0].state == "retired", timeout=10)
        assert "retired" in alarms[-1][0] and alarms[-1][1] == "error"
        await engine.wait_ready(1)  # a retired slice is not waited for
        call = await open_call(engine, "elsewhere")
        try:
            assert engine.worker_of("elsewhere") == 1
            assert await call.phone_to_pbx(range(1, 3)) == [g711(s, 0xAAAA) for s in (1, 2)]
        finally:
            call.close()
    finally:
        await engine.close()
        assert_reaped(pids)


async def test_full_slice_spills_to_the_other_worker_then_503() -> None:
    engine = make_pool(size=8)  # 4 pairs: 2 per worker, one call each
    await engine.start()
    try:
        phone = await UdpPeer.open()
        plain = {"set": LegPolicy(Security.PREFER), "icp": LegPolicy(Security.OFF)}
        engine.offer("a", "set", sdp(phone.port), policy=plain)
        engine.offer("b", "set", sdp(phone.port), policy=plain)
        assert {engine.worker_of("a"), engine.worker_of("b")} == {0, 1}
        with pytest.raises(MediaRefused) as info:
            engine.offer("c", "set", sdp(phone.port), policy=plain)
        assert info.value.status == 503 and engine.worker_of("c") is None
        # A deleted call's ports are reused only once its worker closed them.
        engine.delete("a")
        await wait_for(lambda: engine.totals()["ports_available"] == 4)
        engine.offer("c", "set", sdp(phone.port), policy=plain)
        phone.close()
    finally:
        pids = [w.pid for w in engine.workers if w.pid is not None]
        await engine.close()
        assert_reaped(pids)


async def test_port_held_by_another_program_ends_that_call_only() -> None:
    """The parent allocates ports without binding them; a pair some other program holds
    fails in the worker, and the call is ended with the reason (not the worker)."""
    engine = make_pool(workers=1, size=8)
    ended: list[tuple[str, str]] = []
    engine.on_timeout = lambda call_id, reason: ended.append((call_id, reason))
    await engine.start()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter.bind(("127.0.0.1", engine.workers[0].pool._free[0]))
        phone = await UdpPeer.open()
        plain = {"set": LegPolicy(Security.PREFER), "icp": LegPolicy(Security.OFF)}
        engine.offer("squatted", "set", sdp(phone.port), policy=plain)
        await wait_for(lambda: [c for c, _ in ended] == ["squatted"])
        assert "cannot be bound" in ended[0][1] and engine.worker_of("squatted") is None
        engine.offer("fine", "set", sdp(phone.port), policy=plain)
        await asyncio.sleep(0.3)
        assert [c for c, _ in ended] == ["squatted"] and engine.workers[0].live
        phone.close()
    finally:
        squatter.close()
        pids = [w.pid for w in engine.workers if w.pid is not None]
        await engine.close()
        assert_reaped(pids)


async def test_app_runs_the_relay_in_workers(tmp_path: Path) -> None:
    """`limen serve` with `[media] workers = 2`: the gateway's media goes through the pool,
    and closing the app stops the workers."""
    settings = Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        sip=SipSettings(bind="127.0.0.1", udp_port=0, tcp_port=0, tls=False),
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
        media=MediaSettings(bind="127.0.0.1", workers=2),
    )
    prepare(settings)
    app = await start(settings)
    pids: list[int] = []
    try:
        assert app.media is not None
        engine = app.media.engine
        assert isinstance(engine, WorkerPoolEngine) and len(engine.workers) == 2
        pids = [w.pid for w in engine.workers if w.pid is not None]
        phone, pbx = await UdpPeer.open(), await UdpPeer.open()
        key = new_key()
        offer = app.media.offer(
            "app-call", Side.SET, sdp(phone.port, crypto=[crypto_line(key)]), device=None
        )
        toward_pbx = media_of(offer)
        body = app.media.answer("app-call", Side.ICP, sdp(pbx.port, user="pbx"), device=None)
        toward_phone = media_of(body)
        assert toward_phone.proto == "RTP/SAVP"
        await engine.settled("app-call")  # the worker bound the ports (in life: SDP's trip)
        phone.send(srtp_tx(key).protect(g711(1)), toward_phone.port)
        assert await pbx.receive(1) == [g711(1)]
        assert app.metrics is not None  # the metrics read the workers' byte counters
        await wait_for(lambda: engine.bytes_received()["set"] > 0)
        app.metrics.sample(1000.0)
        phone.send(srtp_tx(key).protect(g711(2)), toward_phone.port)  # fresh session: seq 2
        assert len(await pbx.receive(1)) == 1
        before = engine.bytes_received()["set"]
        await wait_for(lambda: engine.bytes_received()["set"] > before)
        assert app.metrics.sample(1001.0).bandwidth_set_in > 0

        def set_packets() -> int:
            stats = app.media.query("app-call") if app.media is not None else {}
            return int(stats["legs"]["set"]["streams"][0]["packets"])

        await wait_for(lambda: set_packets() == 2, timeout=12.0)  # per-call stats: every 5 s
        assert toward_pbx.port != toward_phone.port
        app.media.delete("app-call")

        # A worker lost: the gateway hears of its session (no call left: only a delete)
        # and the alarm is an event in the store.
        app.media.offer(
            "doomed", Side.SET, sdp(phone.port, crypto=[crypto_line(new_key())]), device=None
        )
        doomed = engine.worker_of("doomed")
        assert doomed is not None
        victim = engine.workers[doomed].pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: engine.worker_of("doomed") is None)
        await engine.wait_ready(20)
        pids.append(engine.workers[doomed].pid)  # type: ignore[arg-type]

        def media_alarms() -> list[str]:
            return [
                e.message
                for e in app.core.store.events.list(kind="alarm")
                if e.source == "media" and e.severity == "error"
            ]

        await wait_for(lambda: any(f"pid {victim}) died" in m for m in media_alarms()))
        phone.close()
        pbx.close()
    finally:
        await app.close()
    assert len(pids) == 3
    assert_reaped(pids)
