"""Registrations through Limen against a real Kamailio registrar playing the PBX.

Kamailio (127.0.0.2, UDP, digest auth from SQLite: its subscribers are the ICP-side
credentials) runs for the module; each test starts Limen in-process (127.0.0.1, ephemeral
ports) over a fresh store with one ICP pointing at Kamailio and devices 7000-7014.
Phones are a small Python UDP client and SIPp.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gw_reg_support import KAMAILIO_HOST, Phone, make_settings, start_kamailio, wait_for
from kamailio_lab import Kamailio, free_udp_port, require_tool

from limen.app import RunningApp, prepare, start
from limen.config import Settings
from limen.gateway.upstream import UpstreamState
from limen.sip import Transport
from limen.sip.digest import parse_challenge
from limen.store import open_store
from limen.store.bindings import BindingRepository
from limen.store.schemas import DeviceCreate, IcpCreate

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

USERS = [str(n) for n in range(7000, 7015)]
WRONG_ICP_PASSWORD_USER = "7014"  # its ICP-side password in Limen is not Kamailio's


def set_password(user: str) -> str:
    return f"set-{user}"


def icp_user(user: str) -> str:
    return f"icp{user}"


def icp_password(user: str) -> str:
    return f"icp-pw-{user}"


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    folder = tmp_path_factory.mktemp("kamailio")
    kam = start_kamailio(folder, {icp_user(u): icp_password(u) for u in USERS})
    try:
        yield kam
    finally:
        kam.stop()


def provision(settings: Settings, kam: Kamailio, **options: object) -> None:
    prepare(settings)
    store = open_store(settings)
    try:
        store.icps.create(
            IcpCreate(name="pbx", address=KAMAILIO_HOST, port=kam.port, transport="udp")
        )
        for user in USERS:
            wrong = user == WRONG_ICP_PASSWORD_USER
            store.devices.create(
                DeviceCreate(
                    setside_username=user,
                    setside_password=set_password(user),
                    icp="pbx",
                    icpside_username=icp_user(user),
                    icpside_password="wrong" if wrong else icp_password(user),
                )
            )
        store.options.set(
            {"sip_udp": True, "setside_reg_expiry": 120, "options_keepalive": "Never", **options}
        )
    finally:
        store.close()


@pytest.fixture
async def limen(tmp_path: Path, kamailio: Kamailio) -> AsyncIterator[RunningApp]:
    settings = make_settings(tmp_path)
    provision(settings, kamailio)
    app = await start(settings)
    try:
        yield app
    finally:
        await app.close()


def limen_udp(app: RunningApp) -> tuple[str, int]:
    return ("127.0.0.1", app.port(Transport.UDP))


def device_guid(app: RunningApp, user: str) -> str:
    device = app.registrar.ctx.directory.device_by_setside(user) if app.registrar else None
    assert device is not None
    return device.guid


def upstream_registered(app: RunningApp, user: str) -> bool:
    assert app.registrar is not None and app.registrar.upstream is not None
    guid = device_guid(app, user)
    return app.registrar.upstream.state(guid) is UpstreamState.REGISTERED


async def test_phone_registration_is_mirrored_at_the_pbx(
    limen: RunningApp, kamailio: Kamailio
) -> None:
    assert limen.registrar is not None
    phone = Phone("7000", set_password("7000"), limen_udp(limen))
    try:
        challenge, ok = await phone.register(expires=300)
        assert challenge.status == 401
        assert ok is not None and ok.status == 200, ok
        # Max Set-Side: the phone gets at most setside_reg_expiry (120), its own Contact.
        (contact,) = ok.contacts
        assert contact.expires == 120
        assert contact.uri.port == phone.port  # type: ignore[union-attr]
        binding = limen.registrar.binding_for(device_guid(limen, "7000"))
        assert binding is not None and binding.aor == "7000" and not binding.nat
        assert binding.destination().port == phone.port

        await wait_for(lambda: upstream_registered(limen, "7000"))
        token = limen.registrar.contact_token(
            limen.registrar.ctx.directory.devices[binding.device_guid]
        )
        assert limen.registrar.device_for_contact_user(token).guid == binding.device_guid  # type: ignore[union-attr]
        contacts = kamailio.contacts(icp_user("7000"))
        assert contacts == [f"sip:{token}@127.0.0.1:{limen.port(Transport.UDP)}"]
        first_count = kamailio.registers(icp_user("7000"))
        assert first_count == 2  # challenged once, then accepted

        # Topology hiding: nothing of the PBX in what the phone sees.
        for response in (challenge, ok):
            text = bytes(response).decode()
            assert KAMAILIO_HOST not in text and "kamailio" not in text.lower()

        # Phone refreshes are answered by Limen alone.
        for _ in range(3):
            _, again = await phone.register(expires=300)
            assert again is not None and again.status == 200
        await asyncio.sleep(0.3)
        assert kamailio.registers(icp_user("7000")) == first_count

        # De-registration removes the ICP-side binding.
        _, gone = await phone.register(expires=0)
        assert gone is not None and gone.status == 200 and not gone.contacts
        assert limen.registrar.binding_for(binding.device_guid) is None
        await wait_for(lambda: kamailio.contacts(icp_user("7000")) == [])
    finally:
        phone.close()


async def test_wrong_password_and_unknown_user_look_the_same(
    limen: RunningApp, kamailio: Kamailio
) -> None:
    known = Phone("7001", set_password("7001"), limen_udp(limen))
    unknown = Phone("9999", "whatever", limen_udp(limen))
    try:
        c1, bad = await known.register(password="not-it")
        c2, bad_unknown = await unknown.register()
        assert c1.status == c2.status == 401
        ch1 = [parse_challenge(v) for v in c1.get_all("WWW-Authenticate")]
        ch2 = [parse_challenge(v) for v in c2.get_all("WWW-Authenticate")]
        assert [(c.realm, c.algorithm, c.qop) for c in ch1] == [
            (c.realm, c.algorithm, c.qop) for c in ch2
        ]
        assert ch1[0].realm == "limen.test"
        assert bad is not None and bad_unknown is not None
        assert (
            (bad.status, bad.reason)
            == (bad_unknown.status, bad_unknown.reason)
            == (
                403,
                "Forbidden",
            )
        )
        assert sorted(n for n, _ in bad.headers) == sorted(n for n, _ in bad_unknown.headers)
        assert limen.registrar is not None and limen.registrar.bindings() == []
        await asyncio.sleep(0.2)
        assert kamailio.registers(icp_user("7001")) == 0
    finally:
        known.close()
        unknown.close()


async def test_upstream_failure_is_an_event_and_retried(
    limen: RunningApp, kamailio: Kamailio
) -> None:
    assert limen.registrar is not None and limen.registrar.upstream is not None
    user = WRONG_ICP_PASSWORD_USER
    phone = Phone(user, set_password(user), limen_udp(limen))
    try:
        _, ok = await phone.register()
        assert ok is not None and ok.status == 200  # the phone is served regardless
        guid = device_guid(limen, user)
        await wait_for(lambda: limen.registrar.upstream.state(guid) is UpstreamState.FAILED)  # type: ignore[union-attr]
        await wait_for(
            lambda: any(
                "ICP-side registration of icp7014" in e.message
                for e in limen.core.store.events.list(kind="alarm")
            )
        )
        # Answered the challenge once, then gave up until the backoff expires.
        assert kamailio.registers(icp_user(user)) in (2, 3)
        assert kamailio.contacts(icp_user(user)) == []
    finally:
        phone.close()


async def test_restart_resumes_bindings_and_upstream(tmp_path: Path, kamailio: Kamailio) -> None:
    settings = make_settings(tmp_path)
    provision(settings, kamailio, options_keepalive="Always", options_interval=1)
    app = await start(settings)
    phone = Phone("7002", set_password("7002"), limen_udp(app))
    try:
        _, ok = await phone.register()
        assert ok is not None and ok.status == 200
        await wait_for(lambda: upstream_registered(app, "7002"))
        before = kamailio.registers(icp_user("7002"))
        repo = BindingRepository(app.core.store)
        await wait_for(lambda: repo.count() == 1)  # written behind within a second
        udp_port = app.port(Transport.UDP)
        await app.close()

        # Same store, same port (UDP phones keep sending to it).
        settings2 = settings.model_copy(
            update={"sip": settings.sip.model_copy(update={"udp_port": udp_port})}
        )
        app = await start(settings2)
        assert app.registrar is not None
        binding = app.registrar.binding_for(device_guid(app, "7002"))
        assert binding is not None and binding.destination().port == phone.port
        # The upstream registration resumes without the phone re-registering ...
        await wait_for(lambda: upstream_registered(app, "7002"))
        assert kamailio.registers(icp_user("7002")) > before
        assert len(kamailio.contacts(icp_user("7002"))) == 1
        # ... and the UDP phone is reachable: Limen's keepalives reach it.
        await phone.serve(2.5)
        assert phone.options_seen >= 1
        assert app.registrar.binding_for(binding.device_guid) is not None
    finally:
        phone.close()
        await app.close()


async def test_keepalive_misses_unregister_the_phone(tmp_path: Path, kamailio: Kamailio) -> None:
    settings = make_settings(tmp_path, keepalive_misses=2)
    provision(settings, kamailio, options_keepalive="Always", options_interval=1)
    app = await start(settings)
    phone = Phone("7003", set_password("7003"), limen_udp(app))
    try:
        assert app.registrar is not None and app.keepalive is not None
        _, ok = await phone.register()
        assert ok is not None and ok.status == 200
        await wait_for(lambda: upstream_registered(app, "7003"))
        assert len(kamailio.contacts(icp_user("7003"))) == 1
        await phone.serve(3.0)  # answered keepalives keep it registered
        assert phone.options_seen >= 1
        assert app.registrar.binding_for(device_guid(app, "7003")) is not None
        phone.answer_options = False
        await phone.serve(3.5)
        await wait_for(lambda: app.registrar.binding_for(device_guid(app, "7003")) is None)  # type: ignore[union-attr]
        assert app.keepalive.unregistered == 1
        await wait_for(lambda: kamailio.contacts(icp_user("7003")) == [])
    finally:
        phone.close()
        await app.close()


REGISTER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="REGISTER with digest auth">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[field1] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[field1]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
      Expires: [field3]
      Max-Forwards: 70
      User-Agent: SIPp
      Content-Length: 0
    ]]>
  </send>
  <recv response="401" auth="true" next="auth"/>
  <label id="auth"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[field1] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[field1]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
      [field2]
      Expires: [field3]
      Max-Forwards: 70
      User-Agent: SIPp
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def run_sipp(folder: Path, target: tuple[str, int], users: list[str], expires: int) -> str:
    sipp = require_tool("sipp")
    scenario = folder / "register.xml"
    scenario.write_text(REGISTER_XML)
    csv = folder / f"users-{expires}.csv"
    csv.write_text(
        "SEQUENTIAL\n"
        + "".join(
            f"{u};limen.test;[authentication username={u} password={set_password(u)}];{expires}\n"
            for u in users
        )
    )
    result = subprocess.run(
        [
            sipp,
            "-sf",
            str(scenario),
            f"{target[0]}:{target[1]}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-inf",
            str(csv),
            "-m",
            str(len(users)),
            "-r",
            "100",
            "-l",
            str(len(users)),
            "-nostdin",
            "-timeout",
            "20s",
            "-trace_screen",
            "-screen_file",
            str(folder / f"screen-{expires}.txt"),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
    )
    screen = (folder / f"screen-{expires}.txt").read_text(errors="replace")
    assert result.returncode == 0, screen + result.stderr
    return screen


async def test_many_sipp_phones_register_and_deregister(
    limen: RunningApp, kamailio: Kamailio, tmp_path: Path
) -> None:
    users = USERS[4:14]  # 10 phones (7004-7013)
    assert limen.registrar is not None
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, run_sipp, tmp_path, limen_udp(limen), users, 300)
    assert len(limen.registrar.bindings()) == len(users)
    await wait_for(lambda: all(upstream_registered(limen, u) for u in users))
    aors = kamailio.all_aors()
    assert all(icp_user(u) in aors for u in users)

    await loop.run_in_executor(None, run_sipp, tmp_path, limen_udp(limen), users, 0)
    assert limen.registrar.bindings() == []
    await wait_for(lambda: not any(icp_user(u) in kamailio.all_aors() for u in users))
