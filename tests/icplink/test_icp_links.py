"""The ICP links' decisions without a network: which target a request goes to, stickiness,
failover order, RFC 3261 §18.1.1 (over 1300 bytes → TCP), and link state changes with
their events and metrics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from limen.config import Settings
from limen.gateway.context import Directory
from limen.gateway.icplink import IcpLink, IcpLinks
from limen.gateway.resolver import Resolution, Rfc3263, Target
from limen.sip import parse_message
from limen.sip.addressing import Destination, Transport
from limen.sip.message import Response
from limen.sip.transaction import ResponseReceived, Timer, TransactionTimeout
from limen.store.schemas import IcpRecord

UDP, TCP = Transport.UDP, Transport.TCP


def icp(**fields: Any) -> IcpRecord:
    base: dict[str, Any] = {
        "guid": "00000000-0000-0000-0000-0000000000aa",
        "name": "pbx",
        "address": "pbx.test",
        "port": 5060,
        "transport": "udp",
        "type": "MiVoice 5000",
        "sip_capabilities": ["udp", "tcp"],
        "link_enabled": True,
        "xml_listen_port": 4445,
        "xml_destination_port": 4445,
        "tls": True,
        "hashes": [],
        "domain": "",
        "description": "",
        "device_count": 0,
        "options_interval": 0,
    }
    base.update(fields)
    return IcpRecord.model_validate(base)


class NoLookup:
    async def query(self, name: str, rdtype: str) -> tuple[list[Any], float]:
        return [], 30.0


@pytest.fixture
def links(tmp_path: Path) -> tuple[IcpLinks, list[tuple[str, str, str]], IcpRecord]:
    settings = Settings(config_path=str(tmp_path / "l.toml"), data_dir=str(tmp_path / "d"))
    ctx = SimpleNamespace(settings=settings, directory=Directory(), stack=SimpleNamespace())
    events: list[tuple[str, str, str]] = []
    manager = IcpLinks(
        ctx,  # type: ignore[arg-type]
        resolver=Rfc3263(NoLookup()),
        on_event=lambda *e: events.append(e),
    )
    record = icp()
    link = manager.links.setdefault(record.guid, IcpLink(record))
    manager._apply(
        link,
        Resolution(
            [
                Target(UDP, "10.0.0.2", 5060, "pbx1.test"),
                Target(UDP, "10.0.0.3", 5070, "pbx2.test"),
                Target(TCP, "10.0.0.2", 5080, "pbx1.test"),
            ],
            60,
        ),
    )
    return manager, events, record


def response(status: int) -> ResponseReceived:
    raw = (
        f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Response)
    return ResponseReceived(None, message)  # type: ignore[arg-type]


def timeout() -> TransactionTimeout:
    return TransactionTimeout(None, Timer.F)  # type: ignore[arg-type]


def test_best_target_then_failover_then_recovery(links: Any) -> None:
    manager, events, record = links
    first = manager.destination(record)
    assert first == Destination(UDP, "10.0.0.2", 5060)
    # A timeout is a failure (§4.3): down, one alarm, next target offered.
    assert manager.report_event(record, first, timeout()) is True
    assert manager.alternative(record, [first]) == Destination(UDP, "10.0.0.3", 5070)
    assert manager.destination(record) == Destination(UDP, "10.0.0.3", 5070)
    assert events == [(events[0][0], "major", "alarm")] and "is down" in events[0][0]
    # A 503 is a failure too; a 404 is an answer (the target is up).
    second = Destination(UDP, "10.0.0.3", 5070)
    assert manager.report_event(record, second, response(404)) is False
    assert manager.report_event(record, second, response(503)) is True
    # Recovery: any answer brings pbx1 back, with an "up again" event.
    assert manager.report_event(record, first, response(200)) is False
    assert manager.destination(record) == first
    assert "up again" in events[-1][0]
    assert manager.counters["icp_link_changes_total"]["pbx down"] == 2
    assert manager.gauges()["pbx udp:10.0.0.2:5060"] == 1
    assert manager.gauges()["pbx udp:10.0.0.3:5070"] == 0
    assert manager.state_of(record.guid) == "up"


def test_sticky_target_kept_until_it_fails(links: Any) -> None:
    manager, _, record = links
    second = Destination(UDP, "10.0.0.3", 5070)
    assert manager.destination(record, sticky=second) == second  # not switched back
    manager.report_event(record, second, timeout())
    assert manager.destination(record, sticky=second) == Destination(UDP, "10.0.0.2", 5060)


def test_large_requests_go_over_tcp(links: Any) -> None:
    manager, _, record = links
    # RFC 3261 §18.1.1: over 1300 bytes → TCP at the same host (its SRV port here).
    assert manager.destination(record, size=1301) == Destination(TCP, "10.0.0.2", 5080)
    assert manager.destination(record, size=1300) == Destination(UDP, "10.0.0.2", 5060)
    udp_only = icp(
        guid="00000000-0000-0000-0000-0000000000bb", sip_capabilities=["udp"], address="10.9.9.9"
    )
    manager.load([manager.links[record.guid].icp, udp_only])
    assert manager.destination(udp_only, size=5000) == Destination(UDP, "10.9.9.9", 5060)


def test_all_down_still_tries_the_best(links: Any) -> None:
    manager, _, record = links
    for target in list(manager.links[record.guid].targets):
        manager.report_event(record, target.destination(), timeout())
    assert manager.state_of(record.guid) == "down"
    assert manager.destination(record) == Destination(UDP, "10.0.0.2", 5060)
    assert manager.alternative(record, []) is None


def test_resolved_addresses_count_as_icp_side(links: Any) -> None:
    manager, _, record = links
    directory = manager.ctx.directory
    directory.icps = {record.guid: record}
    assert directory.icp_at("10.0.0.3") == record
    assert directory.icp_at("10.0.0.99") is None


def test_unusable_tls_settings_fail_closed(links: Any) -> None:
    manager, _, _ = links
    broken = icp(
        guid="00000000-0000-0000-0000-0000000000cc",
        name="broken",
        address="10.0.0.7",
        transport="tls",
        tls_ca_file="/nonexistent/ca.pem",
    )
    manager.load([broken])
    trust = manager.links[broken.guid].trust
    assert trust is not None and trust.mode == "invalid"
    assert trust.check_peer(b"any certificate") is not None  # every peer refused
    assert "TLS settings unusable" in manager.snapshot()[0]["error"]
