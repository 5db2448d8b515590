"""Bans, rate limits and the guard (issue 10), on a manual clock."""

from __future__ import annotations

import logging

import pytest

from limen.config import SecuritySettings
from limen.control import handle
from limen.gateway.guard import Acl, Guard, ban_line
from limen.logs import RateLimitFilter
from limen.security import Ban, BanList, BanPolicy, BanReason, RateLimiter
from limen.security.bans import bans_from_json, bans_to_json
from limen.sip import Request, Source, Transport, parse_message


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ten_failures_in_a_minute_ban_the_source_not_the_user() -> None:
    bans: list[Ban] = []
    ban_list = BanList(BanPolicy(max_failures=10, max_failures_per_user=100), on_ban=bans.append)
    results = [ban_list.failure("192.0.2.1", 100.0 + i, user=f"u{i}") for i in range(10)]
    assert results[:9] == [None] * 9 and results[9] is not None
    assert bans[0].reason is BanReason.AUTH and bans[0].until == 109.0 + 600
    assert ban_list.banned("192.0.2.1", 110.0)
    assert not ban_list.banned("192.0.2.2", 110.0)  # the same users elsewhere: fine
    assert not ban_list.banned("192.0.2.1", 709.0)  # ban over


def test_failures_outside_the_window_do_not_add_up() -> None:
    ban_list = BanList(BanPolicy(max_failures=3, max_failures_per_user=100, window=60))
    assert ban_list.failure("192.0.2.1", 0.0) is None
    assert ban_list.failure("192.0.2.1", 30.0) is None
    assert ban_list.failure("192.0.2.1", 70.0) is None  # the first one left the window
    assert ban_list.failure("192.0.2.1", 80.0) is not None  # 30, 70, 80


def test_guessing_one_user_bans_sooner() -> None:
    ban_list = BanList(BanPolicy(max_failures=10, max_failures_per_user=5))
    got = [ban_list.failure("192.0.2.1", float(i), user="7001") for i in range(5)]
    assert got[-1] is not None and got[-1].reason is BanReason.USER_GUESS


def test_repeat_offences_double_the_ban_up_to_the_maximum() -> None:
    ban_list = BanList(BanPolicy(max_failures=1, ban_time=100, max_ban_time=350))
    durations = []
    now = 0.0
    for _ in range(4):
        ban = ban_list.failure("192.0.2.1", now)
        assert ban is not None
        durations.append(ban.until - ban.since)
        now = ban.until + 1
    assert durations == [100, 200, 350, 350]


def test_trusted_networks_and_icps_are_never_banned() -> None:
    ban_list = BanList(BanPolicy(max_failures=1), trusted=["10.0.0.0/8"])
    ban_list.set_trusted_addresses(["192.0.2.50"])
    assert ban_list.failure("10.1.2.3", 0.0) is None
    assert ban_list.failure("192.0.2.50", 0.0) is None
    assert ban_list.flood("10.1.2.3", 0.0) is None
    assert ban_list.bans(1.0) == []


def test_state_is_bounded_and_expires() -> None:
    ban_list = BanList(BanPolicy(max_failures=5, max_sources=100, max_bans=50))
    for i in range(1000):
        ban_list.failure(f"198.51.{i // 256}.{i % 256}", float(i) / 100)
    assert ban_list.tracked_sources <= 100
    for i in range(200):
        ban_list.ban(f"203.0.113.{i % 250}", 0.0, seconds=1000 + i) if i < 250 else None
    assert len(ban_list.bans(1.0)) <= 50
    ban_list.expire(10_000.0)
    assert ban_list.tracked_sources == 0 and ban_list.bans(10_000.0) == []


def test_manual_ban_unban_and_persistence_round_trip() -> None:
    ban_list = BanList()
    ban = ban_list.ban("2001:db8::1", 50.0, seconds=30, detail="by hand")
    assert ban_list.banned("2001:db8::1", 60.0)
    rows = bans_to_json(ban_list.bans(60.0))
    again = BanList()
    assert again.restore(bans_from_json(rows), 60.0) == 1
    assert again.banned("2001:db8::1", 70.0) and not again.banned("2001:db8::1", 80.0)
    assert bans_from_json([{"address": 1}, "junk"]) == []
    assert ban_list.unban("2001:db8::1") and not ban_list.banned("2001:db8::1", 60.0)
    assert "BAN 2001:db8::1 reason=manual duration=30s" in ban_line(ban)


def test_rate_limiter_counts_per_source_per_window() -> None:
    limiter = RateLimiter(limit=3, window=2.0, max_sources=2)
    hits = [limiter.hit("a", 0.1 * i) for i in range(5)]
    assert hits == [False, False, False, True, False]  # True once, at the crossing
    assert not limiter.hit("b", 0.5)
    assert not limiter.hit("c", 0.6)  # over max_sources: not counted this window
    assert limiter.tracked_sources == 2
    assert not limiter.hit("a", 2.1)  # a new window starts from zero
    assert limiter.tracked_sources == 1


def make_guard(clock: Clock, **kw: object) -> tuple[Guard, list[Ban]]:
    bans: list[Ban] = []
    settings = SecuritySettings(**kw)  # type: ignore[arg-type]
    return Guard(settings, clock=clock, on_ban=bans.append), bans


def test_guard_floods_get_banned_and_dropped_before_parsing() -> None:
    clock = Clock()
    guard, bans = make_guard(clock, sip_rate_limit=10, sip_rate_window=1.0)
    verdicts = [guard.allow_sip_packet("192.0.2.9") for _ in range(15)]
    assert verdicts == [True] * 10 + [False] * 5
    assert bans[0].reason is BanReason.FLOOD
    assert guard.dropped["rate"] == 1 and guard.dropped["banned"] == 4
    guard.set_icp_addresses(["10.0.0.2"])
    assert all(guard.allow_sip_packet("10.0.0.2") for _ in range(100))  # the PBX: exempt
    clock.now += 601
    assert guard.allow_sip_packet("192.0.2.9")


def test_guard_acl_per_listener() -> None:
    guard, _ = make_guard(
        Clock(), sip_deny=["192.0.2.0/24"], api_allow=["10.0.0.0/8"], provisioning_deny=["::/0"]
    )
    assert not guard.allow_sip_packet("192.0.2.7")
    assert guard.allow_sip_packet("198.51.100.7")
    assert guard.allow_http("10.1.1.1", "api") and not guard.allow_http("198.51.100.7", "api")
    assert not guard.allow_http("2001:db8::5", "provisioning")
    assert guard.allow_http("198.51.100.7", "provisioning")
    assert Acl().permits("anything")


def request_with_agent(agent: str) -> Request:
    raw = (
        "OPTIONS sip:100@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        "From: <sip:100@x>;tag=1\r\nTo: <sip:100@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        f"User-Agent: {agent}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipcli/v1.8", "VaxSIPUserAgent/3.1"])
def test_scanner_user_agents_are_dropped(agent: str) -> None:
    guard, _ = make_guard(Clock())
    source = Source(Transport.UDP, ("203.0.113.10", 5060), ("192.0.2.1", 5060))
    assert not guard.screen(request_with_agent(agent), source)
    assert guard.screen(request_with_agent("Linphone/5.1 (belle-sip/5.1)"), source)
    quiet, _ = make_guard(Clock(), scanner_user_agents=[])
    assert quiet.screen(request_with_agent(agent), source)


def test_guard_auth_failures_count_by_kind() -> None:
    guard, bans = make_guard(Clock(), max_failures=3, provisioning_ban_failures=4)
    for kind in ("sip", "login", "console"):
        guard.auth_failure("198.51.100.9", "admin", kind)
    assert bans and guard.banned("198.51.100.9")
    # Provisioning strikes are blocked by the proxy itself (NAT-aware); they ban an
    # address everywhere only past their own, higher bar.
    for _ in range(4):
        assert guard.auth_failure("198.51.100.10", None, "provisioning") is None
    assert not guard.banned("198.51.100.10")
    assert guard.auth_failure("198.51.100.10", None, "provisioning") is not None
    counters = guard.counters()
    assert counters["auth_failures_total"] == {
        "sip": 1,
        "login": 1,
        "console": 1,
        "provisioning": 5,
    }
    assert counters["security_bans_total"] == {"auth": 1, "user-guess": 0, "flood": 1, "manual": 0}


def test_control_requests() -> None:
    guard, _ = make_guard(Clock())
    assert handle(guard, {"op": "ban", "address": "[2001:db8::7]", "seconds": 60})["ok"]
    listed = handle(guard, {"op": "bans"})["bans"]
    assert [b["address"] for b in listed] == ["2001:db8::7"]
    assert handle(guard, {"op": "unban", "address": "2001:db8::7"}) == {"ok": True, "lifted": True}
    assert handle(guard, {"op": "ban", "address": "not-an-ip"})["error"].startswith("not an IP")
    assert handle(guard, {"op": "ban", "address": "192.0.2.1", "seconds": -1})["ok"] is False
    assert handle(guard, {"op": "frobnicate"})["ok"] is False


def test_log_lines_of_one_kind_are_rate_limited() -> None:
    clock = Clock(0.0)
    limiter = RateLimitFilter(rate=10, burst=20, clock=clock)

    def record(msg: str, name: str = "limen.transport", level: int = logging.INFO) -> bool:
        return limiter.filter(logging.LogRecord(name, level, __file__, 1, msg, (), None))

    passed = sum(record("refused %s") for _ in range(1000))
    assert passed == 20
    assert record("another kind %s")
    assert record("%s", name="limen.security", level=logging.WARNING)  # ban lines: always
    clock.now = 1.0
    kept = logging.LogRecord("limen.transport", logging.INFO, __file__, 1, "refused %s", (), None)
    assert limiter.filter(kept) and "980 similar lines suppressed" in str(kept.msg)


def test_call_admission_per_device_icp_total_and_bandwidth() -> None:
    from limen.gateway.admission import CallAdmission, Limits

    kbps = [0.0]
    cac = CallAdmission(media_kbps=lambda: kbps[0])
    limits = Limits(per_device=2, attempts_per_minute=3, per_icp=3, total=4, media_kbps=1000)
    assert cac.admit("d1", "icp", 0.0, limits) is None
    assert cac.admit("d1", "icp", 1.0, limits) is None
    assert cac.admit("d1", "icp", 2.0, limits) == "device calls"
    assert cac.admit("d1", "icp", 3.0, limits) == "device call rate"  # 4th attempt in 60 s
    cac.release("d1", "icp")
    assert cac.admit("d1", "icp", 61.0, limits) is None  # the window moved on
    assert cac.admit("d2", "icp", 61.0, limits) is None  # 3 on "icp" now
    assert cac.admit("d3", "icp", 61.0, limits) == "ICP calls"
    assert cac.admit("d3", "icp2", 61.0, limits) is None  # 4 in total
    assert cac.admit("d4", "icp3", 61.0, limits) == "total calls"
    for device, icp in (("d1", "icp"), ("d1", "icp"), ("d2", "icp"), ("d3", "icp2")):
        cac.release(device, icp)
    kbps[0] = 5000.0
    assert cac.admit("d4", "icp", 62.0, limits) == "media bandwidth"
    assert cac.total == 0 and cac.refused["device calls"] == 1
    cac.forget_idle(1000.0)
    assert not cac._attempts
