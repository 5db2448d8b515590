"""Both engines implement the whole MediaEngine protocol, with the same signatures, and
behave alike on every method: the in-process relay and the worker pool (real processes,
real UDP on 127.0.0.1, real SRTP)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from media_support import (
    UdpPeer,
    crypto_line,
    g711,
    make_relay,
    media_of,
    new_key,
    sdp,
    srtp_tx,
)
from test_media_workers import make_pool

from limen.media import MediaEngine, MediaRefused, MediaRelay
from limen.media.workers import WorkerPoolEngine

pytestmark = pytest.mark.timeout(40)

ENGINES: list[type[Any]] = [MediaRelay, WorkerPoolEngine]
METHODS = sorted(
    name
    for name, value in vars(MediaEngine).items()
    if callable(value) and not name.startswith("_")
)
ATTRIBUTES = sorted(MediaEngine.__annotations__)


def test_the_protocol_is_what_the_issue_names() -> None:
    assert METHODS == [
        "answer",
        "bytes_received",
        "close",
        "delete",
        "drops",
        "offer",
        "query",
        "reoffer_plain",
        "start",
        "totals",
    ]
    assert ATTRIBUTES == ["on_alarm", "on_timeout"]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_every_engine_has_every_method_with_the_same_signature(engine: type[Any]) -> None:
    for name in METHODS:
        ours = inspect.signature(getattr(MediaEngine, name))
        theirs = inspect.signature(getattr(engine, name))
        assert [(p.name, p.kind, p.default) for p in theirs.parameters.values()] == [
            (p.name, p.kind, p.default) for p in ours.parameters.values()
        ], name
        assert inspect.iscoroutinefunction(getattr(engine, name)) == (
            inspect.iscoroutinefunction(getattr(MediaEngine, name))
        ), name


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture(params=["in-process", "workers"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[MediaEngine]:
    built: MediaEngine
    if request.param == "in-process":
        built = make_relay(media_timeout=1.0)
    else:
        built = make_pool(workers=2, media_timeout=1.0)
    for attribute in ATTRIBUTES:  # set by the composition root: must exist before start
        assert getattr(built, attribute) is None
    await built.start()
    yield built
    await built.close()


async def settle(engine: MediaEngine, call_id: str) -> None:
    if isinstance(engine, WorkerPoolEngine):
        await engine.settled(call_id)


async def test_every_method_on_every_engine(engine: MediaEngine) -> None:
    ended: list[tuple[str, str]] = []
    engine.on_timeout = lambda call_id, reason: ended.append((call_id, reason))
    engine.on_alarm = lambda message, severity: None
    phone, pbx = await UdpPeer.open(), await UdpPeer.open()
    try:
        key = new_key()
        # offer: SRTP from the phone, SRTP toward the PBX ("Prefer").
        first = media_of(engine.offer("c1", "set", sdp(phone.port, crypto=[crypto_line(key)])))
        assert first.proto == "RTP/SAVP" and first.crypto
        # reoffer_plain: the PBX refused SRTP; the same ports, plain, no keys.
        retry = media_of(
            engine.reoffer_plain("c1", "set", sdp(phone.port, crypto=[crypto_line(key)]))
        )
        assert (retry.proto, retry.crypto, retry.port) == ("RTP/AVP", [], first.port)
        with pytest.raises(MediaRefused) as info:
            engine.reoffer_plain("nobody", "set", sdp(phone.port))
        assert info.value.status == 481
        # answer: plain from the PBX, SRTP with our key toward the phone.
        toward_phone = media_of(engine.answer("c1", "icp", sdp(pbx.port, user="pbx")))
        assert toward_phone.proto == "RTP/SAVP" and len(toward_phone.crypto) == 1
        with pytest.raises(MediaRefused) as info:
            engine.answer("nobody", "icp", sdp(pbx.port))
        assert info.value.status == 481
        with pytest.raises(MediaRefused) as info:  # a plain phone under "Require"
            engine.offer("c2", "set", sdp(phone.port))
        assert info.value.status == 488
        await settle(engine, "c1")

        # Media through it: SRTP in, plain out; a STUN packet is dropped and counted.
        sender = srtp_tx(key)
        for seq in range(1, 4):
            phone.send(sender.protect(g711(seq)), toward_phone.port)
        assert await pbx.receive(3) == [g711(s) for s in range(1, 4)]
        phone.send(b"\x00\x01\x00\x00" + bytes(16), toward_phone.port)

        # query, totals, bytes_received, drops: what the engine knows (pushed, for workers).
        def set_packets() -> int:
            legs = engine.query("c1").get("legs", {})
            return sum(s["packets"] for s in legs.get("set", {}).get("streams", []))

        await until(lambda: set_packets() == 3)
        assert engine.query("nobody") == {}
        totals = engine.totals()
        assert (totals["calls"], totals["ports_in_use"], totals["timeouts"]) == (1, 4, 0)
        await until(lambda: engine.bytes_received().get("set", 0) >= 3 * 172)
        await until(lambda: sum(engine.drops().values()) == 1)

        # on_timeout: no media for the timeout, once, with the reason.
        await until(lambda: ended == [("c1", "media timeout")], timeout=5.0)
        assert engine.totals()["timeouts"] == 1

        # delete: the last stats, then nothing; its ports come back.
        final = engine.delete("c1")
        assert final is not None and final["call_id"] == "c1"
        assert engine.delete("c1") is None and engine.query("c1") == {}
        await until(lambda: engine.totals()["ports_in_use"] == 0)
        assert engine.totals()["calls"] == 0
        # Counters are monotonic: the ended call still counts.
        assert engine.bytes_received()["set"] >= 3 * 172 and sum(engine.drops().values()) == 1
    finally:
        phone.close()
        pbx.close()
