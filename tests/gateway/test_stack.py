"""SipStack: the asyncio adapter between the real transport and the transaction layer."""

from __future__ import annotations

import asyncio
import socket

import pytest

from limen.gateway.stack import ClientEvent, SipStack
from limen.sip import Destination, Request, Response, Source, Transport, parse_message
from limen.sip.transaction import (
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionTimeout,
    new_via,
)
from limen.transport import TransportLayer

pytestmark = pytest.mark.timeout(20)


class EchoUser:
    """A TU answering every request 200 and recording what it saw."""

    def __init__(self, stack: SipStack) -> None:
        self.stack = stack
        self.requests: list[Request] = []
        self.acks: list[Request] = []

    def on_request(self, txn: ServerTransaction, request: Request, source: Source) -> None:
        self.requests.append(request)
        self.stack.respond(txn, request.create_response(200, to_tag="limen1"))

    def on_cancel(self, txn, request, source, cancelled) -> None:  # type: ignore[no-untyped-def]
        self.stack.respond(txn, request.create_response(481))

    def on_ack(self, request: Request, source: Source) -> None:
        self.acks.append(request)

    def on_stray_response(self, response: Response, source: Source) -> None:
        pass


def options(port: int, branch: str = "z9hG4bKstack1") -> bytes:
    return (
        f"OPTIONS sip:limen@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\r\n"
        "From: <sip:tester@127.0.0.1>;tag=t1\r\nTo: <sip:limen@127.0.0.1>\r\n"
        "Call-ID: stack-test@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def start_stack(config: TimerConfig | None = None) -> tuple[SipStack, TransportLayer, int]:
    transport = TransportLayer()
    stack = SipStack(transport, TransactionLayer(config))
    transport.on_message = stack.receive
    listener = await transport.listen_udp("127.0.0.1", 0)
    return stack, transport, listener.port


async def test_server_transaction_round_trip_and_retransmission() -> None:
    stack, transport, port = await start_stack()
    user = EchoUser(stack)
    stack.tu = user
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        for _ in range(2):  # the retransmission is absorbed and answered from the txn
            await loop.sock_sendto(client, options(port), ("127.0.0.1", port))
            data = await asyncio.wait_for(loop.sock_recv(client, 65536), 5)
            response = parse_message(data)
            assert isinstance(response, Response) and response.status == 200
            assert response.to_tag == "limen1"
    assert len(user.requests) == 1
    stack.close()
    await transport.close()


async def test_client_transaction_gets_response_and_timeout() -> None:
    stack, transport, port = await start_stack(TimerConfig(t1=0.01, t2=0.04))
    loop = asyncio.get_running_loop()
    events: list[ClientEvent] = []
    done = asyncio.Event()

    def on_event(event: ClientEvent) -> None:
        events.append(event)
        done.set()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        server_port = server.getsockname()[1]
        via = new_via(Transport.UDP, "127.0.0.1", port)
        request = Request(
            "OPTIONS",
            f"sip:pbx@127.0.0.1:{server_port}",
            [
                ("Via", via),
                ("From", "<sip:limen@127.0.0.1>;tag=x"),
                ("To", f"<sip:pbx@127.0.0.1:{server_port}>"),
                ("Call-ID", "client-test"),
                ("CSeq", "1 OPTIONS"),
                ("Max-Forwards", "70"),
            ],
        )
        dest = Destination(Transport.UDP, "127.0.0.1", server_port)
        stack.send_request(request, dest, on_event)
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(server, 65536), 5)
        received = parse_message(data)
        assert isinstance(received, Request)
        answer = received.create_response(200, to_tag="pbx")
        await loop.sock_sendto(server, bytes(answer), addr)
        await asyncio.wait_for(done.wait(), 5)
        assert isinstance(events[0], ResponseReceived) and events[0].response.status == 200

        # Nobody answers this one: Timer F (64*T1 = 0.64 s here) ends it with a timeout.
        done.clear()
        events.clear()
        request2 = request.copy()
        request2.set("Via", new_via(Transport.UDP, "127.0.0.1", port))
        request2.set("CSeq", "2 OPTIONS")
        stack.send_request(request2, dest, on_event)
        await asyncio.wait_for(done.wait(), 5)
        assert isinstance(events[0], TransactionTimeout)
    stack.close()
    await transport.close()


async def test_handler_error_is_contained() -> None:
    stack, transport, port = await start_stack()

    class Broken(EchoUser):
        def on_request(self, txn: ServerTransaction, request: Request, source: Source) -> None:
            raise RuntimeError("boom")

    stack.tu = Broken(stack)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        await loop.sock_sendto(client, options(port, "z9hG4bKbroken"), ("127.0.0.1", port))
        for _ in range(100):
            if stack.handler_errors:
                break
            await asyncio.sleep(0.01)
    assert stack.handler_errors == 1
    stack.close()
    await transport.close()
