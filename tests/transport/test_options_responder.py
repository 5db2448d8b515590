"""The day-one responder, driven without sockets: requests in, (bytes, destination) out."""

from __future__ import annotations

import pytest
from siptest_client import request

from limen.gateway.options import ALLOWED_METHODS, OptionsResponder, allow_header
from limen.sip import Request, Response, parse_message
from limen.sip.addressing import Destination, Source, Transport

UDP = Source(Transport.UDP, ("0.0.0.0", 5060), ("203.0.113.9", 41000))
TLS = Source(Transport.TLS, ("0.0.0.0", 5061), ("203.0.113.9", 41001), 7)


class Sent:
    def __init__(self) -> None:
        self.items: list[tuple[Response, Destination]] = []

    def __call__(self, data: bytes, dest: Destination) -> None:
        message = parse_message(data)
        assert isinstance(message, Response)
        self.items.append((message, dest))


def answer(
    data: bytes, source: Source = UDP, **kwargs: object
) -> tuple[Response, Destination] | None:
    sent = Sent()
    responder = OptionsResponder(sent, server_header="Limen", **kwargs)  # type: ignore[arg-type]
    req = parse_message(data)
    assert isinstance(req, Request)
    responder(req, source)
    assert len(sent.items) <= 1
    return sent.items[0] if sent.items else None


def test_options_200_with_capabilities() -> None:
    result = answer(request("OPTIONS"))
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


def test_server_header_can_be_hidden() -> None:
    sent = Sent()
    req = parse_message(request("OPTIONS"))
    assert isinstance(req, Request)
    OptionsResponder(sent, server_header="")(req, UDP)
    assert not sent.items[0][0].has("Server")


def test_ack_gets_nothing() -> None:
    assert answer(request("ACK")) is None


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("INVITE", 501),
        ("REGISTER", 501),
        ("SUBSCRIBE", 501),
        ("MESSAGE", 501),
        ("BYE", 481),
        ("CANCEL", 481),
        ("PUBLISH", 405),
        ("FOOBAR", 501),
    ],
)
def test_methods_we_cannot_handle_yet(method: str, status: int) -> None:
    result = answer(request(method))
    assert result is not None
    response = result[0]
    assert response.status == status
    if status in (405, 501):
        assert response.get("Allow") == allow_header(ALLOWED_METHODS)


def test_register_not_allowed_gets_405() -> None:
    result = answer(request("REGISTER"), allowed_methods=ALLOWED_METHODS - {"REGISTER"})
    assert result is not None and result[0].status == 405
    assert "REGISTER" not in result[0].allow


def test_validation_comes_first() -> None:
    result = answer(request("OPTIONS", extra="Require: 100rel"))
    assert result is not None
    assert result[0].status == 420 and result[0].get("Unsupported") == "100rel"
    result = answer(request("OPTIONS", ruri="im:limen@example.com"))
    assert result is not None and result[0].status == 416


def test_stream_response_goes_back_on_the_connection() -> None:
    result = answer(request("OPTIONS", transport="TLS"), TLS)
    assert result is not None
    assert result[1] == Destination(Transport.TLS, "203.0.113.9", 5099, 7, TLS.local)
    assert result[1].conn_id == 7  # the port is only the fallback if #7 has closed


def test_non_symmetric_udp_uses_the_via_port_without_rport() -> None:
    result = answer(request("OPTIONS", via_port=5070, rport=False), symmetric=False)
    assert result is not None
    response, dest = result
    assert dest == Destination(Transport.UDP, "203.0.113.9", 5070, local=UDP.local)
    assert response.top_via.received == "203.0.113.9" and not response.top_via.has_rport


def test_several_vias_keep_their_order() -> None:
    data = request("OPTIONS", extra="Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKsecond")
    # The extra Via follows the first one among the headers.
    result = answer(data)
    assert result is not None
    vias = result[0].via
    assert [v.branch for v in vias][1] == "z9hG4bKsecond"
    assert vias[0].received == "203.0.113.9"


def test_symmetric_without_rport_answers_the_source_port() -> None:
    result = answer(request("OPTIONS", via_port=5070, rport=False))
    assert result is not None
    response, dest = result
    assert (dest.host, dest.port) == ("203.0.113.9", 41000)
    assert not response.top_via.has_rport  # nothing asked, nothing written


def test_ipv6_source() -> None:
    source = Source(Transport.UDP, ("::", 5060), ("2001:db8::7", 41000))
    result = answer(request("OPTIONS", via_host="2001:DB8::7", via_port=5060), source)
    assert result is not None
    response, dest = result
    assert response.top_via.received == "2001:db8::7" and response.top_via.rport == 41000
    assert (dest.host, dest.port) == ("2001:db8::7", 41000)
