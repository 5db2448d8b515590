"""The gateway's own answers (no registrar, no call controller): OPTIONS 200 with its
capabilities, refusals in RFC 3261 §8.2 order, responses routed per §18.2.2 / RFC 3581.
Driven through the real SipStack and transaction layer; only the socket is replaced by a
list that records (response, destination)."""

from __future__ import annotations

import asyncio
import functools
import tempfile
from pathlib import Path

import pytest
from siptest_client import make_settings, request

from limen.gateway.context import Directory, GatewayContext, LocalAddresses
from limen.gateway.gateway import Gateway
from limen.gateway.media import PassthroughMedia
from limen.gateway.options import ALLOWED_METHODS, allow_header
from limen.gateway.stack import SipStack
from limen.sip import Request, Response, parse_message
from limen.sip.addressing import Destination, Source, Transport
from limen.sip.transaction import TransactionLayer, response_destination

UDP = Source(Transport.UDP, ("0.0.0.0", 5060), ("203.0.113.9", 41000))
TLS = Source(Transport.TLS, ("0.0.0.0", 5061), ("203.0.113.9", 41001), 7)


class Sent:
    def __init__(self) -> None:
        self.items: list[tuple[Response, Destination]] = []

    def send(self, data: bytes, dest: Destination) -> None:
        message = parse_message(data)
        assert isinstance(message, Response)
        self.items.append((message, dest))


async def answer(
    data: bytes, source: Source = UDP, *, server_header: str = "Limen", symmetric: bool = True
) -> tuple[Response, Destination] | None:
    """The final response the gateway sends for ``data`` (100 Trying skipped), if any."""
    sent = Sent()
    layer = TransactionLayer(
        response_destination=functools.partial(response_destination, force_rport=symmetric)
    )
    stack = SipStack(sent, layer, loop=asyncio.get_running_loop())
    settings = make_settings(Path(tempfile.gettempdir()))
    settings.sip.server_header = server_header
    ctx = GatewayContext(
        settings=settings,
        stack=stack,
        directory=Directory(),
        addresses=LocalAddresses("198.51.100.1", "10.0.0.1"),
        media=PassthroughMedia(),
    )
    stack.tu = Gateway(ctx)
    request_ = parse_message(data)
    assert isinstance(request_, Request)
    stack.receive(request_, source)
    stack.close()
    finals = [(r, d) for r, d in sent.items if r.status >= 200]
    assert len(finals) <= 1
    return finals[0] if finals else None


async def test_options_200_with_capabilities() -> None:
    result = await answer(request("OPTIONS"))
    assert result is not None
    response, dest = result
    assert response.status == 200
    assert "INVITE" in response.allow and "OPTIONS" in response.allow
    assert "PUBLISH" not in response.allow
    assert response.get("Accept") == "application/sdp"
    assert response.has("Supported")
    assert response.get("Accept-Language") == "en"
    assert response.get("Server") == "Limen"
    assert response.to_tag  # RFC 3261 §8.2.6.2
    assert response.top_via.rport == 41000
    assert response.top_via.received == "203.0.113.9"
    assert dest == Destination(Transport.UDP, "203.0.113.9", 41000, local=UDP.local)


async def test_server_header_can_be_hidden() -> None:
    result = await answer(request("OPTIONS"), server_header="")
    assert result is not None and not result[0].has("Server")


async def test_ack_gets_nothing() -> None:
    assert await answer(request("ACK")) is None


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("INVITE", 501),  # no call controller in this gateway
        ("SUBSCRIBE", 501),
        ("MESSAGE", 501),
        ("BYE", 481),
        ("PUBLISH", 405),
        ("FOOBAR", 501),
    ],
)
async def test_methods_without_a_handler(method: str, status: int) -> None:
    # A well-formed SUBSCRIBE (RFC 6665 §4.1.1, §8.2.1) reaches the missing handler.
    extra = "Event: presence\r\nContact: <sip:t@192.0.2.1>" if method == "SUBSCRIBE" else ""
    result = await answer(request(method, extra=extra))
    assert result is not None
    response = result[0]
    assert response.status == status
    if status in (405, 501):
        assert response.get("Allow") == allow_header(ALLOWED_METHODS)


async def test_validation_comes_first() -> None:
    result = await answer(request("OPTIONS", extra="Require: 100rel"))
    assert result is not None
    assert result[0].status == 420 and result[0].get("Unsupported") == "100rel"
    result = await answer(request("OPTIONS", ruri="im:limen@example.com"))
    assert result is not None and result[0].status == 416


async def test_stream_response_goes_back_on_the_connection() -> None:
    result = await answer(request("OPTIONS", transport="TLS"), TLS)
    assert result is not None
    assert result[1] == Destination(Transport.TLS, "203.0.113.9", 5099, 7, TLS.local)
    assert result[1].conn_id == 7  # the port is only the fallback if #7 has closed


async def test_non_symmetric_udp_uses_the_via_port_without_rport() -> None:
    result = await answer(request("OPTIONS", via_port=5070, rport=False), symmetric=False)
    assert result is not None
    response, dest = result
    assert dest == Destination(Transport.UDP, "203.0.113.9", 5070, local=UDP.local)
    assert response.top_via.received == "203.0.113.9" and not response.top_via.has_rport


async def test_several_vias_keep_their_order() -> None:
    data = request("OPTIONS", extra="Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKsecond")
    result = await answer(data)
    assert result is not None
    vias = result[0].via
    assert [v.branch for v in vias][1] == "z9hG4bKsecond"
    assert vias[0].received == "203.0.113.9"


async def test_symmetric_without_rport_answers_the_source_port() -> None:
    result = await answer(request("OPTIONS", via_port=5070, rport=False))
    assert result is not None
    response, dest = result
    assert (dest.host, dest.port) == ("203.0.113.9", 41000)
    assert not response.top_via.has_rport  # nothing asked, nothing written


async def test_ipv6_source() -> None:
    source = Source(Transport.UDP, ("::", 5060), ("2001:db8::7", 41000))
    result = await answer(request("OPTIONS", via_host="2001:DB8::7", via_port=5060), source)
    assert result is not None
    response, dest = result
    assert response.top_via.received == "2001:db8::7" and response.top_via.rport == 41000
    assert (dest.host, dest.port) == ("2001:db8::7", 41000)
