"""Acceptance, issue 4 scenario 1: 100 SIPp phones register through Limen (UDP from the
internet, UDP and TCP from behind the home NAT); the PBX (Kamailio) shows 100 ICP-side
bindings, each with Limen's LAN contact; de-registration removes all of them."""

from __future__ import annotations

import asyncio
import time

import pytest
from acc_lab import (
    DMZ_LAN_IP,
    HOMEPC_IP,
    LIMEN_SIP,
    REG_USERS,
    WAN_IP,
    Lab,
    icp_aors,
    icp_user,
    register_lines,
    screen_counts,
)

pytestmark = [pytest.mark.netns, pytest.mark.peers, pytest.mark.timeout(120)]

# (namespace, address, port, SIPp transport, users)
GROUPS = [
    ("wan", WAN_IP, 6001, "u1", REG_USERS[:40]),
    ("homepc", HOMEPC_IP, 6002, "u1", REG_USERS[40:70]),
    ("homepc", HOMEPC_IP, 6003, "t1", REG_USERS[70:]),
]


async def register_all(lab: Lab, expires: int, tag: str) -> None:
    runs = [
        await lab.sipp(
            role,
            f"{tag}-{transport}-{port}",
            "register",
            "-r",
            "50",
            "-l",
            "20",
            local_ip=ip,
            port=port,
            remote=LIMEN_SIP,
            transport=transport,
            inf=register_lines(users, expires),
            calls=len(users),
            trace=False,
        )
        for role, ip, port, transport, users in GROUPS
    ]
    for run, (*_, users) in zip(runs, GROUPS, strict=True):
        rc = await run.wait(60)
        assert rc == 0, run.explain()
        assert screen_counts(run) == (len(users), 0)


async def wait_icp_bindings(lab: Lab, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = icp_aors(lab.pbx) & {icp_user(u) for u in REG_USERS}
        if found == wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"PBX has {len(found)} of the bindings, wanted {len(wanted)}")
        await asyncio.sleep(0.3)


async def test_100_phones_register_and_deregister(lab: Lab) -> None:
    started = time.monotonic()
    await register_all(lab, 3600, "reg")
    await wait_icp_bindings(lab, {icp_user(u) for u in REG_USERS})
    took = time.monotonic() - started
    # Every ICP-side binding is Limen's per-device contact on its LAN address.
    for user in (REG_USERS[0], REG_USERS[50], REG_USERS[-1]):
        (contact,) = lab.pbx.contacts(icp_user(user))
        assert contact.startswith("sip:lm") and f"@{DMZ_LAN_IP}:5060" in contact, contact
    assert took < 60

    await register_all(lab, 0, "unreg")
    await wait_icp_bindings(lab, set())
