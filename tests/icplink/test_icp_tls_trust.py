"""TLS trust per ICP (issue 15) against a real TLS server on loopback: a CA file, the
expected name, a pinned fingerprint, the explicit "don't verify", mutual TLS. A refused
certificate refuses the connection, is reported, and not one byte of SIP reaches the
peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from icplink_pki import Pair, leaf, make_ca

from limen.config import ProvisioningSettings, Settings
from limen.provisioning.upstream import UpstreamError, connect, upstream_tls
from limen.sip.addressing import Destination, Transport
from limen.store.schemas import IcpRecord
from limen.transport import TransportError, TransportLayer
from limen.transport.tls import ClientTls, client_tls, icp_client_tls, refusing_tls

PBX_NAME = "pbx.example.test"
PAYLOAD = b"OPTIONS sip:pbx.example.test SIP/2.0\r\n\r\n"


@dataclass
class Pki:
    folder: Path
    good_ca: Path
    pbx: Pair  # from the good CA, named PBX_NAME
    wrong_name: Pair  # from the good CA, another name
    rogue: Pair  # from another CA, named PBX_NAME
    client: Pair  # Limen's client certificate, from the good CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    good = make_ca(folder, "good")
    other = make_ca(folder, "other")
    return Pki(
        folder=folder,
        good_ca=good.cert_path,
        pbx=leaf(good, folder / "leaves", PBX_NAME),
        wrong_name=leaf(good, folder / "leaves", "impostor.example.test"),
        rogue=leaf(other, folder / "rogue", PBX_NAME),
        client=leaf(good, folder / "client", "limen.example.test"),
    )


@dataclass
class TlsPeer:
    """A TLS server that records every application byte it receives."""

    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    accepted: int = 0
    client_subjects: list[object] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tls_peer(pair: Pair, *, require_client_ca: Path | None = None) -> AsyncIterator[TlsPeer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pair.cert), str(pair.key))
    if require_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(require_client_ca))
    peer = TlsPeer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.accepted += 1
        obj = writer.get_extra_info("ssl_object")
        if obj is not None:
            peer.client_subjects.append(obj.getpeercert())
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                peer.received += data
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def dial(trust: ClientTls, peer: TlsPeer) -> tuple[TransportLayer, list[str]]:
    """Send PAYLOAD over Limen's transport layer with ``trust`` for the peer."""
    layer = TransportLayer()
    refused: list[str] = []
    layer.on_tls_refused = lambda dest, reason: refused.append(reason)
    layer.tls_peers[("127.0.0.1", peer.port)] = trust
    dest = Destination(Transport.TLS, "127.0.0.1", peer.port)
    try:
        await layer.send_async(PAYLOAD, dest)
        await asyncio.sleep(0.2)
    finally:
        await layer.close()
    await asyncio.sleep(0.05)
    return layer, refused


async def test_trusted_ca_and_name_connects(pki: Pki) -> None:
    async with tls_peer(pki.pbx) as peer:
        await dial(client_tls(cafile=str(pki.good_ca), server_name=PBX_NAME), peer)
    assert bytes(peer.received) == PAYLOAD


@pytest.mark.parametrize("which", ["rogue", "wrong_name"])
async def test_untrusted_certificate_refused_and_nothing_sent(pki: Pki, which: str) -> None:
    pair = pki.rogue if which == "rogue" else pki.wrong_name
    async with tls_peer(pair) as peer:
        with pytest.raises(TransportError, match="certificate refused"):
            await dial(client_tls(cafile=str(pki.good_ca), server_name=PBX_NAME), peer)
    assert peer.received == b""
    assert peer.accepted == 0  # the handshake never completed on the server either


async def test_refusal_is_reported(pki: Pki) -> None:
    async with tls_peer(pki.rogue) as peer:
        layer = TransportLayer()
        refused: list[tuple[Destination, str]] = []
        layer.on_tls_refused = lambda dest, reason: refused.append((dest, reason))
        layer.tls_peers[("127.0.0.1", peer.port)] = client_tls(
            cafile=str(pki.good_ca), server_name=PBX_NAME
        )
        layer.send(PAYLOAD, Destination(Transport.TLS, "127.0.0.1", peer.port))
        for _ in range(50):
            if refused:
                break
            await asyncio.sleep(0.05)
        await layer.close()
    assert len(refused) == 1 and "certificate refused" in refused[0][1]
    assert layer.counters.tls_refused == 1
    assert peer.received == b""


async def test_pin_connects_without_a_trusted_chain(pki: Pki) -> None:
    async with tls_peer(pki.rogue) as peer:  # a CA we do not trust: only the pin matters
        await dial(client_tls(pin=pki.rogue.fingerprint, server_name=PBX_NAME), peer)
    assert bytes(peer.received) == PAYLOAD


async def test_wrong_pin_refused_and_nothing_sent(pki: Pki) -> None:
    async with tls_peer(pki.rogue) as peer:
        with pytest.raises(TransportError, match="pinned"):
            await dial(client_tls(pin=pki.pbx.fingerprint, server_name=PBX_NAME), peer)
    assert peer.received == b""


async def test_ca_and_pin_must_both_hold(pki: Pki) -> None:
    async with tls_peer(pki.pbx) as peer:
        trust = client_tls(cafile=str(pki.good_ca), pin=pki.rogue.fingerprint, server_name=PBX_NAME)
        assert trust.mode == "ca+pin"
        with pytest.raises(TransportError, match="pinned"):
            await dial(trust, peer)
    assert peer.received == b""


async def test_no_verify_connects_and_warns(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="limen.transport")
    trust = client_tls(verify=False, server_name=PBX_NAME, label="pbx-lab")
    async with tls_peer(pki.rogue) as peer:
        await dial(trust, peer)
    assert bytes(peer.received) == PAYLOAD
    assert "ICP pbx-lab is NOT verified" in caplog.text


async def test_mutual_tls_presents_limens_certificate(pki: Pki) -> None:
    async with tls_peer(pki.pbx, require_client_ca=pki.good_ca) as peer:
        trust = client_tls(
            cafile=str(pki.good_ca),
            server_name=PBX_NAME,
            client_cert=pki.client.cert,
            client_key=pki.client.key,
        )
        await dial(trust, peer)
    assert bytes(peer.received) == PAYLOAD
    assert peer.client_subjects and peer.client_subjects[0]


async def test_mutual_tls_without_a_client_certificate_fails(pki: Pki) -> None:
    async with tls_peer(pki.pbx, require_client_ca=pki.good_ca) as peer:
        trust = client_tls(cafile=str(pki.good_ca), server_name=PBX_NAME)
        with contextlib.suppress(TransportError):
            await dial(trust, peer)
    assert peer.received == b""


def _icp(**fields: object) -> IcpRecord:
    base: dict[str, object] = {
        "guid": "00000000-0000-0000-0000-000000000001",
        "name": "pbx",
        "address": PBX_NAME,
        "port": 5061,
        "transport": "tls",
        "type": "MiVoice 5000",
        "sip_capabilities": ["tls"],
        "link_enabled": True,
        "xml_listen_port": 4445,
        "xml_destination_port": 4445,
        "tls": True,
        "hashes": [],
        "domain": "",
        "description": "",
        "device_count": 0,
    }
    base.update(fields)
    return IcpRecord.model_validate(base)


def test_icp_trust_falls_back_to_the_global_settings(tmp_path: Path, pki: Pki) -> None:
    settings = Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        provisioning=ProvisioningSettings(upstream_ca_file=str(pki.good_ca)),
    )
    assert icp_client_tls(settings, _icp()).mode == "ca"
    assert icp_client_tls(settings, _icp(tls_pin_sha256=pki.pbx.fingerprint)).mode == "ca+pin"
    assert icp_client_tls(settings, _icp(tls_verify=False)).mode == "none"
    plain = Settings(config_path=str(tmp_path / "l.toml"), data_dir=str(tmp_path / "d"))
    assert icp_client_tls(plain, _icp()).mode == "system"
    named = icp_client_tls(plain, _icp(tls_server_name="sip.example.test"))
    assert named.server_name == "sip.example.test"
    assert icp_client_tls(plain, _icp(domain="corp.test")).server_name == "corp.test"
    assert icp_client_tls(plain, _icp()).server_name == PBX_NAME


async def test_provisioning_link_uses_the_icps_trust(tmp_path: Path, pki: Pki) -> None:
    plain = Settings(config_path=str(tmp_path / "l.toml"), data_dir=str(tmp_path / "d"))
    good = upstream_tls(
        plain, _icp(address="127.0.0.1", tls_server_name=PBX_NAME, tls_ca_file=str(pki.good_ca))
    )
    wrong_pin = upstream_tls(plain, _icp(address="127.0.0.1", tls_pin_sha256=pki.pbx.fingerprint))
    async with tls_peer(pki.pbx) as peer:
        _, writer = await connect("127.0.0.1", peer.port, good, 5.0)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.1)
    assert peer.received.startswith(b"GET /")
    async with tls_peer(pki.rogue) as peer:
        with pytest.raises(UpstreamError, match="pinned"):
            await connect("127.0.0.1", peer.port, wrong_pin, 5.0)
    assert peer.received == b""


async def test_refusing_trust_sends_nothing(pki: Pki) -> None:
    async with tls_peer(pki.pbx) as peer:
        with pytest.raises(TransportError, match="unusable"):
            await dial(refusing_tls("TLS settings unusable: no CA file"), peer)
    assert peer.received == b""
