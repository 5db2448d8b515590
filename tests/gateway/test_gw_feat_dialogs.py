"""Call features through Limen (the B2BUA) against Kamailio (the PBX, 127.0.0.2) and SIPp.

Each test runs SIPp at both ends (a phone calling through Limen, a PBX extension
registered at Kamailio) and asserts both exit codes and what each end saw: PRACK /
100rel (RFC 3262) with RAck rewritten, UPDATE in early and confirmed dialogs (RFC 3311),
INFO (DTMF), REFER with NOTIFY (RFC 3515), SUBSCRIBE/NOTIFY dialogs for BLF and MWI
(RFC 6665), unsolicited NOTIFY, MESSAGE both ways and OPTIONS to a PBX user.
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
from limen.config import MediaSettings
from limen.sip import Transport
from limen.store import open_store
from limen.store.schemas import DeviceCreate, IcpCreate

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

PHONES = ["2101", "2102", "2103", "2104"]
EXTENSIONS = [f"ext31{n:02d}" for n in range(1, 16)]


def set_password(user: str) -> str:
    return f"set-{user}"


def icp_user(user: str) -> str:
    return f"icp{user}"


def ext_password(ext: str) -> str:
    return f"pw-{ext}"


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    subscribers = {icp_user(u): f"icp-pw-{u}" for u in PHONES}
    subscribers.update({e: ext_password(e) for e in EXTENSIONS})
    kam = start_kamailio(tmp_path_factory.mktemp("kamailio"), subscribers)
    try:
        yield kam
    finally:
        kam.stop()


StartLimen = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def limen_factory(tmp_path: Path, kamailio: Kamailio) -> AsyncIterator[StartLimen]:
    apps: list[RunningApp] = []

    async def make(
        options: dict[str, Any] | None = None, media: MediaSettings | None = None, **sip: Any
    ) -> RunningApp:
        settings = make_settings(tmp_path / f"limen{len(apps)}", **sip)
        if media is not None:
            settings = settings.model_copy(update={"media": media})
        prepare(settings)
        store = open_store(settings)
        try:
            store.icps.create(
                IcpCreate(name="pbx", address=PBX_HOST, port=kamailio.port, transport="udp")
            )
            for user in PHONES:
                store.devices.create(
                    DeviceCreate(
                        setside_username=user,
                        setside_password=set_password(user),
                        icp="pbx",
                        icpside_username=icp_user(user),
                        icpside_password=f"icp-pw-{user}",
                    )
                )
            store.options.set({"sip_udp": True, "options_keepalive": "Never", **(options or {})})
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


def limen_target(app: RunningApp) -> str:
    return f"127.0.0.1:{app.port(Transport.UDP)}"


def phone_inf(user: str, callee: str, *extra: str) -> str:
    auth = f"[authentication username={user} password={set_password(user)}]"
    return ";".join([user, "127.0.0.1", auth, callee, *extra])


def ext_inf(ext: str, callee: str, *extra: str) -> str:
    auth = f"[authentication username={ext} password={ext_password(ext)}]"
    return ";".join([ext, PBX_HOST, auth, callee, *extra])


async def register_extension(kamailio: Kamailio, ext: str) -> int:
    ua = UdpUa(ext, ext_password(ext), (PBX_HOST, kamailio.port))
    try:
        response = await ua.register()
        assert response.status == 200, response
        return ua.port
    finally:
        ua.close()


async def register_phone(app: RunningApp, kamailio: Kamailio, user: str) -> int:
    ua = UdpUa(user, set_password(user), ("127.0.0.1", app.port(Transport.UDP)))
    try:
        response = await ua.register()
        assert response.status == 200, response
    finally:
        ua.close()
    await wait_for(lambda: bool(kamailio.contacts(icp_user(user))), timeout=10, step=0.2)
    return ua.port


def call_ids(trace: str) -> set[str]:
    return set(re.findall(r"(?im)^(?:Call-ID|i):\s*(\S+)", trace))


async def both(caller: Sipp, callee: Sipp, timeout: float = 25.0) -> None:
    rc_caller = await caller.wait(timeout)
    rc_callee = await callee.wait(timeout)
    assert rc_caller == 0, caller.explain()
    assert rc_callee == 0, callee.explain()


def assert_hidden(phone_side: str, pbx_side: str, kamailio: Kamailio) -> None:
    for leak in (PBX_HOST, f":{kamailio.port}", "kamailio-pbx", "Record-Route"):
        assert leak not in phone_side, leak
    assert not call_ids(phone_side) & call_ids(pbx_side)


async def phone_calls_ext(
    tmp_path: Path,
    app: RunningApp,
    kamailio: Kamailio,
    ext: str,
    phone_scenario: str,
    ext_scenario: str,
    phone: str = "2101",
    extra: tuple[str, ...] = (),
) -> tuple[Sipp, Sipp]:
    ext_port = await register_extension(kamailio, ext)
    callee = await sipp(tmp_path, "ext", ext_scenario, port=ext_port)
    caller = await sipp(
        tmp_path,
        "phone",
        phone_scenario,
        port=free_udp_port(),
        remote=limen_target(app),
        inf=phone_inf(phone, ext, *extra),
    )
    await both(caller, callee)
    return caller, callee


# --- PRACK / 100rel, UPDATE, INFO ------------------------------------------------------------


async def test_prack_early_update_info_and_update(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    phone, ext = await phone_calls_ext(
        tmp_path, limen, kamailio, "ext3101", "feat_uac_prack", "feat_uas_prack"
    )
    phone_side, pbx_side = phone.messages, ext.messages
    assert_hidden(phone_side, pbx_side, kamailio)
    # The reliable 183 reached the phone with its RSeq; the phone's PRACK reached the
    # extension with RAck naming the ICP leg's INVITE CSeq (not the phone's 2).
    assert re.search(r"(?m)^RSeq: 1\s*$", phone_side)
    invite_cseqs = re.findall(r"(?m)^CSeq: (\d+) INVITE", pbx_side)
    racks = re.findall(r"(?m)^RAck: 1 (\d+) INVITE", pbx_side)
    assert racks and invite_cseqs and racks[0] == invite_cseqs[0], (racks, invite_cseqs)
    assert racks[0] != "2" or invite_cseqs[0] == "2"
    assert "RAck: 1 2 INVITE" in phone_side  # what the phone sent
    # UPDATE in the early dialog (PCMA offer, answered), INFO DTMF, confirmed UPDATE.
    assert pbx_side.count("UPDATE sip:") == 2 and phone_side.count("UPDATE sip:") == 2
    assert "Content-Type: application/dtmf-relay" in pbx_side and "Signal=5" in pbx_side
    assert "a=recvonly" in phone_side  # the answer to the confirmed UPDATE came back
    await wait_for(lambda: limen.calls is not None and limen.calls.active_calls == 0)


async def test_100rel_required_without_prack_support_is_420(
    limen_factory: StartLimen, kamailio: Kamailio
) -> None:
    app = await limen_factory(options={"prack_support": False})
    ua = UdpUa("2101", set_password("2101"), ("127.0.0.1", app.port(Transport.UDP)))
    try:
        invite = ua.request("INVITE", "sip:ext3102@127.0.0.1", body=SDP, extra=["Require: 100rel"])
        _, final = await ua.transact(invite)
        assert final.status == 420
        assert final.get("Unsupported") == "100rel"
        seen = [m.status for m in ua.received if hasattr(m, "status")]
        assert 407 in seen  # challenged first, then refused
    finally:
        ua.close()
    assert "ext3102" not in kamailio.log()  # nothing went to the PBX


# --- SUBSCRIBE / NOTIFY dialogs (BLF, MWI) ---------------------------------------------------

BLF_BODY = (
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"'
    ' entity="sip:ext@pbx"><dialog id="d1"><state>confirmed</state></dialog></dialog-info>'
)
MWI_BODY = "Messages-Waiting: yes"


@pytest.mark.parametrize(
    ("event", "ctype", "body", "ext"),
    [
        ("dialog", "application/dialog-info+xml", BLF_BODY, "ext3103"),
        ("message-summary", "application/simple-message-summary", MWI_BODY, "ext3104"),
    ],
)
async def test_subscribe_notify_refresh_unsubscribe(
    tmp_path: Path,
    limen: RunningApp,
    kamailio: Kamailio,
    event: str,
    ctype: str,
    body: str,
    ext: str,
) -> None:
    ext_port = await register_extension(kamailio, ext)
    notifier = await sipp(
        tmp_path,
        "ext",
        "feat_uas_subscribe",
        "-key",
        "ctype",
        ctype,
        "-key",
        "body",
        body,
        port=ext_port,
    )
    subscriber = await sipp(
        tmp_path,
        "phone",
        "feat_uac_subscribe",
        port=free_udp_port(),
        remote=limen_target(limen),
        inf=phone_inf("2102", ext, event),
    )
    await both(subscriber, notifier)
    phone_side, pbx_side = subscriber.messages, notifier.messages
    assert_hidden(phone_side, pbx_side, kamailio)
    assert "SIP/2.0 407" in phone_side  # SUBSCRIBE is challenged (challenge_methods)
    assert pbx_side.count("SUBSCRIBE sip:") == 3 and f"Event: {event}" in pbx_side
    assert re.search(r"(?m)^Expires: 0", pbx_side)  # the unsubscribe went through
    # The three NOTIFYs reached the phone in its own dialog, with their bodies.
    assert phone_side.count("NOTIFY sip:") == 3
    assert phone_side.count(body) == 2 and f"Content-Type: {ctype}" in phone_side
    assert "Subscription-State: terminated" in phone_side
    # The terminated NOTIFY ended the subscription dialog inside Limen.
    await wait_for(lambda: limen.calls is not None and limen.calls.active_calls == 0)


# --- out-of-dialog requests: unsolicited NOTIFY (MWI), MESSAGE, OPTIONS ------------------------


def request_uac(folder: Path, method: str, headers: str, body: str) -> str:
    """A SIPp scenario sending one out-of-dialog ``method`` (401/407 answered)."""
    lines = "\n".join(f"      {h}" for h in headers.split("|") if h)
    send = f"""
  <send retrans="500">
    <![CDATA[
      {method} sip:[field3]@[field1] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[field3]@[field1]>
      Call-ID: [call_id]
      CSeq: CSEQ {method}
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      AUTH
{lines}
      Max-Forwards: 70
      User-Agent: sipp-peer
      Content-Length: [len]

      {body}
    ]]>
  </send>"""
    xml = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="one {method}">{send.replace("CSEQ", "1").replace("AUTH", "")}
  <recv response="100" optional="true"/>
  <recv response="401" auth="true" optional="true" next="auth"/>
  <recv response="407" auth="true" optional="true" next="auth"/>
  <recv response="200" next="done"/>
  <label id="auth"/>{send.replace("CSEQ", "2").replace("AUTH", "[field2]")}
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <label id="done"/>
</scenario>
"""
    path = folder / f"uac_{method.lower()}"
    path.with_suffix(".xml").write_text(xml)
    return str(path)


def request_uas(folder: Path, method: str) -> str:
    """A SIPp scenario answering one ``method`` with 200."""
    xml = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="answer {method}">
  <recv request="{method}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Server: sipp-peer
      Content-Length: 0
    ]]>
  </send>
  <timewait milliseconds="300"/>
</scenario>
"""
    path = folder / f"uas_{method.lower()}"
    path.with_suffix(".xml").write_text(xml)
    return str(path)


MWI_HEADERS = (
    "Event: message-summary|Subscription-State: active|"
    "Content-Type: application/simple-message-summary"
)


async def test_unsolicited_mwi_notify_and_message_pbx_to_phone(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    phone_port = await register_phone(limen, kamailio, "2103")
    for n, (method, headers, body) in enumerate(
        [
            ("NOTIFY", MWI_HEADERS, MWI_BODY),
            ("MESSAGE", "Content-Type: text/plain", "hello from the PBX"),
        ]
    ):
        folder = tmp_path / method.lower()
        folder.mkdir()
        phone = await sipp(folder, "phone", request_uas(folder, method), port=phone_port)
        ext = await sipp(
            folder,
            "ext",
            request_uac(folder, method, headers, body),
            port=free_udp_port(),
            remote=f"{PBX_HOST}:{kamailio.port}",
            inf=ext_inf(f"ext31{10 + n}", icp_user("2103")),
        )
        await both(ext, phone)
        phone_side = phone.messages
        assert f"{method} sip:2103@127.0.0.1:{phone_port}" in phone_side
        assert body in phone_side
        for leak in (PBX_HOST, "kamailio-pbx", "sipp-peer\r\nVia"):
            assert leak not in phone_side, leak
        assert "SIP/2.0 200 OK" in ext.messages
        assert not call_ids(phone_side) & call_ids(ext.messages)


@pytest.mark.parametrize(
    ("method", "headers", "body", "ext"),
    [
        ("MESSAGE", "Content-Type: text/plain", "hello from the phone", "ext3112"),
        ("OPTIONS", "Accept: application/sdp", "", "ext3113"),
    ],
)
async def test_message_and_options_phone_to_pbx_user(
    tmp_path: Path,
    limen: RunningApp,
    kamailio: Kamailio,
    method: str,
    headers: str,
    body: str,
    ext: str,
) -> None:
    ext_port = await register_extension(kamailio, ext)
    callee = await sipp(tmp_path, "ext", request_uas(tmp_path, method), port=ext_port)
    caller = await sipp(
        tmp_path,
        "phone",
        request_uac(tmp_path, method, headers, body),
        port=free_udp_port(),
        remote=limen_target(limen),
        inf=phone_inf("2104", ext),
    )
    await both(caller, callee)
    pbx_side = callee.messages
    assert f"{method} sip:" in pbx_side and f"To: <sip:{ext}@{PBX_HOST}>" in pbx_side
    assert f"sip:{icp_user('2104')}@{PBX_HOST}" in pbx_side
    assert body in pbx_side
    assert_hidden(caller.messages, pbx_side, kamailio)
    await wait_for(lambda: limen.calls is not None and limen.calls.active_calls == 0)


# --- REFER (blind transfer) ---------------------------------------------------------------------


async def test_blind_transfer_refer_notify_bye(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    phone, ext = await phone_calls_ext(
        tmp_path,
        limen,
        kamailio,
        "ext3105",
        "feat_uac_refer",
        "feat_uas_refer",
        extra=("ext3106",),
    )
    phone_side, pbx_side = phone.messages, ext.messages
    assert_hidden(phone_side, pbx_side, kamailio)
    # The REFER reached the PBX with Refer-To / Referred-By on the PBX's side.
    assert f"Refer-To: <sip:ext3106@{PBX_HOST}>" in pbx_side
    # Referred-By names the device as the PBX knows it: its ICP-side identity.
    assert f"Referred-By: <sip:{icp_user('2101')}@{PBX_HOST}>" in pbx_side
    # Both sipfrag NOTIFYs came back into the phone's dialog, then the far end's BYE.
    assert phone_side.count("NOTIFY sip:") == 2 and "message/sipfrag" in phone_side
    assert "SIP/2.0 202" in phone_side and "BYE sip:" in phone_side
    await wait_for(lambda: limen.calls is not None and limen.calls.active_calls == 0)
