"""Acceptance, issue 4 scenario 2: calls through Limen and the PBX at a sustained rate,
checked at both ends (SIPp exit code 0 and the success counts on every UAC and UAS).

Three flows run at the same time:

- phone → PBX extension: UDP phones on the internet (``wan``) and TCP phones behind the
  home NAT call extensions registered at Kamailio;
- PBX extension → phone: extensions call the ICP-side numbers of UDP phones behind the
  home NAT (Limen reaches them at the NAT's address, the 200's Contact names the private one);
- phone → phone through the PBX: internet phones call the same NATed phones.

Media: the relay is on, SIPp phones have set_side_rtp_security "Disable" (SIPp has no
SRTP); SIPp sends no RTP, the point here is signalling.
"""

from __future__ import annotations

import time

import pytest
from acc_lab import (
    CALL_USERS,
    EXT_IP,
    EXTENSIONS,
    HOMEPC_IP,
    LIMEN_SIP,
    PBX_IP,
    PUBLIC_IP,
    WAN_IP,
    Lab,
    Sipp,
    ext_password,
    icp_aors,
    icp_user,
    register_lines,
    screen_counts,
    set_password,
)

pytestmark = [pytest.mark.netns, pytest.mark.peers, pytest.mark.timeout(180)]

CALLERS_UDP = CALL_USERS[0:5]  # wan, UDP, call extensions
CALLERS_TCP = CALL_USERS[5:10]  # homepc (NAT), TCP, call extensions
CALLEES = CALL_USERS[10:20]  # homepc (NAT), UDP, answer calls
CALLERS_P2P = CALL_USERS[20:25]  # wan, UDP, call the callees through the PBX
EXT_PORT, EXT_UAC_PORT = 6100, 6101
CALLEE_PORT = 6200
WAN_UAC_PORT, HOME_TCP_PORT, P2P_PORT = 6300, 6301, 6302


def phone_call_lines(callers: list[str], callees: list[str]) -> list[str]:
    return [
        f"{u};{PUBLIC_IP};[authentication username={u} password={set_password(u)}];{callee}"
        for u, callee in zip(callers * len(callees), callees * len(callers), strict=True)
    ]


async def check(run: Sipp, calls: int, timeout: float = 120) -> None:
    rc = await run.wait(timeout)
    assert rc == 0, run.explain()
    assert screen_counts(run) == (calls, 0), run.explain()


async def register_ends(lab: Lab) -> None:
    """Extensions register at Kamailio from lan:6100, callees with Limen from homepc:6200."""
    exts = await lab.sipp(
        "lan",
        "ext-register",
        "register",
        local_ip=EXT_IP,
        port=EXT_PORT,
        remote=f"{PBX_IP}:5060",
        calls=len(EXTENSIONS),
        trace=False,
        inf=[
            f"{e};{PBX_IP};[authentication username={e} password={ext_password(e)}];3600"
            for e in EXTENSIONS
        ],
    )
    await check(exts, len(EXTENSIONS), 30)
    phones = await lab.sipp(
        "homepc",
        "callee-register",
        "register",
        local_ip=HOMEPC_IP,
        port=CALLEE_PORT,
        remote=LIMEN_SIP,
        calls=len(CALLEES),
        inf=register_lines(CALLEES, 3600),
        trace=False,
    )
    await check(phones, len(CALLEES), 30)
    deadline = time.monotonic() + 20
    while {icp_user(u) for u in CALLEES} - icp_aors(lab.pbx):
        assert time.monotonic() < deadline, "callees not registered at the PBX"
        time.sleep(0.2)


async def run_calls(lab: Lab, per_flow: tuple[int, int, int, int], rate: int) -> float:
    """(UDP phone → ext, TCP phone → ext, ext → phone, phone → phone) calls at ``rate``
    calls per second per flow; returns the wall time."""
    to_ext_udp, to_ext_tcp, ext_to_phone, p2p = per_flow
    trace = sum(per_flow) <= 100
    await register_ends(lab)
    started = time.monotonic()
    ext_uas = await lab.sipp(
        "lan",
        "ext-uas",
        "uas_rr",
        local_ip=EXT_IP,
        port=EXT_PORT,
        calls=to_ext_udp + to_ext_tcp,
        trace=trace,
        timeout="150s",
    )
    phone_uas = await lab.sipp(
        "homepc",
        "phone-uas",
        "uas_rr",
        local_ip=HOMEPC_IP,
        port=CALLEE_PORT,
        calls=ext_to_phone + p2p,
        trace=trace,
        timeout="150s",
    )
    common = ("-r", str(rate), "-l", str(rate * 3))
    uacs = [
        (
            await lab.sipp(
                "wan",
                "phone-ext-udp",
                "call_uac",
                *common,
                local_ip=WAN_IP,
                port=WAN_UAC_PORT,
                remote=LIMEN_SIP,
                calls=to_ext_udp,
                trace=trace,
                timeout="150s",
                inf=phone_call_lines(CALLERS_UDP, EXTENSIONS),
            ),
            to_ext_udp,
        ),
        (
            await lab.sipp(
                "homepc",
                "phone-ext-tcp",
                "call_uac",
                *common,
                local_ip=HOMEPC_IP,
                port=HOME_TCP_PORT,
                transport="t1",
                remote=LIMEN_SIP,
                calls=to_ext_tcp,
                trace=trace,
                timeout="150s",
                inf=phone_call_lines(CALLERS_TCP, EXTENSIONS),
            ),
            to_ext_tcp,
        ),
        (
            await lab.sipp(
                "lan",
                "ext-phone",
                "call_uac",
                *common,
                local_ip=EXT_IP,
                port=EXT_UAC_PORT,
                remote=f"{PBX_IP}:5060",
                calls=ext_to_phone,
                trace=trace,
                timeout="150s",
                inf=[
                    f"{e};{PBX_IP};[authentication username={e} password={ext_password(e)}];"
                    f"{icp_user(u)}"
                    for e, u in zip(EXTENSIONS, CALLEES, strict=True)
                ],
            ),
            ext_to_phone,
        ),
        (
            await lab.sipp(
                "wan",
                "phone-phone",
                "call_uac",
                *common,
                local_ip=WAN_IP,
                port=P2P_PORT,
                remote=LIMEN_SIP,
                calls=p2p,
                trace=trace,
                timeout="150s",
                inf=phone_call_lines(CALLERS_P2P, [icp_user(u) for u in CALLEES]),
            ),
            p2p,
        ),
    ]
    for run, calls in uacs:
        await check(run, calls, 150)
    await check(ext_uas, to_ext_udp + to_ext_tcp, 30)
    await check(phone_uas, ext_to_phone + p2p, 30)
    return time.monotonic() - started


async def test_calls_both_directions_few(lab: Lab) -> None:
    await run_calls(lab, (10, 10, 10, 10), rate=5)
    sipp_folder = lab.folder / "sipp"
    phone_side = (sipp_folder / "phone-uas.msg").read_text(errors="replace")
    # Topology hiding toward the NATed phone: nothing of the LAN or the PBX.
    for leak in (PBX_IP, EXT_IP, "10.10.0.1", "kamailio-pbx", "Record-Route"):
        assert leak not in phone_side, leak
    assert f"INVITE sip:{CALLEES[0]}@{HOMEPC_IP}:{CALLEE_PORT}" in phone_side


async def test_500_calls_sustained(lab: Lab) -> None:
    took = await run_calls(lab, (100, 100, 150, 150), rate=10)
    # 4 flows x 10 cps = 40 cps overall while all four run.
    assert took < 90, took
