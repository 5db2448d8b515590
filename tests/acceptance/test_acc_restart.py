"""Acceptance, issue 4 scenario 4: restart Limen with phones registered.

UDP phones (behind the home NAT and on the internet) registered before the restart are
called from the PBX after it without any of them registering again: the bindings were
written behind to the store and resumed on start. A TLS phone (baresip) cannot be reached
over its old connection (it died with the process, and the phone is behind NAT); it is
reachable again as soon as it reconnects and registers. Limen rebinds a TLS/TCP phone on
its REGISTER only (not on any new connection from the phone's address); baresip 1.0 does
not reconnect by itself before its next refresh, so a new baresip plays the reconnecting
phone (the old one is killed so that it cannot de-register).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from acc_lab import (
    EXT_IP,
    HOMEPC_IP,
    LIMEN_SIP,
    PBX_IP,
    RESTART_USERS,
    TLS_USERS,
    WAN_IP,
    Lab,
    ext_password,
    icp_aors,
    icp_user,
    register_lines,
    screen_counts,
    start_baresip,
)

pytestmark = [pytest.mark.netns, pytest.mark.peers, pytest.mark.timeout(150)]

GROUPS = [("homepc", HOMEPC_IP, 6500, RESTART_USERS[:5]), ("wan", WAN_IP, 6501, RESTART_USERS[5:])]
EXT = "ext5008"


def ext_lines(users: list[str]) -> list[str]:
    return [
        f"{EXT};{PBX_IP};[authentication username={EXT} password={ext_password(EXT)}];{icp_user(u)}"
        for u in users
    ]


async def wait_at_pbx(lab: Lab, users: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while {icp_user(u) for u in users} - icp_aors(lab.pbx):
        assert time.monotonic() < deadline, "phones not registered at the PBX"
        await asyncio.sleep(0.2)


async def call_phones(lab: Lab, tag: str, calls_each: int = 2) -> None:
    """The PBX extension calls every restart phone ``calls_each`` times; both ends OK."""
    uas = [
        await lab.sipp(
            role,
            f"{tag}-uas-{port}",
            "uas_rr",
            local_ip=ip,
            port=port,
            calls=len(users) * calls_each,
        )
        for role, ip, port, users in GROUPS
    ]
    users = [u for *_, group in GROUPS for u in group]
    uac = await lab.sipp(
        "lan",
        f"{tag}-ext",
        "call_uac",
        "-r",
        "10",
        local_ip=EXT_IP,
        port=6502,
        remote=f"{PBX_IP}:5060",
        calls=len(users) * calls_each,
        inf=ext_lines(users),
    )
    rc = await uac.wait(60)
    assert rc == 0, uac.explain()
    assert screen_counts(uac) == (len(users) * calls_each, 0)
    for run, (*_, group) in zip(uas, GROUPS, strict=True):
        rc = await run.wait(20)
        assert rc == 0, run.explain()
        assert screen_counts(run) == (len(group) * calls_each, 0)


async def test_restart_keeps_udp_phones_and_tls_phones_come_back(lab: Lab) -> None:
    for role, ip, port, users in GROUPS:
        reg = await lab.sipp(
            role,
            f"restart-reg-{port}",
            "register",
            local_ip=ip,
            port=port,
            remote=LIMEN_SIP,
            calls=len(users),
            inf=register_lines(users, 3600),
        )
        assert await reg.wait(30) == 0, reg.explain()
    tls_user = TLS_USERS[1]
    phone = start_baresip(lab, "homepc", HOMEPC_IP, tls_user, "baresip-restart", port=5080)
    try:
        await wait_at_pbx(lab, [*RESTART_USERS, tls_user])
        await call_phones(lab, "before")

        assert lab.limen.stop() == 0
        lab.limen.start()
        await call_phones(lab, "after")  # no phone registered again

        # The TLS phone: its connection died with the old process, and baresip 1.0 does
        # not reconnect on its own before its next refresh (regint); a phone that
        # reconnects is played by a new baresip (the old one killed, so it cannot
        # de-register). Its REGISTER over the new connection replaces the resumed binding.
        os.kill(phone.process.pid, signal.SIGKILL)
        phone.process.wait(10)
        phone = start_baresip(lab, "homepc", HOMEPC_IP, tls_user, "baresip-again", port=5080)
        deadline = time.monotonic() + 20
        while f"{tls_user} moved to " not in lab.limen.stderr():
            assert time.monotonic() < deadline, phone.log()[-3000:]
            await asyncio.sleep(0.2)
        started = time.monotonic()
        call = await lab.sipp(
            "lan",
            "after-tls",
            "call_uac",
            local_ip=EXT_IP,
            port=6503,
            remote=f"{PBX_IP}:5060",
            calls=1,
            inf=ext_lines([tls_user]),
        )
        rc = await call.wait(30)
        assert rc == 0, call.explain() + phone.log()[-3000:]
        print(f"TLS phone called {time.monotonic() - started:.1f}s after its re-REGISTER")
        assert "SRTP is Enabled" in phone.log()
    finally:
        phone.stop()
