"""Acceptance, issue 4 scenario 5: call features through the lab, checked at both ends.

SIPp phones behind the home NAT (``homepc``, UDP, Limen at its public address) call SIPp
PBX extensions on the LAN, registered at Kamailio, with the scenarios of the loopback
feature tests (``tests/gateway/scenarios``): CANCEL while ringing, re-INVITE hold/resume,
PRACK / 100rel with UPDATE and INFO, REFER (blind transfer) with its NOTIFYs, and
SUBSCRIBE/NOTIFY (BLF ``dialog``, MWI ``message-summary``). Each test asserts both exit
codes, the messages each end saw, and topology hiding in both directions (nothing of the
LAN reaches the phone, nothing of the home network reaches the PBX).
"""

from __future__ import annotations

import re
import time

import pytest
from acc_lab import (
    DMZ_LAN_IP,
    EXT_IP,
    FEATURE_EXTENSIONS,
    FEATURE_USERS,
    HOME_PUBLIC_IP,
    HOMEPC_IP,
    LIMEN_SIP,
    PBX_IP,
    PUBLIC_IP,
    Lab,
    Sipp,
    ext_password,
    icp_user,
    set_password,
)

pytestmark = [pytest.mark.netns, pytest.mark.peers, pytest.mark.timeout(120)]

PHONE_PORT, EXT_PORT = 7100, 7200  # + the feature's index


def call_ids(trace: str) -> set[str]:
    return set(re.findall(r"(?im)^(?:Call-ID|i):\s*(\S+)", trace))


async def wait_ok(run: Sipp, timeout: float = 60) -> None:
    rc = await run.wait(timeout)
    assert rc == 0, run.explain()


async def feature(
    lab: Lab,
    index: int,
    phone_scenario: str,
    ext_scenario: str,
    *,
    ext_args: tuple[str, ...] = (),
    phone_fields: tuple[str, ...] = (),
) -> tuple[str, str]:
    """Phone FEATURE_USERS[index] (homepc, behind NAT) runs ``phone_scenario`` toward
    extension FEATURE_EXTENSIONS[index] (lan) running ``ext_scenario``; both must exit 0.
    Returns (what the phone saw, what the extension saw)."""
    user, ext = FEATURE_USERS[index], FEATURE_EXTENSIONS[index]
    ext_port, phone_port = EXT_PORT + index, PHONE_PORT + index
    register = await lab.sipp(
        "lan",
        f"feat{index}-ext-register",
        "register",
        local_ip=EXT_IP,
        port=ext_port,
        remote=f"{PBX_IP}:5060",
        inf=[f"{ext};{PBX_IP};[authentication username={ext} password={ext_password(ext)}];300"],
    )
    await wait_ok(register, 30)
    callee = await lab.sipp(
        "lan", f"feat{index}-ext", ext_scenario, *ext_args, local_ip=EXT_IP, port=ext_port
    )
    auth = f"[authentication username={user} password={set_password(user)}]"
    caller = await lab.sipp(
        "homepc",
        f"feat{index}-phone",
        phone_scenario,
        local_ip=HOMEPC_IP,
        port=phone_port,
        remote=LIMEN_SIP,
        inf=[";".join([user, PUBLIC_IP, auth, ext, *phone_fields])],
    )
    await wait_ok(caller)
    await wait_ok(callee)
    phone_side, pbx_side = caller.messages, callee.messages
    # Topology hiding both ways; the phone was challenged by Limen (set-side auth).
    for leak in (PBX_IP, EXT_IP, DMZ_LAN_IP, "kamailio-pbx", "sipp-ext", "Record-Route"):
        assert leak not in phone_side, leak
    for leak in (HOMEPC_IP, HOME_PUBLIC_IP, PUBLIC_IP):
        assert leak not in pbx_side, leak
    assert call_ids(phone_side) and not call_ids(phone_side) & call_ids(pbx_side)
    assert "SIP/2.0 407" in phone_side
    # The PBX knows the device by its ICP-side identity only.
    assert f"sip:{icp_user(user)}@{PBX_IP}" in pbx_side
    return phone_side, pbx_side


def settle(lab: Lab) -> None:
    """Give Limen a moment to finish the dialogs (in-flight BYE / NOTIFY answers)."""
    time.sleep(0.2)
    assert lab.limen.process is not None and lab.limen.process.poll() is None


async def test_cancel_while_ringing_behind_nat(lab: Lab) -> None:
    phone_side, pbx_side = await feature(lab, 0, "call_uac_cancel", "uas_ring_cancel")
    # The phone: 180, then its CANCEL answered 200 and the INVITE 487.
    assert "SIP/2.0 180" in phone_side and "SIP/2.0 487" in phone_side
    assert re.search(r"(?m)^CSeq: \d+ CANCEL", phone_side)
    # The extension: the INVITE, then Limen's CANCEL (its 487 ACKed by Kamailio).
    assert "INVITE sip:" in pbx_side and "CANCEL sip:" in pbx_side
    assert "SIP/2.0 487" in pbx_side
    settle(lab)


async def test_hold_and_resume_re_invites_behind_nat(lab: Lab) -> None:
    phone_side, pbx_side = await feature(lab, 1, "call_uac_hold", "uas_hold")
    # Two re-INVITEs reached the extension (hold with sendonly, resume), the answers
    # came back to the phone (recvonly for the hold).
    assert pbx_side.count("INVITE sip:") >= 3
    assert "a=sendonly" in pbx_side and "a=recvonly" in phone_side
    settle(lab)


async def test_prack_update_info_behind_nat(lab: Lab) -> None:
    phone_side, pbx_side = await feature(lab, 2, "feat_uac_prack", "feat_uas_prack")
    # The reliable 183 reached the phone; its PRACK reached the extension with RAck
    # naming the ICP leg's INVITE CSeq.
    assert re.search(r"(?m)^RSeq: 1\s*$", phone_side) and "Require: 100rel" in phone_side
    invite_cseqs = re.findall(r"(?m)^CSeq: (\d+) INVITE", pbx_side)
    racks = re.findall(r"(?m)^RAck: 1 (\d+) INVITE", pbx_side)
    assert racks and invite_cseqs and racks[0] == invite_cseqs[0], (racks, invite_cseqs)
    assert pbx_side.count("PRACK sip:") == 1
    # UPDATE in the early and the confirmed dialog, INFO (DTMF) in between.
    assert pbx_side.count("UPDATE sip:") == 2 and phone_side.count("UPDATE sip:") == 2
    assert "Content-Type: application/dtmf-relay" in pbx_side and "Signal=5" in pbx_side
    settle(lab)


async def test_refer_blind_transfer_behind_nat(lab: Lab) -> None:
    target = FEATURE_EXTENSIONS[9]
    phone_side, pbx_side = await feature(
        lab, 3, "feat_uac_refer", "feat_uas_refer", phone_fields=(target,)
    )
    user = FEATURE_USERS[3]
    # The REFER reached the extension with the PBX's host and the device's ICP identity.
    assert f"Refer-To: <sip:{target}@{PBX_IP}>" in pbx_side
    assert f"Referred-By: <sip:{icp_user(user)}@{PBX_IP}>" in pbx_side
    # 202, both sipfrag NOTIFYs and the far end's BYE reached the phone through the NAT.
    assert "SIP/2.0 202" in phone_side
    assert phone_side.count("NOTIFY sip:") == 2 and "message/sipfrag" in phone_side
    assert "BYE sip:" in phone_side
    settle(lab)


BLF_BODY = (
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"'
    ' entity="sip:ext@pbx"><dialog id="d1"><state>confirmed</state></dialog></dialog-info>'
)
MWI_BODY = "Messages-Waiting: yes"


@pytest.mark.parametrize(
    ("index", "event", "ctype", "body"),
    [
        (4, "dialog", "application/dialog-info+xml", BLF_BODY),
        (5, "message-summary", "application/simple-message-summary", MWI_BODY),
    ],
    ids=["blf", "mwi"],
)
async def test_subscribe_notify_behind_nat(
    lab: Lab, index: int, event: str, ctype: str, body: str
) -> None:
    phone_side, pbx_side = await feature(
        lab,
        index,
        "feat_uac_subscribe",
        "feat_uas_subscribe",
        ext_args=("-key", "ctype", ctype, "-key", "body", body),
        phone_fields=(event,),
    )
    # Subscribe, refresh, unsubscribe reached the extension; its three NOTIFYs (two with
    # the body, the last "terminated") reached the phone behind the NAT.
    assert pbx_side.count("SUBSCRIBE sip:") == 3 and f"Event: {event}" in pbx_side
    assert re.search(r"(?m)^Expires: 0", pbx_side)
    assert phone_side.count("NOTIFY sip:") == 3
    assert phone_side.count(body) == 2 and f"Content-Type: {ctype}" in phone_side
    assert "Subscription-State: terminated" in phone_side
    settle(lab)
