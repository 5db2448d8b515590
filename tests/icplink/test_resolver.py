"""RFC 3263 / RFC 2782 decisions without a network: NAPTR and SRV order, the weighted
draw, the TTL cache on a fake clock, the fallbacks; and dnspython against a real dnsmasq
on loopback."""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from icplink_lab import dnsmasq

from limen.gateway.resolver import (
    DnsLookup,
    Naptr,
    Rfc3263,
    Srv,
    Target,
    TtlCache,
    order_naptr,
    order_srv,
)
from limen.sip.addressing import Transport

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Table:
    """A Lookup answering from a dict; counts the questions."""

    def __init__(self, records: dict[tuple[str, str], tuple[list[Any], float]]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> tuple[list[Any], float]:
        self.asked.append((name, rdtype))
        return self.records.get((name, rdtype), ([], 30.0))


def test_naptr_order_filters_services_and_transports() -> None:
    records = [
        Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.pbx.test."),
        Naptr(10, 20, "s", "SIP+D2T", "_sip._tcp.pbx.test."),
        Naptr(10, 10, "s", "SIPS+D2T", "_sips._tcp.pbx.test."),
        Naptr(5, 10, "u", "E2U+sip", "!^.*$!sip:x@y!"),  # not a SIP service record
    ]
    assert order_naptr(records, [UDP, TCP, TLS]) == [
        (TLS, "_sips._tcp.pbx.test"),
        (TCP, "_sip._tcp.pbx.test"),
        (UDP, "_sip._udp.pbx.test"),
    ]
    assert order_naptr(records, [UDP]) == [(UDP, "_sip._udp.pbx.test")]


def test_srv_priority_first_then_weight_proportions() -> None:
    records = [
        Srv(20, 0, 5060, "backup.test"),
        Srv(10, 90, 5060, "a.test"),
        Srv(10, 10, 5060, "b.test"),
    ]
    rng = random.Random(7)
    firsts = collections.Counter(order_srv(records, rng)[0].target for _ in range(2000))
    assert set(firsts) == {"a.test", "b.test"}  # priority 20 never first
    assert 0.85 < firsts["a.test"] / 2000 < 0.95  # RFC 2782: in proportion to weight
    for _ in range(50):
        assert order_srv(records, rng)[-1].target == "backup.test"
    assert order_srv([Srv(0, 0, 0, ".")], rng) == []  # "service decidedly not available"


def test_ttl_cache_expires_on_the_clock() -> None:
    clock = Clock()
    cache = TtlCache(clock)
    cache.put("pbx.test", "A", ["10.0.0.2"], 60)
    clock.now += 59
    assert cache.get("PBX.test", "A") == ["10.0.0.2"]
    clock.now += 2
    assert cache.get("pbx.test", "A") is None


PAIR = {
    ("pbx.test", "NAPTR"): (
        [
            Naptr(10, 10, "s", "SIP+D2U", "_sip._udp.pbx.test"),
            Naptr(20, 10, "s", "SIP+D2T", "_sip._tcp.pbx.test"),
        ],
        300.0,
    ),
    ("_sip._udp.pbx.test", "SRV"): (
        [Srv(10, 1, 5060, "pbx1.test"), Srv(20, 1, 5070, "pbx2.test")],
        120.0,
    ),
    ("_sip._tcp.pbx.test", "SRV"): ([Srv(10, 1, 5060, "pbx1.test")], 120.0),
    ("pbx1.test", "A"): (["10.0.0.2"], 60.0),
    ("pbx2.test", "A"): (["10.0.0.3"], 600.0),
}


async def test_naptr_srv_a_targets_in_order_and_cached() -> None:
    clock = Clock()
    table = Table(dict(PAIR))
    resolver = Rfc3263(table, clock=clock, rng=random.Random(1))
    result = await resolver.resolve("pbx.test", 5060, [UDP, TCP], UDP)
    assert [t.key for t in result.targets] == [
        "udp:10.0.0.2:5060",
        "udp:10.0.0.3:5070",
        "tcp:10.0.0.2:5060",
    ]
    assert result.ttl == 60.0  # the smallest TTL involved
    asked = len(table.asked)
    await resolver.resolve("pbx.test", 5060, [UDP, TCP], UDP)
    assert len(table.asked) == asked  # all from the cache
    clock.now += 61
    await resolver.resolve("pbx.test", 5060, [UDP, TCP], UDP)
    # Only what expired is asked again (pbx1's A at 60 s, the AAAA "none" answers at 30 s);
    # the NAPTR (300 s), SRV (120 s) and pbx2's A (600 s) still come from the cache.
    assert table.asked[asked:] == [
        ("pbx1.test", "A"),
        ("pbx1.test", "AAAA"),
        ("pbx2.test", "AAAA"),
    ]


async def test_no_naptr_uses_srv_per_transport_then_a() -> None:
    table = Table(
        {
            ("_sip._tcp.pbx.test", "SRV"): ([Srv(1, 1, 5080, "pbx1.test")], 60.0),
            ("pbx1.test", "A"): (["10.0.0.2"], 60.0),
            ("plain.test", "A"): (["10.0.0.9"], 60.0),
        }
    )
    resolver = Rfc3263(table, clock=Clock())
    result = await resolver.resolve("pbx.test", 5060, [UDP, TCP], TCP)
    assert result.targets == [Target(TCP, "10.0.0.2", 5080, "pbx1.test")]
    assert table.asked[1] == ("_sip._tcp.pbx.test", "SRV")  # the configured transport first
    plain = await resolver.resolve("plain.test", 5062, [UDP], UDP)
    assert plain.targets == [Target(UDP, "10.0.0.9", 5062, "plain.test")]  # §4.2
    literal = await resolver.resolve("10.1.1.1", 5060, [UDP], UDP)
    assert [t.key for t in literal.targets] == ["udp:10.1.1.1:5060"]


async def test_a_dead_dns_server_is_not_cached() -> None:
    class Broken:
        calls = 0

        async def query(self, name: str, rdtype: str) -> tuple[list[Any], float]:
            Broken.calls += 1
            raise OSError("timeout")

    resolver = Rfc3263(Broken(), clock=Clock())
    assert (await resolver.resolve("pbx.test", 5060, [UDP], UDP)).targets == []
    first = Broken.calls
    await resolver.resolve("pbx.test", 5060, [UDP], UDP)
    assert Broken.calls == 2 * first


# -- dnspython against dnsmasq ---------------------------------------------------------------


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[str]:
    records = [
        "local-ttl=45",
        "naptr-record=pbx.test,10,10,S,SIP+D2U,,_sip._udp.pbx.test",
        "srv-host=_sip._udp.pbx.test,pbx1.test,5060,10,1",
        "srv-host=_sip._udp.pbx.test,pbx2.test,5070,20,1",
        "host-record=pbx1.test,10.0.0.2",
        "host-record=pbx2.test,10.0.0.3",
    ]
    with dnsmasq(tmp_path, records) as server:
        yield server


async def test_dnspython_resolves_through_dnsmasq(dns_server: str) -> None:
    lookup = DnsLookup([dns_server], timeout=2.0)
    resolver = Rfc3263(lookup, rng=random.Random(3))
    for _ in range(20):  # dnsmasq takes a moment to bind
        result = await resolver.resolve("pbx.test", 5060, [UDP], UDP)
        if result.targets:
            break
        resolver.cache = type(resolver.cache)()
        await asyncio.sleep(0.1)
    assert [t.key for t in result.targets] == ["udp:10.0.0.2:5060", "udp:10.0.0.3:5070"]
    assert 0 < result.ttl <= 45
