"""RFC 3263 failover against two real Kamailio PBXs (issue 15).

dnsmasq (loopback) serves ``pbx.test``: NAPTR → ``_sip._udp.pbx.test`` → SRV pbx1
(priority 10, 127.0.0.2) and pbx2 (priority 20, 127.0.0.3). Limen (in-process) knows the
ICP only by that name. Registrations go to pbx1; when pbx1 is stopped, OPTIONS pings
mark it down, an alarm is recorded, new registrations and the refreshes of existing ones
go to pbx2; when it comes back, its target is up again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gw_call_support import KAMAILIO_CFG as CALL_CFG
from gw_call_support import Sipp, UdpUa, sipp
from gw_call_support import make_settings as call_settings
from gw_reg_support import KAMAILIO_CFG, Phone, make_settings, wait_for
from icplink_lab import dnsmasq, free_udp_port
from kamailio_lab import Kamailio, launch_kamailio

from limen.app import RunningApp, prepare, start
from limen.sip import Transport
from limen.store import open_store
from limen.store.schemas import DeviceCreate, IcpCreate

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

USERS = ["7100", "7101"]
# Kamailio grants at most 10 s, so Limen refreshes every 8-9 s (RFC 3261 §10.2.4).
SHORT_CFG = KAMAILIO_CFG.replace('"max_expires", 3600', '"max_expires", 10')


def icp_user(user: str) -> str:
    return f"icp{user}"


@dataclass
class Pair:
    pbx1: Kamailio
    pbx2: Kamailio
    dns: str


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    subscribers = {icp_user(u): f"pw-{u}" for u in USERS}
    pbx1 = launch_kamailio(
        tmp_path / "pbx1", SHORT_CFG, subscribers, host="127.0.0.2", domain="pbx.test"
    )
    try:
        pbx2 = launch_kamailio(
            tmp_path / "pbx2", SHORT_CFG, subscribers, host="127.0.0.3", domain="pbx.test"
        )
    except BaseException:
        pbx1.stop()
        raise
    records = [
        "local-ttl=30",
        "naptr-record=pbx.test,10,10,S,SIP+D2U,,_sip._udp.pbx.test",
        f"srv-host=_sip._udp.pbx.test,pbx1.test,{pbx1.port},10,1",
        f"srv-host=_sip._udp.pbx.test,pbx2.test,{pbx2.port},20,1",
        "host-record=pbx1.test,127.0.0.2",
        "host-record=pbx2.test,127.0.0.3",
    ]
    try:
        with dnsmasq(tmp_path / "dns", records) as dns:
            yield Pair(pbx1, pbx2, dns)
    finally:
        pbx1.stop()
        pbx2.stop()


@pytest.fixture
async def limen(tmp_path: Path, pair: Pair) -> AsyncIterator[RunningApp]:
    settings = make_settings(tmp_path, dns_servers=[pair.dns])
    prepare(settings)
    store = open_store(settings)
    try:
        store.icps.create(
            IcpCreate(
                name="pbx",
                address="pbx.test",
                port=5060,
                transport="udp",
                sip_capabilities=["udp"],
                options_interval=1,
            )
        )
        for user in USERS:
            store.devices.create(
                DeviceCreate(
                    setside_username=user,
                    setside_password=f"set-{user}",
                    icp="pbx",
                    icpside_username=icp_user(user),
                    icpside_password=f"pw-{user}",
                )
            )
        store.options.set({"sip_udp": True, "options_keepalive": "Never"})
    finally:
        store.close()
    app = await start(settings)
    try:
        yield app
    finally:
        await app.close()


async def register(app: RunningApp, user: str) -> Phone:
    phone = Phone(user, f"set-{user}", ("127.0.0.1", app.port(Transport.UDP)))
    _, ok = await phone.register(expires=300)
    assert ok is not None and ok.status == 200, ok
    return phone


def states(app: RunningApp) -> dict[str, str]:
    assert app.links is not None
    (link,) = app.links.snapshot()
    return {t["name"]: t["state"] for t in link["targets"]}


async def test_registrations_fail_over_to_the_second_pbx(limen: RunningApp, pair: Pair) -> None:
    assert limen.links is not None and limen.core.store is not None
    (link,) = limen.links.snapshot()
    assert [t["name"] for t in link["targets"]] == ["pbx1.test", "pbx2.test"]
    await wait_for(lambda: states(limen) == {"pbx1.test": "up", "pbx2.test": "up"}, 5)

    first = await register(limen, "7100")
    await wait_for(lambda: bool(pair.pbx1.contacts(icp_user("7100"))), 5)
    assert not pair.pbx2.contacts(icp_user("7100"))

    pair.pbx1.stop()
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    await wait_for(lambda: states(limen)["pbx1.test"] == "down", 5)
    store = limen.core.store

    def down_alarm() -> bool:
        return any(
            e.kind == "alarm" and "udp:127.0.0.2" in e.message and "is down" in e.message
            for e in store.events.list()
        )

    await wait_for(down_alarm, 3)

    second = await register(limen, "7101")  # a new registration goes to pbx2
    await wait_for(lambda: bool(pair.pbx2.contacts(icp_user("7101"))), 5)
    # The first one's refresh (granted 10 s) moves to pbx2 too.
    await wait_for(lambda: bool(pair.pbx2.contacts(icp_user("7100"))), 12)
    moved_after = loop.time() - stopped
    assert moved_after < 12, moved_after
    assert states(limen)["pbx2.test"] == "up"
    first.close()
    second.close()


# -- calls ------------------------------------------------------------------------------------

PHONE = "2101"
EXT = "ext3101"


@pytest.fixture
def call_pair(tmp_path: Path) -> Iterator[Pair]:
    subscribers = {icp_user(PHONE): f"pw-{PHONE}", EXT: f"pw-{EXT}"}
    pbx1 = launch_kamailio(
        tmp_path / "cpbx1", CALL_CFG, subscribers, host="127.0.0.2", domain="pbx.test"
    )
    try:
        pbx2 = launch_kamailio(
            tmp_path / "cpbx2", CALL_CFG, subscribers, host="127.0.0.3", domain="pbx.test"
        )
    except BaseException:
        pbx1.stop()
        raise
    records = [
        "local-ttl=30",
        f"srv-host=_sip._udp.pbx.test,pbx1.test,{pbx1.port},10,1",
        f"srv-host=_sip._udp.pbx.test,pbx2.test,{pbx2.port},20,1",
        "host-record=pbx1.test,127.0.0.2",
        "host-record=pbx2.test,127.0.0.3",
    ]
    try:
        with dnsmasq(tmp_path / "cdns", records) as dns:
            yield Pair(pbx1, pbx2, dns)
    finally:
        pbx1.stop()
        pbx2.stop()


def invites(kam: Kamailio) -> int:
    return kam.log().count("LIMENTEST-REQ INVITE")


async def call_limen(
    tmp_path: Path, call_pair: Pair, *, options_interval: int, **sip: Any
) -> tuple[RunningApp, int]:
    """Limen with the ICP known as pbx.test, and the extension registered at both PBXs
    from one port (a cluster shares its registrations); returns (app, extension port)."""
    settings = call_settings(tmp_path / "limen", dns_servers=[call_pair.dns], **sip)
    prepare(settings)
    store = open_store(settings)
    try:
        store.icps.create(
            IcpCreate(
                name="pbx",
                address="pbx.test",  # no NAPTR here: SRV per transport (RFC 3263 §4.1)
                transport="udp",
                sip_capabilities=["udp"],
                options_interval=options_interval,
            )
        )
        store.devices.create(
            DeviceCreate(
                setside_username=PHONE,
                setside_password=f"set-{PHONE}",
                icp="pbx",
                icpside_username=icp_user(PHONE),
                icpside_password=f"pw-{PHONE}",
            )
        )
        store.options.set({"sip_udp": True, "options_keepalive": "Never"})
    finally:
        store.close()
    ua = UdpUa(EXT, f"pw-{EXT}", ("127.0.0.2", call_pair.pbx1.port))
    ext_port = ua.port
    assert (await ua.register()).status == 200
    ua.close()
    ua = UdpUa(EXT, f"pw-{EXT}", ("127.0.0.3", call_pair.pbx2.port), port=ext_port)
    assert (await ua.register()).status == 200
    ua.close()
    return await start(settings), ext_port


async def phone_call(tmp_path: Path, app: RunningApp, name: str, callee: Sipp) -> None:
    target = f"127.0.0.1:{app.port(Transport.UDP)}"
    inf = f"{PHONE};127.0.0.1;[authentication username={PHONE} password=set-{PHONE}];{EXT}"
    caller = await sipp(tmp_path, name, "call_uac", port=free_udp_port(), remote=target, inf=inf)
    rc = await caller.wait()
    assert rc == 0, caller.explain() + "\n" + callee.explain()


async def test_new_calls_move_to_the_second_pbx(tmp_path: Path, call_pair: Pair) -> None:
    app, ext_port = await call_limen(tmp_path, call_pair, options_interval=1)
    try:
        callee = await sipp(tmp_path, "ext", "uas_rr", port=ext_port, calls=2)
        await phone_call(tmp_path, app, "phone1", callee)
        assert invites(call_pair.pbx1) == 1 and invites(call_pair.pbx2) == 0

        call_pair.pbx1.stop()
        await wait_for(lambda: states(app)["pbx1.test"] == "down", 5)
        await phone_call(tmp_path, app, "phone2", callee)  # the next call goes to pbx2
        assert invites(call_pair.pbx2) == 1
        assert (await callee.wait()) == 0, callee.explain()
        assert app.calls is not None and app.calls.calls_failed == 0
    finally:
        await app.close()


async def test_invite_in_flight_fails_over_on_timeout(tmp_path: Path, call_pair: Pair) -> None:
    """No pings: the dead PBX is noticed by the INVITE's own Timer B (64*T1, T1 = 50 ms
    here), and the same call goes on at pbx2 (RFC 3263 §4.3)."""
    app, ext_port = await call_limen(tmp_path, call_pair, options_interval=0, t1=0.05, timer_c=30)
    try:
        callee = await sipp(tmp_path, "ext", "uas_rr", port=ext_port, calls=1)
        call_pair.pbx1.stop()
        await phone_call(tmp_path, app, "phone1", callee)
        assert invites(call_pair.pbx2) == 1
        assert (await callee.wait()) == 0, callee.explain()
        assert app.calls is not None and app.calls.calls_failed == 0
        assert states(app)["pbx1.test"] == "down"
    finally:
        await app.close()
