"""The port pool (sans-IO) and the timeout bookkeeping with explicit ``now``."""

from __future__ import annotations

import pytest

from limen.media import PortPool
from limen.media.call import allowed_codecs, new_call
from limen.media.policy import LegPolicy, LegSpec, Security


def test_pairs_are_even_and_inside_the_range() -> None:
    pool = PortPool(20001, 20010)
    ports = [pool.take() for _ in range(pool.capacity)]
    assert ports == [20002, 20004, 20006, 20008]  # 20010 has no odd partner in range
    assert pool.take() is None
    assert pool.available == 0 and pool.in_use == 4


def test_release_returns_to_the_end_of_the_queue() -> None:
    pool = PortPool(30000, 30007)
    first = pool.take()
    assert first == 30000
    pool.release(first)
    assert [pool.take() for _ in range(4)] == [30002, 30004, 30006, 30000]
    with pytest.raises(ValueError):
        pool.release(31000)


def test_split_gives_disjoint_slices_for_workers() -> None:
    slices = PortPool(20000, 20099).split(3)
    seen: set[int] = set()
    for part in slices:
        ports = {part.take() for _ in range(part.capacity)}
        assert not ports & seen
        seen |= {p for p in ports if p is not None}
    assert len(seen) == 50


def test_codec_restrictions_intersect() -> None:
    assert allowed_codecs(LegPolicy(), LegPolicy()) is None
    assert allowed_codecs(LegPolicy(codecs=("PCMU", "PCMA")), LegPolicy()) == ("PCMU", "PCMA")
    assert allowed_codecs(LegPolicy(codecs=("PCMU", "G722")), LegPolicy(codecs=("g722",))) == (
        "G722",
    )


def test_security_labels() -> None:
    assert Security.parse("Require") is Security.REQUIRE
    assert Security.parse("Disable") is Security.OFF
    with pytest.raises(ValueError):
        Security.parse("maybe")


def test_new_call_uses_policy_overrides() -> None:
    specs = [LegSpec("set", "192.0.2.1", latch=True), LegSpec("icp", "10.0.0.1")]
    call = new_call("c", specs, {"set": LegPolicy(Security.REQUIRE)}, now=5.0)
    assert call.legs["set"].policy.security is Security.REQUIRE
    assert call.legs["icp"].policy.security is Security.PREFER
    assert call.activity.last == 5.0
