"""The relay in worker processes (limen.media.workers): real processes, real UDP on
127.0.0.1, real SRTP (pylibsrtp with the keys in the SDP)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
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


async def open_call(engine: WorkerPoolEngine, call_id: str, *, srtp: bool = True) -> Call:
    phone, pbx = await UdpPeer.open(), await UdpPeer.open()
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

        stats = engine.query("secure")
        packets = {
            name: sum(s["packets"] for s in leg["streams"]) for name, leg in stats["legs"].items()
        }
        assert packets == {"set": 5, "icp": 5}
        assert engine.query("nobody") == {}
        received = engine.bytes_received()
        assert received["set"] >= 10 * 172 and received["icp"] >= 10 * 172

        totals = engine.totals()
        assert totals["calls"] == 2 and totals["ports_in_use"] == 8  # 2 calls, 2 legs, RTP+RTCP
        assert [w["calls"] for w in totals["workers"]] == [1, 1]
        assert [w["ports_in_use"] for w in totals["workers"]] == [4, 4]

        # Re-offer on the same call stays on its worker; answer errors cross the channel.
        again = engine.offer("secure", "icp", sdp(secure.pbx.port, user="pbx", version=2))
        assert slice_of(engine, media_of(again).port) == engine.worker_of("secure")
        with pytest.raises(MediaRefused) as info:
            engine.answer("nobody", "icp", sdp(1000))
        assert info.value.status == 481
        with pytest.raises(MediaRefused) as info:  # the worker refuses a plain phone (Require)
            engine.offer("refused", "set", sdp(secure.phone.port))
        assert info.value.status == 488 and engine.worker_of("refused") is None

        # Delete returns the final stats and frees the ports in that worker.
        worker = engine.worker_of("secure")
        assert worker is not None
        final = engine.delete("secure")
        assert final is not None and final["legs"]["set"]["streams"][0]["packets"] == 5
        assert engine.delete("secure") is None
        await wait_for(lambda: engine.totals()["workers"][worker]["ports_in_use"] == 0)
        assert engine.totals()["workers"][1 - worker]["ports_in_use"] == 4
        assert engine.bytes_received()["set"] >= received["set"]  # ended calls still count
    finally:
        secure.close()
        plain.close()


async def test_media_timeout_in_a_worker_reaches_the_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "limen.media")
    engine = make_pool(media_timeout=0.2)
    fired: list[str] = []
    engine.on_timeout = fired.append
    await engine.start()
    call = await open_call(engine, "quiet")
    try:
        await call.phone_to_pbx(range(2))
        await wait_for(lambda: fired == ["quiet"])
        assert engine.totals()["timeouts"] == 1
        # The worker's log records come through the parent's logging.
        assert any(
            r.name == "limen.media" and "quiet: no media, timing out" in r.getMessage()
            for r in caplog.records
        )
        engine.delete("quiet")
    finally:
        call.close()
        pids = [w.pid for w in engine.workers if w.pid is not None]
        await engine.close()
        assert_reaped(pids)


async def test_killed_worker_ends_its_calls_and_is_restarted(engine: WorkerPoolEngine) -> None:
    ended: list[str] = []
    engine.on_timeout = ended.append
    first = await open_call(engine, "first")
    second = await open_call(engine, "second")
    calls = [first, second]
    try:
        victim = engine.worker_of("first")
        assert victim is not None and engine.worker_of("second") == 1 - victim
        old_pid = engine.workers[victim].pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await wait_for(lambda: ended == ["first"])
        assert engine.worker_of("first") is None
        assert engine.delete("first") is None  # what the gateway does after BYE
        await engine.wait_ready(20)
        assert engine.workers[victim].pid not in (None, old_pid)
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
        phone.close()
    finally:
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
        phone.send(srtp_tx(key).protect(g711(1)), toward_phone.port)
        assert await pbx.receive(1) == [g711(1)]
        assert app.metrics is not None  # the metrics read the workers' byte counters
        app.metrics.sample(1000.0)
        phone.send(srtp_tx(key).protect(g711(2)), toward_phone.port)  # fresh session: seq 2
        assert len(await pbx.receive(1)) == 1
        assert app.metrics.sample(1001.0).bandwidth_set_in > 0
        assert app.media.query("app-call")["legs"]["set"]["streams"][0]["packets"] == 2
        assert toward_pbx.port != toward_phone.port
        app.media.delete("app-call")
        phone.close()
        pbx.close()
    finally:
        await app.close()
    assert len(pids) == 2
    assert_reaped(pids)


async def test_slow_worker_fails_requests_then_is_replaced() -> None:
    engine = make_pool(request_timeout=0.2)
    ended: list[str] = []
    engine.on_timeout = ended.append
    await engine.start()
    call = await open_call(engine, "slow")
    pids = [w.pid for w in engine.workers if w.pid is not None]
    try:
        index = engine.worker_of("slow")
        assert index is not None
        pid = engine.workers[index].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            assert engine.query("slow") == {}  # no answer in time: 503 inside, {} out
        finally:
            os.kill(pid, signal.SIGCONT)
        # In step again: the late answer is skipped by its id.
        assert engine.query("slow")["legs"]["set"]["streams"][0]["packets"] == 0
        os.kill(pid, signal.SIGSTOP)  # now it stays stuck: three misses and it is replaced
        for _ in range(3):
            with pytest.raises(MediaRefused):
                engine.answer("slow", "icp", sdp(call.pbx.port, user="pbx", version=2))
        await wait_for(lambda: ended == ["slow"])
        await engine.wait_ready(20)
        new_pid = engine.workers[index].pid
        assert new_pid is not None and new_pid != pid
        pids.append(new_pid)
    finally:
        call.close()
        await engine.close()
        assert_reaped(pids)
