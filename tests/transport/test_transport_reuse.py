"""The connection table in use: replies over inbound connections, outbound dialling, reuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from siptest_client import StreamClient, UdpClient, insecure_client_context, request

from limen.certs import ensure_self_signed
from limen.sip import Request, Response
from limen.sip.addressing import Destination, Source, Transport
from limen.transport import Limits, TransportError, TransportLayer, server_context

pytestmark = pytest.mark.timeout(30)


class Inbox:
    """An on_message that keeps what arrives and lets a test wait for it."""

    def __init__(self) -> None:
        self.items: list[tuple[Request | Response, Source]] = []
        self._event = asyncio.Event()

    def __call__(self, message: Request | Response, source: Source) -> None:
        self.items.append((message, source))
        self._event.set()

    async def wait(self, count: int = 1) -> list[tuple[Request | Response, Source]]:
        async with asyncio.timeout(3):
            while len(self.items) < count:
                self._event.clear()
                await self._event.wait()
        return self.items


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def layer(inbox: Inbox) -> AsyncIterator[TransportLayer]:
    layer = TransportLayer(inbox, limits=Limits(idle_timeout=30))
    yield layer
    await layer.close()


async def test_request_goes_over_the_inbound_connection(
    layer: TransportLayer, inbox: Inbox
) -> None:
    listener = await layer.listen_tcp("127.0.0.1", 0)
    client = await StreamClient.open("127.0.0.1", listener.port)
    try:
        await client.send(request("REGISTER", transport="TCP"))
        [(message, source)] = await inbox.wait()
        assert isinstance(message, Request) and source.conn_id is not None
        assert source.remote == client.local
        assert layer.connection(source.conn_id) is not None
        # A request toward the phone: the Contact's port is useless behind NAT, the conn_id
        # finds the connection the phone registered on.
        notify = request("NOTIFY", transport="TCP")
        layer.send(notify, Destination(Transport.TCP, "127.0.0.1", 9, source.conn_id))
        assert await client.read_message() == notify
        # Without a conn_id, the remote address finds it too.
        options = request("OPTIONS", transport="TCP")
        layer.send(options, Destination(Transport.TCP, *client.local))
        assert await client.read_message() == options
        # Our own keepalive ping; the phone's pong is absorbed.
        conn = layer.connection(source.conn_id)
        assert conn is not None and conn.send_ping()
        assert await asyncio.wait_for(client.reader.readexactly(4), 2) == b"\r\n\r\n"
        await client.send(b"\r\n")
        await client.send(request("OPTIONS", transport="TCP"))
        await inbox.wait(2)
        assert layer.counters.keepalives_in == 1
    finally:
        await client.close()
    assert layer.counters.connections_outbound == 0


async def test_tls_reply_over_the_same_connection(
    layer: TransportLayer, inbox: Inbox, tmp_path: Path
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    ensure_self_signed(cert, key, "limen.test", "127.0.0.1")
    listener = await layer.listen_tls("127.0.0.1", 0, server_context(cert, key))
    client = await StreamClient.open("127.0.0.1", listener.port, tls=insecure_client_context())
    try:
        await client.send(request("OPTIONS", transport="TLS"))
        [(_, source)] = await inbox.wait()
        assert source.transport is Transport.TLS
        reply = b"SIP/2.0 200 OK\r\n" + request("OPTIONS").split(b"\r\n", 1)[1]
        layer.send(reply, Destination.reply_to(source))
        assert await client.read_message() == reply
    finally:
        await client.close()


async def test_outbound_tcp_connection_is_opened_once_and_reused(
    layer: TransportLayer, inbox: Inbox
) -> None:
    accepted: list[asyncio.StreamReader] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)
        # Answer on the same connection: Limen must hand the answer to on_message.
        data = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SIP/2.0 200 OK\r\n" + data.split(b"\r\n", 1)[1])
        await writer.drain()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        dest = Destination(Transport.TCP, "127.0.0.1", port)
        first, second = request("OPTIONS", transport="TCP"), request("OPTIONS", transport="TCP")
        layer.send(first, dest)  # dials in the background
        layer.send(second, dest)  # waits for the same connection
        [(response, source)] = await inbox.wait()
        assert isinstance(response, Response) and response.status == 200
        assert source.remote == ("127.0.0.1", port) and source.conn_id is not None
        conn_id = await layer.send_async(request("OPTIONS", transport="TCP"), dest)
        assert conn_id == source.conn_id
        rest = await accepted[0].readuntil(b"\r\n\r\n")
        assert rest.startswith(b"OPTIONS ")
    finally:
        server.close()
    assert len(accepted) == 1
    assert layer.counters.connections_outbound == 1


async def test_outbound_tls_without_verification(layer: TransportLayer, tmp_path: Path) -> None:
    """An ICP with a self-signed certificate: verification is off by default."""
    cert, key = tmp_path / "icp.pem", tmp_path / "icp.key"
    ensure_self_signed(cert, key, "icp.test", "127.0.0.1")
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await received.put(await reader.readuntil(b"\r\n\r\n"))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_context(cert, key))
    port = server.sockets[0].getsockname()[1]
    try:
        data = request("OPTIONS", transport="TLS")
        conn_id = await layer.send_async(data, Destination(Transport.TLS, "127.0.0.1", port))
        assert conn_id is not None
        assert await asyncio.wait_for(received.get(), 3) == data
    finally:
        server.close()


async def test_outbound_tls_with_verification_refuses_self_signed(tmp_path: Path) -> None:
    from limen.transport import client_context

    cert, key = tmp_path / "icp.pem", tmp_path / "icp.key"
    ensure_self_signed(cert, key, "icp.test", "127.0.0.1")
    server = await asyncio.start_server(
        lambda r, w: None, "127.0.0.1", 0, ssl=server_context(cert, key)
    )
    port = server.sockets[0].getsockname()[1]
    strict = TransportLayer(tls_client_context=client_context(verify=True))
    trusting = TransportLayer(tls_client_context=client_context(verify=True, cafile=str(cert)))
    try:
        with pytest.raises(TransportError):
            await strict.send_async(b"x", Destination(Transport.TLS, "127.0.0.1", port))
        assert strict.counters.handshake_failures == 1
        # Trusting that certificate (its subjectAltName has the IP) works.
        assert await trusting.send_async(b"\r\n\r\n", Destination(Transport.TLS, "127.0.0.1", port))
    finally:
        server.close()
        await strict.close()
        await trusting.close()


async def test_send_failures_are_reported(layer: TransportLayer) -> None:
    failures: list[tuple[Destination, Exception]] = []
    layer.on_send_error = lambda dest, exc: failures.append((dest, exc))
    closed = UdpClient()  # a free port nobody listens on over TCP
    port = closed.port
    closed.close()
    dest = Destination(Transport.TCP, "127.0.0.1", port)
    with pytest.raises(TransportError):
        await layer.send_async(b"x", dest)
    layer.send(b"x", dest)
    layer.send(b"x", Destination(Transport.TCP, "pbx.example.com", 5060))  # no DNS here
    layer.send(b"x", Destination(Transport.UDP, "127.0.0.1", 5060))  # no UDP socket
    async with asyncio.timeout(3):
        while len(failures) < 3:
            await asyncio.sleep(0.01)
    assert {f[0] for f in failures} == {
        dest,
        Destination(Transport.TCP, "pbx.example.com", 5060),
        Destination(Transport.UDP, "127.0.0.1", 5060),
    }
    assert layer.counters.send_errors == 3


async def test_udp_response_leaves_from_the_receiving_socket(layer: TransportLayer) -> None:
    first = await layer.listen_udp("127.0.0.1", 0)
    second = await layer.listen_udp("127.0.0.1", 0)
    client = UdpClient()
    try:
        for listener in (second, first):
            dest = Destination(Transport.UDP, "127.0.0.1", client.port, local=listener.address)
            layer.send(b"SIP/2.0 200 OK\r\n\r\n", dest)
            _data, sender = await asyncio.wait_for(
                asyncio.get_running_loop().sock_recvfrom(client.sock, 100), 2
            )
            assert sender == listener.address
    finally:
        client.close()
