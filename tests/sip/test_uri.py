"""URIs: SIP/SIPS/tel/opaque, IPv6 references (RFC 3261 §19.1, RFC 5118)."""

from __future__ import annotations

import pytest

from limen.sip import AbsoluteUri, SipParseError, SipUri, TelUri, parse_uri


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sips:1212@gateway.com",
        "sip:alice@192.0.2.4",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:[2001:db8::10]:5070",
        "sip:user@[::ffff:192.0.2.10]",
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value",
        "tel:+1-201-555-0123;phone-context=example.com",
        "mailto:someone@example.com",
        "SIP:Alice@AtLanTa.CoM:05060",
    ],
)
def test_round_trip(text: str) -> None:
    uri = parse_uri(text)
    if text == "SIP:Alice@AtLanTa.CoM:05060":
        assert isinstance(uri, SipUri) and uri.port == 5060 and uri.scheme == "SIP"
        return
    assert str(uri) == text


def test_components() -> None:
    uri = parse_uri("sips:al%69ce:pw@[2001:db8::1]:5061;transport=TLS;lr?X=1")
    assert isinstance(uri, SipUri)
    assert uri.secure and uri.user == "al%69ce" and uri.user_unescaped == "alice"
    assert uri.password == "pw" and uri.host == "[2001:db8::1]" and uri.port == 5061
    assert uri.transport == "tls" and uri.lr and uri.headers == "X=1"
    assert uri.aor == "sips:alice@[2001:db8::1]"


def test_semicolon_in_user_part() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com"


def test_escaped_null_does_not_truncate() -> None:
    a = parse_uri("sip:%00@example.com")
    b = parse_uri("sip:%00%00@example.com")
    assert isinstance(a, SipUri) and isinstance(b, SipUri)
    assert a.aor != b.aor and a.user_unescaped == "\x00"


def test_tel_and_opaque() -> None:
    tel = parse_uri("tel:+33144556677")
    assert isinstance(tel, TelUri) and tel.is_global
    opaque = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert isinstance(opaque, AbsoluteUri) and opaque.scheme == "nobodyKnowsThisScheme"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:@example.com",
        "sip:user@2001:db8::10",  # RFC 5118 §4.2: IPv6 without brackets
        "sip:user@example.com:99999",
        "sip:user@example.com:50x",
        "sip:user@exa mple.com",
        "<sip:user@example.com>",
        "sip:user@example.com;;lr",
        "sip:user@example.com;=x",
        "sip:user@[2001:db8::1",
        "no-colon",
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)
