"""limen.app: prepare() and start() in-process, and the transport under uvloop."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from siptest_client import (
    StreamClient,
    UdpClient,
    insecure_client_context,
    make_settings,
    request,
)

from limen.app import prepare, start
from limen.sip.addressing import Transport

pytestmark = pytest.mark.timeout(30)


def test_prepare_creates_data_folder_and_certificate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings = settings.model_copy(update={"public_fqdn": "limen.example.net"})
    lines = prepare(settings)
    assert any("created data folder" in line for line in lines)
    # Issued by Limen's own CA (limen.certs.ensure_certificates), not self-signed.
    assert any(line.startswith("issued SIP/TLS certificate") for line in lines)
    cert_path = settings.data_path / "tls" / "sip.pem"
    key_path = settings.data_path / "tls" / "sip.key"
    assert key_path.stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "limen.example.net" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca = x509.load_pem_x509_certificate((settings.data_path / "tls" / "ca.pem").read_bytes())
    assert cert.issuer == ca.subject != cert.subject
    before = cert_path.read_bytes()
    again = prepare(settings)
    assert not any("generated" in line or "issued" in line for line in again)
    assert cert_path.read_bytes() == before


def test_prepare_with_configured_certificate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tls_cert="missing.pem", tls_key="missing.key")
    with pytest.raises(FileNotFoundError):
        prepare(settings)
    no_tls = make_settings(tmp_path, tls=False)
    prepare(no_tls)
    assert not (no_tls.data_path / "tls" / "sip.pem").exists()  # no SIP/TLS, no SIP cert


async def test_start_reports_bound_ports(tmp_path: Path) -> None:
    app = await start(make_settings(tmp_path, tls=False, bind6="::1"))
    try:
        assert {listener.transport for listener in app.listeners} == {Transport.UDP, Transport.TCP}
        assert app.port(Transport.UDP) > 0 and app.port(Transport.TCP, socket.AF_INET6) > 0
        with pytest.raises(LookupError):
            app.port(Transport.TLS)
        assert app.describe()[0] == f"listening on udp 127.0.0.1:{app.port(Transport.UDP)}"
        assert any(line.startswith("listening on tcp [::1]:") for line in app.describe())
    finally:
        await app.close()
    # Closed means closed: the port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", app.port(Transport.UDP)))


async def test_start_serves_the_admin_api_next_to_sip(tmp_path: Path) -> None:
    """`limen serve` runs SIP and the HTTPS admin API side by side, over one store."""
    import httpx

    from limen.config import ApiSettings

    settings = make_settings(tmp_path, tls=False).model_copy(
        update={"api": ApiSettings(bind="127.0.0.1", port=0)}
    )
    prepare(settings)
    app = await start(settings)
    try:
        assert app.api is not None
        url = f"https://127.0.0.1:{app.api.port}/mslrest/mbg/v1/icps/"
        async with httpx.AsyncClient(verify=False) as client:
            unauthenticated = await client.get(url)
        assert unauthenticated.status_code == 401
        assert any(line.startswith("admin API on https://") for line in app.describe())
    finally:
        await app.close()


async def test_admin_api_and_provisioning_have_their_own_loop(tmp_path: Path) -> None:
    """Issue 9: one slow request must not stall everything. The API and the provisioning
    proxy run on their own loop and thread, so a stalled SIP loop does not stop them (and
    a slow API request does not stall SIP); gateway metrics are still read on SIP's loop."""
    import threading
    import time

    import httpx

    from limen.config import ApiSettings, ProvisioningSettings

    settings = make_settings(tmp_path, tls=False).model_copy(
        update={
            "api": ApiSettings(bind="127.0.0.1", port=0),
            "provisioning": ProvisioningSettings(bind="127.0.0.1", port=0),
        }
    )
    prepare(settings)
    app = await start(settings)
    try:
        assert app.api is not None and app.provisioning is not None
        assert app.services is not None
        assert app.services.loop is not asyncio.get_running_loop()
        api_url = f"https://127.0.0.1:{app.api.port}/mslrest/mbg/v1/icps/"
        prov_url = f"https://127.0.0.1:{app.provisioning.port}/00000000000000000000000000000000/x"
        answers: dict[str, tuple[int, float]] = {}

        def fetch() -> None:
            with httpx.Client(verify=False, timeout=5) as client:
                for name, url in (("api", api_url), ("provisioning", prov_url)):
                    begin = time.monotonic()
                    answers[name] = (client.get(url).status_code, time.monotonic() - begin)

        client = threading.Thread(target=fetch)
        client.start()
        time.sleep(1.5)  # the SIP loop is stalled for 1.5 s, on purpose
        client.join(timeout=5)
        assert answers["api"][0] == 401 and answers["provisioning"][0] == 404, answers
        assert answers["api"][1] < 1.0 and answers["provisioning"][1] < 1.0, answers
        # Metrics read from the API's thread are computed on the SIP loop.
        sample = await asyncio.to_thread(app.core.metrics.current)
        assert sample.active_calls == 0
    finally:
        await app.close()


async def test_start_fails_cleanly_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await start(make_settings(tmp_path, udp_port=port))


def test_under_uvloop(tmp_path: Path) -> None:
    """The same round trips on the loop `limen serve` uses."""

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        app = await start(make_settings(tmp_path, bind6="::1"))
        try:
            udp = UdpClient(socket.AF_INET6)
            try:
                address = ("::1", app.port(Transport.UDP, socket.AF_INET6))
                # A ping names no user (one that does is challenged like any request).
                ping = request("OPTIONS", ruri="sip:[::1]")
                assert (await udp.exchange(ping, address)).status == 200
            finally:
                udp.close()
            context = insecure_client_context()
            tls = await StreamClient.open("127.0.0.1", app.port(Transport.TLS), tls=context)
            try:
                ping = request("OPTIONS", transport="TLS", ruri="sip:127.0.0.1")
                await tls.send(b"\r\n\r\n" + ping)
                assert await tls.reader.readexactly(2) == b"\r\n"
                assert (await tls.response()).status == 200
            finally:
                await tls.close()
            tcp = await StreamClient.open("127.0.0.1", app.port(Transport.TCP))
            try:
                await tcp.send(b"OPTIONS sip:x SIP/2.0\r\nl: -1\r\n\r\n")
                assert await tcp.closed_by_peer()
            finally:
                await tcp.close()
            old = insecure_client_context()
            old.maximum_version = ssl.TLSVersion.TLSv1_2
            tls12 = await StreamClient.open("127.0.0.1", app.port(Transport.TLS), tls=old)
            try:
                # INVITE from an unknown phone: the call controller's set-side challenge (407).
                assert (await tls12.exchange(request("INVITE", transport="TLS"))).status == 407
                cipher = tls12.writer.get_extra_info("cipher")[0]
            finally:
                await tls12.close()
            assert "ECDHE" in cipher and ("GCM" in cipher or "CHACHA20" in cipher)
        finally:
            await app.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
