"""SIP/TLS toward a real Kamailio PBX with per-ICP trust (issue 15).

Three Kamailio instances on loopback addresses, each with TLS listeners:

- ``good`` (127.0.0.2): a certificate for ``pbx.example.test`` from the test CA, and it
  *requires* a client certificate issued by Limen's own CA (mutual TLS);
- ``rogue`` (127.0.0.3): a certificate for the same name from another CA, on two ports;
- ``wrong`` (127.0.0.4): a certificate from the test CA for another name, on two ports.

One ICP per (instance, port) with its own trust. Kamailio logs every request it gets
(``LIMENTEST-RECEIVED <method> <local port>``): a refused PBX never sees one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gw_reg_support import KAMAILIO_CFG, Phone, make_settings, wait_for
from icplink_lab import free_udp_port
from icplink_pki import Pair, leaf, make_ca
from kamailio_lab import Kamailio, launch_kamailio

from limen.app import RunningApp, prepare, start
from limen.sip import Transport
from limen.store import open_store
from limen.store.schemas import DeviceCreate, IcpCreate, IcpUpdate

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

PBX_NAME = "pbx.example.test"


def tls_cfg(pair: Pair, client_ca: Path | None) -> str:
    require = "yes" if client_ca is not None else "no"
    lines = [
        "[server:default]",
        "method = TLSv1.2+",
        f"verify_certificate = {require}",
        f"require_certificate = {require}",
        f"private_key = {pair.key}",
        f"certificate = {pair.cert}",
    ]
    if client_ca is not None:
        lines.append(f"ca_list = {client_ca}")
    return "\n".join(lines) + "\n"


def launch_tls_kamailio(
    folder: Path, host: str, pair: Pair, users: dict[str, str], client_ca: Path | None = None
) -> tuple[Kamailio, list[int]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.cfg").write_text(tls_cfg(pair, client_ca))
    ports = [free_udp_port(host), free_udp_port(host)]
    template = (
        KAMAILIO_CFG.replace(
            "listen=udp:{host}:{port}\n",
            "listen=udp:{host}:{port}\n"
            + "".join(f"listen=tls:{{host}}:{p}\n" for p in ports)
            + "enable_tls=yes\n",
        )
        .replace(
            'loadmodule "auth_db.so"\n',
            'loadmodule "auth_db.so"\nloadmodule "tls.so"\n'
            f'modparam("tls", "config", "{folder / "tls.cfg"}")\n',
        )
        .replace(
            "request_route {{\n",
            'request_route {{\n    xlog("L_NOTICE", "LIMENTEST-RECEIVED $rm $Rp $pr\\n");\n',
        )
    )
    return launch_kamailio(folder, template, users, host=host, domain=PBX_NAME), ports


@dataclass
class Lab:
    folder: Path
    pki_good_ca: Path
    pbx: Pair
    rogue: Pair
    good: Kamailio
    good_ports: list[int]
    rogue_kam: Kamailio
    rogue_ports: list[int]
    wrong: Kamailio
    wrong_ports: list[int]
    limen_ca: Path


USERS = {"7200": "good", "7201": "rogue", "7202": "pinned", "7203": "wrongname", "7204": "wrongpin"}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    settings = make_settings(tmp_path / "limen", tls=True, tls_port=0)
    prepare(settings)  # Limen's CA and its CA-issued SIP certificate (the client cert)
    limen_ca = settings.data_path / "tls" / "ca.pem"
    good_ca = make_ca(tmp_path / "pki", "good")
    other_ca = make_ca(tmp_path / "pki", "other")
    pbx = leaf(good_ca, tmp_path / "pki" / "leaves", PBX_NAME)
    rogue = leaf(other_ca, tmp_path / "pki" / "rogue", PBX_NAME)
    wrong = leaf(good_ca, tmp_path / "pki" / "leaves", "impostor.example.test")
    users = {f"icp{u}": f"pw-{u}" for u in USERS}
    started: list[Kamailio] = []
    try:
        good, good_ports = launch_tls_kamailio(tmp_path / "good", "127.0.0.2", pbx, users, limen_ca)
        started.append(good)
        rogue_kam, rogue_ports = launch_tls_kamailio(tmp_path / "rogue", "127.0.0.3", rogue, users)
        started.append(rogue_kam)
        wrong_kam, wrong_ports = launch_tls_kamailio(tmp_path / "wrong", "127.0.0.4", wrong, users)
        started.append(wrong_kam)
        yield Lab(
            tmp_path,
            good_ca.cert_path,
            pbx,
            rogue,
            good,
            good_ports,
            rogue_kam,
            rogue_ports,
            wrong_kam,
            wrong_ports,
            limen_ca,
        )
    finally:
        for kam in started:
            kam.stop()


@pytest.fixture
async def limen(lab: Lab) -> AsyncIterator[RunningApp]:
    settings = make_settings(lab.folder / "limen", tls=True, tls_port=0)
    store = open_store(settings)
    ca = str(lab.pki_good_ca)

    def icp(name: str, host: str, port: int, **trust: object) -> IcpCreate:
        return IcpCreate.model_validate(
            {
                "name": name,
                "address": host,
                "port": port,
                "transport": "tls",
                "sip_capabilities": ["tls"],
                "domain": PBX_NAME,
                "options_interval": 1,
                **trust,
            }
        )

    try:
        store.icps.create(icp("good", "127.0.0.2", lab.good_ports[0], tls_ca_file=ca))
        store.icps.create(icp("rogue", "127.0.0.3", lab.rogue_ports[0], tls_ca_file=ca))
        store.icps.create(
            icp("pinned", "127.0.0.3", lab.rogue_ports[1], tls_pin_sha256=lab.rogue.fingerprint)
        )
        store.icps.create(icp("wrongname", "127.0.0.4", lab.wrong_ports[0], tls_ca_file=ca))
        store.icps.create(
            icp("wrongpin", "127.0.0.4", lab.wrong_ports[1], tls_pin_sha256=lab.pbx.fingerprint)
        )
        for user, name in USERS.items():
            store.devices.create(
                DeviceCreate(
                    setside_username=user,
                    setside_password=f"set-{user}",
                    icp=name,
                    icpside_username=f"icp{user}",
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


def received_on(kam: Kamailio, port: int) -> list[str]:
    return [
        line
        for line in kam.log().splitlines()
        if "LIMENTEST-RECEIVED" in line and f" {port} " in line + " "
    ]


def link_state(app: RunningApp, name: str) -> str:
    assert app.links is not None
    return next(s["state"] for s in app.links.snapshot() if s["icp"] == name)


async def test_per_icp_trust_against_kamailio(limen: RunningApp, lab: Lab) -> None:
    phones = []
    for user in USERS:
        phone = Phone(user, f"set-{user}", ("127.0.0.1", limen.port(Transport.UDP)))
        _, ok = await phone.register(expires=300)
        assert ok is not None and ok.status == 200
        phones.append(phone)
    # Trusted CA + expected name + Limen's client certificate (Kamailio requires one).
    await wait_for(lambda: bool(lab.good.contacts("icp7200")), 10)
    # A pin replaces the chain check: the other CA's certificate is accepted.
    await wait_for(lambda: bool(lab.rogue_kam.contacts("icp7202")), 10)
    for name in ("good", "pinned"):
        await wait_for(lambda name=name: link_state(limen, name) == "up", 5)
    for name in ("rogue", "wrongname", "wrongpin"):
        await wait_for(lambda name=name: link_state(limen, name) == "down", 5)
    await asyncio.sleep(1.5)  # more pings and REGISTER retries would have arrived by now
    # Refused: not one request reached the PBX on those ports.
    assert received_on(lab.rogue_kam, lab.rogue_ports[0]) == []
    assert received_on(lab.wrong, lab.wrong_ports[0]) == []
    assert received_on(lab.wrong, lab.wrong_ports[1]) == []
    assert not lab.rogue_kam.contacts("icp7201")
    assert not lab.wrong.contacts("icp7203") and not lab.wrong.contacts("icp7204")
    # ... while the accepted ones did get requests (the log check is not vacuous).
    assert received_on(lab.good, lab.good_ports[0])
    assert received_on(lab.rogue_kam, lab.rogue_ports[1])
    assert limen.transport.counters.tls_refused >= 3
    store = limen.core.store
    alarms = [e.message for e in store.events.list(kind="alarm", limit=200)]
    for name in ("rogue", "wrongname", "wrongpin"):
        assert any(f"ICP {name}: TLS connection" in m and "refused" in m for m in alarms), alarms
    # A changed trust drops the connection verified under the old one: with a wrong pin
    # now, the next ping dials again and is refused (a reused connection would pass).
    store.icps.update("pinned", IcpUpdate(tls_pin_sha256=lab.pbx.fingerprint))
    await wait_for(lambda: link_state(limen, "pinned") == "down", 6)
    for phone in phones:
        phone.close()
