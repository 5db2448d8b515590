"""SIP over TCP and TLS against Limen in-process: framing, keepalives, errors, TLS policy."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from pathlib import Path

import pytest
from siptest_client import StartLimen, StreamClient, insecure_client_context, request, status_of

from limen.app import RunningApp
from limen.sip.addressing import Transport

pytestmark = pytest.mark.timeout(30)

RFC4475 = Path("/work/shared/testdata/rfc4475")


async def tcp(app: RunningApp, family: socket.AddressFamily = socket.AF_INET) -> StreamClient:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return await StreamClient.open(host, app.port(Transport.TCP, family))


async def tls(app: RunningApp, context: ssl.SSLContext | None = None) -> StreamClient:
    return await StreamClient.open(
        "127.0.0.1", app.port(Transport.TLS), tls=context or insecure_client_context()
    )


async def test_tcp_options_invite_unknown(limen: RunningApp) -> None:
    client = await tcp(limen)
    try:
        options = await client.exchange(request("OPTIONS", transport="TCP"))
        invite = await client.exchange(request("INVITE", transport="TCP"))
        unknown = await client.exchange(request("FROBNICATE", transport="TCP"))
    finally:
        await client.close()
    assert options.status == 200
    assert "INVITE" in options.allow and options.get("Accept") == "application/sdp"
    assert options.has("Supported")
    assert invite.status == 407  # the call controller challenges INVITE (set side)
    assert unknown.status == 501 and "INVITE" in unknown.allow
    # The response names the connection's source port (rport) and address.
    assert options.top_via.rport == client.local[1]


async def test_tcp_ipv6(limen: RunningApp) -> None:
    client = await tcp(limen, socket.AF_INET6)
    try:
        response = await client.exchange(request("OPTIONS", transport="TCP", via_host="::1"))
    finally:
        await client.close()
    assert response.status == 200


async def test_tls_options(limen: RunningApp) -> None:
    client = await tls(limen)
    try:
        response = await client.exchange(request("OPTIONS", transport="TLS"))
        version = client.writer.get_extra_info("ssl_object").version()
    finally:
        await client.close()
    assert response.status == 200
    assert "INVITE" in response.allow
    assert version in ("TLSv1.2", "TLSv1.3")


async def test_tcp_byte_by_byte_and_two_in_one_write(limen: RunningApp) -> None:
    client = await tcp(limen)
    try:
        data = request("OPTIONS", transport="TCP")
        for i in range(len(data)):
            await client.send(data[i : i + 1])
        first = await client.response()
        a, b = request("OPTIONS", transport="TCP"), request("INVITE", transport="TCP")
        await client.send(a + b)
        second, third = await client.response(), await client.response()
        if third.status == 100:  # the INVITE server transaction's 100 Trying (§17.2.1)
            third = await client.response()
    finally:
        await client.close()
    assert first.status == 200
    assert (second.status, second.cseq.method) == (200, "OPTIONS")
    assert (third.status, third.cseq.method) == (407, "INVITE")


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
async def test_crlf_ping_pong(limen: RunningApp, secure: bool) -> None:
    client = await (tls(limen) if secure else tcp(limen))
    try:
        await client.send(b"\r\n\r\n")
        pong = await asyncio.wait_for(client.reader.readexactly(2), 2)
        # The connection still carries SIP after keepalives.
        response = await client.exchange(request("OPTIONS", transport="TCP"))
    finally:
        await client.close()
    assert pong == b"\r\n"
    assert response.status == 200


async def test_oversize_message_closes_the_connection(start_limen: StartLimen) -> None:
    app = await start_limen(max_message_size=2048, udp=False, tls=False)
    client = await tcp(app)
    try:
        await client.send(request("OPTIONS", transport="TCP", body=b"x" * 4000))
        response = await client.response()
        closed = await client.closed_by_peer()
    finally:
        await client.close()
    assert response.status == 513
    assert closed


async def test_framing_error_gets_400_and_closes(limen: RunningApp) -> None:
    client = await tcp(limen)
    try:
        await client.send((RFC4475 / "ncl.dat").read_bytes())  # Content-Length: -999
        response = await client.response()
        closed = await client.closed_by_peer()
    finally:
        await client.close()
    assert response.status == 400
    assert closed


async def test_parse_error_keeps_the_connection(limen: RunningApp) -> None:
    """A framed message that fails to parse is answered; the stream stays in sync."""
    client = await tcp(limen)
    try:
        await client.send((RFC4475 / "badinv01.dat").read_bytes())
        bad = await client.read_message()  # copies the broken Via: check it raw
        good = await client.exchange(request("OPTIONS", transport="TCP"))
    finally:
        await client.close()
    assert status_of(bad) == 400
    assert good.status == 200


async def test_max_connections_per_source(start_limen: StartLimen) -> None:
    app = await start_limen(max_connections_per_source=2, udp=False, tls=False)
    first, second = await tcp(app), await tcp(app)
    try:
        assert (await first.exchange(request("OPTIONS", transport="TCP"))).status == 200
        assert (await second.exchange(request("OPTIONS", transport="TCP"))).status == 200
        third = await tcp(app)
        assert await third.closed_by_peer()
        await third.close()
        await first.close()
        assert await first.closed_by_peer()
        # A slot is free again once the server has seen the first one go.
        for _ in range(100):
            if app.transport.connection_count < 2:
                break
            await _tick()
        fourth = await tcp(app)
        assert (await fourth.exchange(request("OPTIONS", transport="TCP"))).status == 200
        await fourth.close()
    finally:
        await second.close()
    assert app.transport.counters.connections_refused == 1


async def test_max_connections_total(start_limen: StartLimen) -> None:
    app = await start_limen(max_connections=1, udp=False)
    first = await tcp(app)
    try:
        assert (await first.exchange(request("OPTIONS", transport="TCP"))).status == 200
        second = await tcp(app)
        assert await second.closed_by_peer()
        await second.close()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            blocked = await tls(app)
            await blocked.exchange(request("OPTIONS", transport="TLS"))
    finally:
        await first.close()
    assert app.transport.counters.connections_refused == 2


async def test_idle_timeout(start_limen: StartLimen) -> None:
    app = await start_limen(idle_timeout=0.5, udp=False, tls=False)
    client = await tcp(app)
    try:
        assert (await client.exchange(request("OPTIONS", transport="TCP"))).status == 200
        began = time.monotonic()
        closed = await client.closed_by_peer(timeout=3.0)
        waited = time.monotonic() - began
    finally:
        await client.close()
    assert closed
    assert 0.3 <= waited < 2.5
    assert app.transport.counters.idle_closed == 1


async def test_tls_handshake_timeout(start_limen: StartLimen) -> None:
    app = await start_limen(handshake_timeout=0.5, udp=False, tcp=False)
    client = await StreamClient.open("127.0.0.1", app.port(Transport.TLS))  # plain TCP
    try:
        began = time.monotonic()
        closed = await client.closed_by_peer(timeout=3.0)
        waited = time.monotonic() - began
    finally:
        await client.close()
    assert closed
    assert 0.3 <= waited < 2.5
    assert app.transport.counters.handshake_failures == 1
    assert app.transport.connection_count == 0


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_1_1_client_refused(limen: RunningApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="limen.transport")
    context = insecure_client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let our client at least try
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client = await tls(limen, context)
        await client.exchange(request("OPTIONS", transport="TLS"))
    for _ in range(100):
        if limen.transport.counters.handshake_failures:
            break
        await _tick()
    assert limen.transport.counters.handshake_failures == 1
    # The server refused the version (not our client giving up).
    assert "unsupported protocol" in caplog.text.lower()


async def test_plaintext_sip_on_the_tls_port_gets_nothing(limen: RunningApp) -> None:
    client = await StreamClient.open("127.0.0.1", limen.port(Transport.TLS))
    try:
        await client.send(request("OPTIONS", transport="TCP"))
        assert await client.closed_by_peer()
    finally:
        await client.close()
    assert limen.transport.counters.messages_in == 0


async def _tick() -> None:
    await asyncio.sleep(0.01)


async def test_stream_counters(limen: RunningApp) -> None:
    client = await tcp(limen)
    try:
        await client.send(b"\r\n\r\n")
        await client.exchange(request("OPTIONS", transport="TCP"))
        await client.send((RFC4475 / "badvers.dat").read_bytes())
        assert b" 505 " in await client.read_message()
    finally:
        await client.close()
    counters = limen.transport.counters
    assert (counters.messages_in, counters.messages_out) == (1, 2)
    assert counters.keepalives_in == 1 and counters.error_responses == 1
    assert counters.connections_accepted == 1
