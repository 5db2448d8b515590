"""SIP over UDP against Limen in-process (real sockets on 127.0.0.1 and ::1)."""

from __future__ import annotations

import socket

import pytest
from siptest_client import StartLimen, UdpClient, request

from limen.app import RunningApp
from limen.sip.addressing import Transport

pytestmark = pytest.mark.timeout(30)


def addr(app: RunningApp, family: socket.AddressFamily = socket.AF_INET) -> tuple[str, int]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return (host, app.port(Transport.UDP, family))


async def test_options_200(limen: RunningApp) -> None:
    client = UdpClient()
    try:
        response = await client.exchange(request("OPTIONS"), addr(limen))
    finally:
        client.close()
    assert response.status == 200
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"} <= set(response.allow)
    assert response.get("Accept") == "application/sdp"
    assert response.has("Supported")
    assert response.get("Server") == "Limen"
    assert response.call_id.startswith("call-")


async def test_invite_407_and_unknown_method_501_with_allow(limen: RunningApp) -> None:
    client = UdpClient()
    try:
        invite = await client.exchange(request("INVITE"), addr(limen))
        unknown = await client.exchange(request("FROBNICATE"), addr(limen))
    finally:
        client.close()
    assert invite.status == 407  # the call controller challenges INVITE (set side)
    assert unknown.status == 501
    assert "INVITE" in unknown.allow


async def test_response_goes_to_the_source_port_with_rport(limen: RunningApp) -> None:
    """Sent from one port, Via naming another: the answer comes back to the source."""
    client = UdpClient()
    try:
        data = request("OPTIONS", via_host="192.0.2.33", via_port=client.port + 1, rport=True)
        response = await client.exchange(data, addr(limen))
        # Without rport too: Limen answers symmetrically (force_rport behaviour).
        plain = await client.exchange(
            request("OPTIONS", via_port=client.port + 1, rport=False), addr(limen)
        )
    finally:
        client.close()
    assert response.status == 200
    assert response.top_via.rport == client.port
    assert response.top_via.received == "127.0.0.1"
    assert plain.status == 200 and not plain.top_via.has_rport


async def test_ipv6(limen: RunningApp) -> None:
    client = UdpClient(socket.AF_INET6)
    try:
        data = request("OPTIONS", via_host="::1", via_port=client.port)
        response = await client.exchange(data, addr(limen, socket.AF_INET6))
    finally:
        client.close()
    assert response.status == 200
    assert response.top_via.host == "[::1]"
    assert response.top_via.rport == client.port


async def test_crlf_keepalive_datagrams_are_ignored(limen: RunningApp) -> None:
    client = UdpClient()
    try:
        await client.send(b"\r\n\r\n", addr(limen))
        await client.send(b"\r\n", addr(limen))
        # The first thing to come back is the answer to this probe: nothing for the CRLFs.
        response = await client.exchange(request("OPTIONS"), addr(limen))
    finally:
        client.close()
    assert response.status == 200
    assert limen.transport.counters.keepalives_in == 2


async def test_oversize_datagram_dropped(start_limen: StartLimen) -> None:
    app = await start_limen(max_message_size=2048, tcp=False, tls=False)
    client = UdpClient()
    try:
        big = request("OPTIONS", extra="X-Padding: " + "a" * 3000)
        await client.send(big, addr(app))
        response = await client.exchange(request("OPTIONS"), addr(app))
    finally:
        client.close()
    assert response.status == 200
    assert app.transport.counters.oversize_dropped == 1
    assert app.transport.counters.messages_in == 1


async def test_too_many_headers_513(start_limen: StartLimen) -> None:
    app = await start_limen(max_headers=20, tcp=False, tls=False)
    client = UdpClient()
    try:
        many = request("OPTIONS", extra="\r\n".join(f"X-H{i}: {i}" for i in range(30)))
        response = await client.exchange(many, addr(app))
        ok = await client.exchange(request("OPTIONS"), addr(app))
    finally:
        client.close()
    assert response.status == 513
    assert ok.status == 200


async def test_garbage_and_bad_responses_are_dropped(limen: RunningApp) -> None:
    client = UdpClient()
    try:
        await client.send(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), addr(limen))
        await client.send(b"SIP/2.0 200 OK\r\nVia: broken\r\n\r\n", addr(limen))
        await client.send(
            b"SIP/2.0 200 OK\r\n" + request("OPTIONS").split(b"\r\n", 1)[1], addr(limen)
        )
        response = await client.exchange(request("OPTIONS"), addr(limen))
    finally:
        client.close()
    assert response.status == 200
    counters = limen.transport.counters
    assert counters.responses_dropped == 1  # the broken one; the valid one is a message
    assert counters.parse_errors == 1
    assert counters.messages_in == 2


async def test_handler_exception_does_not_kill_the_listener(limen: RunningApp) -> None:
    original = limen.transport.on_message
    calls = 0

    def exploding(message: object, source: object) -> None:
        nonlocal calls
        calls += 1
        limen.transport.on_message = original  # the next message is handled normally
        raise RuntimeError("boom")

    limen.transport.on_message = exploding  # type: ignore[assignment]
    client = UdpClient()
    try:
        await client.send(request("OPTIONS"), addr(limen))
        response = await client.exchange(request("OPTIONS"), addr(limen))
    finally:
        client.close()
    assert calls == 1
    assert response.status == 200
    assert limen.transport.counters.handler_errors == 1


async def test_counters(limen: RunningApp) -> None:
    client = UdpClient()
    try:
        await client.exchange(request("OPTIONS"), addr(limen))
        await client.send(
            b"OPTIONS sip:x SIP/7.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\n\r\n", addr(limen)
        )
        assert b" 505 " in await client.recv()
    finally:
        client.close()
    counters = limen.transport.counters.snapshot()
    assert counters["messages_in"] == 1
    assert counters["messages_out"] == 2
    assert counters["error_responses"] == 1 and counters["parse_errors"] == 1
    assert counters["bytes_in"] > 0 and counters["bytes_out"] > 0
