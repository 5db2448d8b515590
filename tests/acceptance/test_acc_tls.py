"""Acceptance, issue 4 scenario 3: baresip registers over TLS from behind the home NAT
(SRTP mandatory) and receives a call from a PBX extension. The INVITE can only reach it
over the phone's OWN TLS connection (behind NAT; and baresip has no server certificate);
baresip answers on its own (answermode=auto) with SRTP toward Limen's relay, the
extension (SIPp, plain RTP toward the PBX side) completes the call and hangs up."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from acc_lab import (
    EXT_IP,
    HOMEPC_IP,
    PBX_IP,
    TLS_USERS,
    Lab,
    ext_password,
    icp_aors,
    icp_user,
    screen_counts,
    start_baresip,
)

pytestmark = [pytest.mark.netns, pytest.mark.peers, pytest.mark.timeout(90)]


async def wait_registered(lab: Lab, user: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while icp_user(user) not in icp_aors(lab.pbx):
        assert time.monotonic() < deadline, f"{user} not registered at the PBX"
        await asyncio.sleep(0.2)


async def test_baresip_tls_behind_nat_receives_a_pbx_call(lab: Lab) -> None:
    user = TLS_USERS[0]
    phone = start_baresip(lab, "homepc", HOMEPC_IP, user, "baresip-tls")
    try:
        await wait_registered(lab, user)
        ext = "ext5009"
        call = await lab.sipp(
            "lan",
            "ext-baresip",
            "call_uac",
            local_ip=EXT_IP,
            port=6400,
            remote=f"{PBX_IP}:5060",
            calls=1,
            inf=[
                f"{ext};{PBX_IP};[authentication username={ext} "
                f"password={ext_password(ext)}];{icp_user(user)}"
            ],
        )
        rc = await call.wait(30)
        assert rc == 0, call.explain() + "\n--- baresip:\n" + phone.log()[-4000:]
        assert screen_counts(call) == (1, 0)
        await asyncio.sleep(0.5)
        log = phone.log()
    finally:
        phone.stop()
    # baresip saw the INVITE over its TLS connection, answered with SRTP, got the BYE.
    assert re.search(r"(?i)call established", log), log[-4000:]
    assert "RTP/SAVP" in log and "a=crypto:" in log, log[-4000:]
    assert "SRTP is Enabled" in log, log[-4000:]
    assert "BYE sip:" in log
