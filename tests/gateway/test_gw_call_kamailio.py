"""Calls through Limen (the B2BUA) against a real Kamailio proxy/registrar playing the PBX.

Kamailio (127.0.0.2, UDP, record-routing, digest auth from SQLite: every INVITE from a
device's ICP-side identity is challenged 407) runs for the module. Each test starts Limen
in-process (127.0.0.1, ephemeral ports) over a fresh store with one ICP pointing at
Kamailio. SIPp plays the phones and the PBX extensions (scenarios/), and each test checks
BOTH ends (exit code 0) and, where it matters, the messages each end saw (topology
hiding). A small Python UA sends the requests that end in failures.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gw_call_support import (
    PBX_HOST,
    SDP,
    Kamailio,
    Sipp,
    UdpUa,
    free_udp_port,
    make_settings,
    sipp,
    start_kamailio,
    wait_for,
)

from limen.app import RunningApp, prepare, start
from limen.sip import Transport
from limen.store import open_store
from limen.store.schemas import DeviceCreate, IcpCreate

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

PHONES = ["2001", "2002", "2003"]
EXTENSIONS = [f"ext30{n:02d}" for n in range(1, 12)]


def set_password(user: str) -> str:
    return f"set-{user}"


def icp_user(user: str) -> str:
    return f"icp{user}"


def icp_password(user: str) -> str:
    return f"icp-pw-{user}"


def ext_password(ext: str) -> str:
    return f"pw-{ext}"


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    folder = tmp_path_factory.mktemp("kamailio")
    subscribers = {icp_user(u): icp_password(u) for u in PHONES}
    subscribers.update({e: ext_password(e) for e in EXTENSIONS})
    kam = start_kamailio(folder, subscribers)
    try:
        yield kam
    finally:
        kam.stop()


StartLimen = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def limen_factory(tmp_path: Path, kamailio: Kamailio) -> AsyncIterator[StartLimen]:
    apps: list[RunningApp] = []

    async def make(icp_port: int | None = None, **sip: Any) -> RunningApp:
        settings = make_settings(tmp_path / f"limen{len(apps)}", **sip)
        prepare(settings)
        store = open_store(settings)
        try:
            store.icps.create(
                IcpCreate(
                    name="pbx",
                    address=PBX_HOST,
                    port=icp_port if icp_port is not None else kamailio.port,
                    transport="udp",
                )
            )
            for user in PHONES:
                store.devices.create(
                    DeviceCreate(
                        setside_username=user,
                        setside_password=set_password(user),
                        icp="pbx",
                        icpside_username=icp_user(user),
                        icpside_password=icp_password(user),
                    )
                )
            store.options.set({"sip_udp": True, "options_keepalive": "Never"})
        finally:
            store.close()
        app = await start(settings)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            await app.close()


@pytest.fixture
async def limen(limen_factory: StartLimen) -> RunningApp:
    return await limen_factory()


def limen_address(app: RunningApp) -> tuple[str, int]:
    return ("127.0.0.1", app.port(Transport.UDP))


def limen_target(app: RunningApp) -> str:
    return f"127.0.0.1:{app.port(Transport.UDP)}"


def phone_inf(user: str, callee: str, domain: str = "127.0.0.1") -> str:
    return (
        f"{user};{domain};[authentication username={user} password={set_password(user)}];{callee}"
    )


async def register_extension(kamailio: Kamailio, ext: str) -> int:
    """REGISTER ``ext`` at Kamailio from a fresh port; returns the port (for SIPp)."""
    ua = UdpUa(ext, ext_password(ext), (PBX_HOST, kamailio.port))
    try:
        response = await ua.register()
        assert response.status == 200, response
        return ua.port
    finally:
        ua.close()


def call_ids(trace: str) -> set[str]:
    return set(re.findall(r"(?im)^(?:Call-ID|i):\s*(\S+)", trace))


def assert_both_ok(uac: Sipp, rc_uac: int, uas: Sipp, rc_uas: int) -> None:
    assert rc_uac == 0, uac.explain()
    assert rc_uas == 0, uas.explain()


async def run_call(
    tmp_path: Path,
    app: RunningApp,
    kamailio: Kamailio,
    ext: str,
    *,
    phone_scenario: str,
    ext_scenario: str,
    phone: str = "2001",
) -> tuple[Sipp, Sipp]:
    """Phone → PBX extension: ``ext`` registers at Kamailio and runs ``ext_scenario``;
    the phone (SIPp) calls it through Limen with ``phone_scenario``."""
    ext_port = await register_extension(kamailio, ext)
    callee = await sipp(tmp_path, "ext", ext_scenario, port=ext_port)
    caller = await sipp(
        tmp_path,
        "phone",
        phone_scenario,
        port=free_udp_port(),
        remote=limen_target(app),
        inf=phone_inf(phone, ext),
    )
    rc_caller = await caller.wait()
    rc_callee = await callee.wait()
    assert_both_ok(caller, rc_caller, callee, rc_callee)
    return caller, callee


# --- phone → PBX ---------------------------------------------------------------------------


async def test_phone_to_pbx_call_with_topology_hiding(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    caller, callee = await run_call(
        tmp_path, limen, kamailio, "ext3001", phone_scenario="call_uac", ext_scenario="uas_rr"
    )
    phone_side, pbx_side = caller.messages, callee.messages
    # The phone saw Limen's 407 (set-side challenge), then the call.
    assert "SIP/2.0 407" in phone_side and "SIP/2.0 200 OK" in phone_side
    # Nothing of the ICP side reaches the phone ...
    for leak in (PBX_HOST, str(kamailio.port), "kamailio-pbx", "sipp-ext", "Record-Route"):
        assert leak not in phone_side, leak
    # ... and nothing of the set side reaches the PBX extension.
    phone_call_ids = call_ids(phone_side)
    assert phone_call_ids and not phone_call_ids & call_ids(pbx_side)
    assert "sipp-phone" not in pbx_side
    assert f"sip:{icp_user('2001')}@{PBX_HOST}" in pbx_side  # From = ICP-side identity
    assert '"Caller 2001"' in pbx_side  # the display name is end to end
    # Kamailio challenged Limen's INVITE (407) and Limen answered with ICP-side creds.
    log = kamailio.log()
    assert len(re.findall(rf"LIMENTEST-REQ INVITE sip:ext3001@{PBX_HOST} from 127.0.0.1", log)) == 2
    assert limen.calls is not None
    await wait_for(lambda: limen.calls is not None and limen.calls.active_calls == 0)


async def test_early_media_183_and_bye_from_the_pbx(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    caller, _ = await run_call(
        tmp_path,
        limen,
        kamailio,
        "ext3002",
        phone_scenario="call_uac_wait_bye",
        ext_scenario="uas_183_bye",
    )
    phone_side = caller.messages
    assert "SIP/2.0 183" in phone_side
    # The 183 carried the (passed-through) SDP to the phone.
    early = phone_side.split("SIP/2.0 183", 1)[1].split("SIP/2.0 200", 1)[0]
    assert "m=audio" in early
    assert "BYE sip:" in phone_side and PBX_HOST not in phone_side


async def test_hold_and_resume_re_invites(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    caller, callee = await run_call(
        tmp_path,
        limen,
        kamailio,
        "ext3003",
        phone_scenario="call_uac_hold",
        ext_scenario="uas_hold",
    )
    assert callee.messages.count("a=sendonly") >= 1
    assert caller.messages.count("a=recvonly") >= 1


async def test_cancel_while_ringing(tmp_path: Path, limen: RunningApp, kamailio: Kamailio) -> None:
    caller, callee = await run_call(
        tmp_path,
        limen,
        kamailio,
        "ext3004",
        phone_scenario="call_uac_cancel",
        ext_scenario="uas_ring_cancel",
    )
    assert "SIP/2.0 487" in caller.messages
    assert "CANCEL sip:" in callee.messages


# Timer C (408 + CANCEL) and an unreachable ICP (503 + Retry-After at Timer B) are checked
# to the exact deadline on a manual clock in test_gw_timers.py.


async def test_unknown_dialog_481_and_disallowed_domain_403(limen: RunningApp) -> None:
    ua = UdpUa("2001", set_password("2001"), limen_address(limen))
    try:
        bye = ua.request("BYE", "sip:ext3001@127.0.0.1", to_tag="nosuchdialog")
        _, final = await ua.transact(bye)
        assert final.status == 481

        assert limen.calls is not None
        limen.calls.ctx.directory.options.allowed_uri_names = ["limen.test"]
        invite = ua.request("INVITE", "sip:ext3001@evil.example", body=SDP)
        _, final = await ua.transact(invite)
        assert final.status == 403
        # Limen's own name is allowed: that INVITE is challenged instead.
        invite = ua.request("INVITE", "sip:ext3001@limen.test", body=SDP)
        await ua.send(invite)
        challenge = await ua.final()
        assert challenge.status == 407
        await ua.ack_failure(invite, challenge)

        # Max-Forwards 0 is not relayed (483).
        invite = ua.request("INVITE", "sip:ext3001@127.0.0.1", body=SDP)
        invite.set("Max-Forwards", "0")
        _, final = await ua.transact(invite)
        assert final.status == 483
    finally:
        ua.close()


# --- PBX → phone ----------------------------------------------------------------------------


async def register_phone(app: RunningApp, kamailio: Kamailio, user: str) -> int:
    """Register ``user`` with Limen from a fresh port and wait for Limen's ICP-side
    registration at Kamailio; returns the phone's port."""
    ua = UdpUa(user, set_password(user), limen_address(app))
    try:
        response = await ua.register()
        assert response.status == 200, response
    finally:
        ua.close()
    await wait_for(lambda: bool(kamailio.contacts(icp_user(user))), timeout=10, step=0.2)
    return ua.port


async def test_pbx_to_phone_call(tmp_path: Path, limen: RunningApp, kamailio: Kamailio) -> None:
    phone_port = await register_phone(limen, kamailio, "2002")
    phone = await sipp(tmp_path, "phone", "uas_rr", port=phone_port)
    ext_port = free_udp_port()
    ext = await sipp(
        tmp_path,
        "ext",
        "call_uac",
        port=ext_port,
        remote=f"{PBX_HOST}:{kamailio.port}",
        inf=(
            f"ext3006;{PBX_HOST};[authentication username=ext3006 "
            f"password={ext_password('ext3006')}];{icp_user('2002')}"
        ),
    )
    rc_ext = await ext.wait()
    rc_phone = await phone.wait()
    assert_both_ok(ext, rc_ext, phone, rc_phone)
    phone_side = phone.messages
    for leak in (PBX_HOST, str(kamailio.port), "kamailio-pbx", str(ext_port), "Record-Route"):
        assert leak not in phone_side, leak
    assert not call_ids(phone_side) & call_ids(ext.messages)
    assert "INVITE sip:2002@127.0.0.1:" in phone_side  # the phone's own Contact


async def test_loop_back_to_the_same_phone_is_482(limen: RunningApp, kamailio: Kamailio) -> None:
    await register_phone(limen, kamailio, "2003")
    ua = UdpUa("2003", set_password("2003"), limen_address(limen))
    try:
        # The phone dials its own ICP-side number: PBX → Limen → (the same phone) = loop.
        invite = ua.request("INVITE", f"sip:{icp_user('2003')}@127.0.0.1", body=SDP)
        _, final = await ua.transact(invite)
        assert final.status == 482
    finally:
        ua.close()


async def test_pbx_call_to_an_unregistered_phone_is_480_unknown_404(
    limen: RunningApp, kamailio: Kamailio
) -> None:
    # Requests from the ICP's address to Limen itself, as Kamailio would relay them.
    pbx = UdpUa("ext3009", "x", limen_address(limen), port=0)
    pbx.sock.close()
    import socket

    pbx.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.sock.bind((PBX_HOST, 0))
    pbx.sock.setblocking(False)
    pbx.port = pbx.sock.getsockname()[1]
    try:
        invite = pbx.request("INVITE", f"sip:{icp_user('2001')}@127.0.0.1", body=SDP)
        _, final = await pbx.transact(invite)
        assert final.status == 480
        invite = pbx.request("INVITE", "sip:nobody@127.0.0.1", body=SDP)
        _, final = await pbx.transact(invite)
        assert final.status == 404
    finally:
        pbx.close()
