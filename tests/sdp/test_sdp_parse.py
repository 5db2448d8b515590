"""Parsing and writing real-world SDP (fixtures in data/, named after the producing client).

The fixtures are stored with LF line ends for readability; ``load`` turns them into the CR LF
bodies the clients send.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.sdp import (
    Bandwidth,
    Codec,
    Connection,
    CryptoSuite,
    Direction,
    Origin,
    RtcpAttribute,
    SdpParseError,
    SsrcAttribute,
    parse_sdp,
)

DATA = Path(__file__).parent / "data"
FIXTURES = sorted(path.name for path in DATA.glob("*.sdp"))


def load(name: str) -> bytes:
    return (DATA / name).read_bytes().replace(b"\n", b"\r\n")


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_is_exact(name: str) -> None:
    body = load(name)
    sd = parse_sdp(body)
    assert bytes(sd) == body
    assert str(sd) == body.decode()
    assert parse_sdp(bytes(sd)) == sd


@pytest.mark.parametrize("name", FIXTURES)
def test_lf_only_input_is_accepted_and_written_with_crlf(name: str) -> None:
    lf = (DATA / name).read_bytes()
    assert b"\r" not in lf
    assert bytes(parse_sdp(lf)) == load(name)


@pytest.mark.parametrize("name", FIXTURES)
def test_copy_is_independent(name: str) -> None:
    sd = parse_sdp(load(name))
    copy = sd.copy()
    assert copy == sd
    copy.media[0].port = 1
    copy.bump_version()
    assert bytes(sd) == load(name)


def test_baresip_sdes() -> None:
    sd = parse_sdp(load("baresip_sdes.sdp"))
    assert sd.origin == Origin("-", "2890844526", 2890844527, "IN", "IP4", "192.168.178.23")
    assert sd.name == "-"
    assert sd.connection == Connection("192.168.178.23")
    assert sd.attribute("tool") == "baresip 3.16.0"
    assert sd.direction is None
    [audio] = sd.media
    assert audio.kind == "audio"
    assert audio.port == 10842
    assert audio.proto == "RTP/SAVP"
    assert audio.secure and audio.is_rtp
    assert audio.formats == ("9", "0", "8", "101")
    assert audio.connection is None
    assert sd.effective_connection(audio) == Connection("192.168.178.23")
    assert audio.bandwidths == [Bandwidth("AS", 64)]
    assert audio.direction is Direction.SENDRECV
    assert audio.ptime == 20
    assert audio.maxptime is None
    assert audio.rtcp is None
    assert not audio.rtcp_mux
    assert audio.has_attribute("rtcp-rsize")
    assert audio.ssrcs == [
        SsrcAttribute(2581183911, "cname", "3f1b8c2e-8a57-4d0e-b2a5-6c4f0f9d1e77")
    ]
    assert audio.codecs == [
        Codec(9, "G722", 8000, 1),
        Codec(0, "PCMU", 8000, 1),
        Codec(8, "PCMA", 8000, 1),
        Codec(101, "telephone-event", 8000, None, "0-15"),
    ]
    assert audio.clock_rates == {9: 8000, 0: 8000, 8: 8000, 101: 8000}
    crypto = audio.crypto
    assert [(c.tag, c.crypto_suite) for c in crypto] == [
        (1, CryptoSuite.AES_CM_128_HMAC_SHA1_32),
        (2, CryptoSuite.AES_CM_128_HMAC_SHA1_80),
        (3, CryptoSuite.AEAD_AES_256_GCM),
        (4, CryptoSuite.AEAD_AES_128_GCM),
    ]
    assert [len(c.key_salt) for c in crypto] == [30, 30, 44, 28]
    assert all(c.is_usable() for c in crypto)


def test_mitel_6867i() -> None:
    sd = parse_sdp(load("mitel_6867i.sdp"))
    assert sd.origin.username == "MxSIP"
    assert sd.origin.session_version == 1
    assert sd.name == "SIP Call"
    [audio] = sd.media
    assert [c.name for c in audio.codecs] == ["PCMU", "PCMA", "G729", "G722", "TELEPHONE-EVENT"]
    assert audio.codec(18) == Codec(18, "G729", 8000, None, "annexb=no")
    assert [c.keys[0].lifetime for c in audio.crypto] == [2**31, 2**31]
    assert sd.effective_direction(audio) is Direction.SENDRECV


def test_kamailio_passthrough_keeps_unknown_attribute() -> None:
    sd = parse_sdp(load("kamailio_passthrough.sdp"))
    [audio] = sd.media
    assert audio.attribute("nortpproxy") == "yes"
    assert audio.maxptime == 40
    assert not audio.secure
    assert audio.crypto == []
    assert [c.name for c in audio.codecs] == ["PCMA", "PCMU", "G729", "CN", "TELEPHONE-EVENT"]


def test_rtpengine_offer_with_many_suites_and_dtls_lines() -> None:
    sd = parse_sdp(load("rtpengine_offer.sdp"))
    assert sd.connection is None
    [audio] = sd.media
    assert audio.connection == Connection("203.0.113.1")
    assert sd.effective_connection(audio) == Connection("203.0.113.1")
    assert audio.rtcp == RtcpAttribute(30001)
    crypto = audio.crypto
    assert len(crypto) == 12
    usable = [c.suite for c in crypto if c.is_usable()]
    assert usable == [
        "AEAD_AES_256_GCM",
        "AEAD_AES_128_GCM",
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
    ]
    # Unpadded base64 for the GCM keys (rtpengine style) decodes to the right lengths.
    assert len(crypto[0].key_salt) == 44 and len(crypto[1].key_salt) == 28
    assert crypto[2].crypto_suite is None and len(crypto[2].key_salt) == 46
    assert audio.attribute("setup") == "actpass"
    assert (audio.attribute("fingerprint") or "").startswith("sha-256 63:5B:CE")
    assert audio.attribute("tls-id") == "F8BC6540F33C17DE09A073B4E0058761"


def test_linphone_ice_and_video() -> None:
    sd = parse_sdp(load("linphone_ice.sdp"))
    assert sd.attribute("ice-ufrag") == "a0c8f9e2"
    audio, video = sd.media
    assert len(audio.attribute_values("candidate")) == 4
    assert audio.rtcp == RtcpAttribute(7079)
    assert audio.codec(96) == Codec(96, "opus", 48000, 2, "useinbandfec=1")
    # 18 has an fmtp but no rtpmap: static type G.729.
    assert audio.codec(18) == Codec(18, "G729", 8000, None, "annexb=yes")
    assert [c.clock_rate for c in audio.codecs if c.is_telephone_event] == [48000, 16000, 8000]
    assert video.kind == "video"
    assert video.clock_rates == {96: 90000, 97: 90000}


def test_rfc5118_ipv6_in_sdp() -> None:
    """RFC 5118 §4.6: IPv6 addresses in o= and c= without brackets."""
    sd = parse_sdp(load("rfc5118_ipv6_in_sdp.sdp"))
    assert sd.origin.addrtype == "IP6"
    assert sd.origin.address == "2001:db8::20"
    assert sd.origin.session_version == 0
    assert sd.connection == Connection("2001:db8::20", "IP6")
    assert [m.kind for m in sd.media] == ["audio", "video"]
    assert sd.media[0].codecs == [Codec(2, "G726-32", 8000)]


def test_rfc5118_multiple_addresses_in_sdp() -> None:
    """RFC 5118 §4.8: an IPv4 and an IPv6 stream, each with its own c=."""
    sd = parse_sdp(load("rfc5118_mult_ip_in_sdp.sdp"))
    assert sd.name == ""
    assert sd.connection is None
    audio, video = sd.media
    assert sd.effective_connection(audio) == Connection("192.0.2.1", "IP4")
    assert sd.effective_connection(video) == Connection("2001:db8::1", "IP6")
    assert audio.codecs == [Codec(0, "PCMU", 8000)]


def test_snom_hold_lowercase_codec_names() -> None:
    sd = parse_sdp(load("snom_hold.sdp"))
    [audio] = sd.media
    assert audio.direction is Direction.SENDONLY
    assert [c.name for c in audio.codecs][:3] == ["PCMA", "PCMU", "G722"]


def test_legacy_hold_is_sendonly_in_effect() -> None:
    sd = parse_sdp(load("rfc2543_legacy_hold.sdp"))
    [audio] = sd.media
    assert audio.direction is None
    assert sd.connection is not None and sd.connection.is_unspecified
    assert sd.effective_direction(audio) is Direction.SENDONLY


def test_session_level_direction_is_the_default() -> None:
    sd = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\na=inactive\r\n"
        "m=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\na=recvonly\r\n"
    )
    first, second = sd.media
    assert sd.direction is Direction.INACTIVE
    assert sd.effective_direction(first) is Direction.INACTIVE
    assert sd.effective_direction(second) is Direction.RECVONLY


def test_mid_and_several_ssrc_attributes() -> None:
    sd = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        "a=mid:audio0\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:a b\r\na=ssrc:2 label\r\n"
    )
    [audio] = sd.media
    assert audio.mid == "audio0"
    assert audio.ssrcs == [
        SsrcAttribute(1, "cname", "x"),
        SsrcAttribute(1, "msid", "a b"),
        SsrcAttribute(2, "label"),
    ]
    assert str(audio.ssrcs[1]) == "1 msid:a b"


def test_multicast_and_port_count() -> None:
    sd = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 233.252.0.1/127/3\r\nt=0 0\r\n"
        "m=audio 49170/2 RTP/AVP 0\r\nc=IN IP6 ff15::101/3\r\n"
    )
    assert sd.connection == Connection("233.252.0.1", "IP4", "IN", 127, 3)
    assert str(sd.connection) == "IN IP4 233.252.0.1/127/3"
    [audio] = sd.media
    assert audio.connection == Connection("ff15::101", "IP6", "IN", None, 3)
    assert audio.media_line.port_count == 2
    assert str(audio.media_line) == "audio 49170/2 RTP/AVP 0"


def test_tolerates_blank_lines_and_missing_final_newline() -> None:
    sd = parse_sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n\r\nt=0 0\r\nm=audio 1 RTP/AVP 0")
    assert bytes(sd).endswith(b"m=audio 1 RTP/AVP 0\r\n")


def test_non_utf8_bytes_round_trip() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=Sesi\xf3n\r\nt=0 0\r\n"
    assert bytes(parse_sdp(body)) == body


def test_malformed_attributes_are_kept_but_ignored() -> None:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0 96\r\n"
        b"a=rtpmap:96 nonsense\r\na=crypto:x AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n"
        b"a=ptime:twenty\r\na=rtcp:port\r\nb=AS:lots\r\na=ssrc:abc cname:x\r\n"
    )
    sd = parse_sdp(body)
    [audio] = sd.media
    assert audio.codecs == [Codec(0, "PCMU", 8000)]
    assert audio.crypto == []
    assert audio.ptime is None
    assert audio.rtcp is None
    assert audio.bandwidths == []
    assert audio.ssrcs == []
    assert bytes(sd) == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty SDP"),
        ("\r\n\r\n", "empty SDP"),
        ("o=- 1 1 IN IP4 192.0.2.1\r\n", "SDP must start with v=0, not 'o=- 1 1 IN IP4 192.0.2.1'"),
        ("v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n", "SDP must start with v=0, not 'v=1'"),
        ("v=0\r\ns=-\r\n", "SDP needs exactly one o= line, found 0"),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 b\r\n",
            "SDP needs exactly one o= line, found 2",
        ),
        ("v=0\r\no=- 1 1 IN IP4\r\n", "o= line needs 6 fields: '- 1 1 IN IP4'"),
        ("v=0\r\no=- 1 x IN IP4 a\r\n", "invalid o= session version: 'x'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nv=0\r\n", "more than one v= line"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nbogus\r\n", "invalid SDP line: 'bogus'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nA=b\r\n", "invalid SDP line: 'A=b'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\n a=b\r\n", "invalid SDP line: ' a=b'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=a\rb\r\n", "bare CR in SDP line: 's=a\\rb'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=\x00\r\n", "NUL character in SDP"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4\r\n", "c= line needs 3 fields: 'IN IP4'"),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n",
            "more than one session-level c= line",
        ),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 /1\r\n", "empty connection address: 'IN IP4 /1'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a/300\r\n", "c= TTL out of range: '300'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio\r\n", "m= line needs at least 3 fields: 'audio'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 70000 RTP/AVP 0\r\n", "m= port out of range: '70000'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio -1 RTP/AVP 0\r\n", "invalid m= port: '-1'"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\nm=audio ٣ RTP/AVP 0\r\n", "invalid m= port: '٣'"),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 1 RTP/AVP 0\r\nc=x\r\n",
            "c= line needs 3 fields: 'x'",
        ),
    ],
)
def test_invalid(body: str, message: str) -> None:
    with pytest.raises(SdpParseError) as info:
        parse_sdp(body)
    assert info.value.reason == message
    assert str(info.value) == message


def test_unencodable_text() -> None:
    with pytest.raises(SdpParseError, match="unencodable surrogates"):
        parse_sdp("v=0\r\no=- 1 1 IN IP4 a\r\ns=\ud800\r\n")


def test_not_bytes_or_str() -> None:
    with pytest.raises(SdpParseError, match="SDP must be bytes or str, not int"):
        parse_sdp(42)  # type: ignore[arg-type]


def test_huge_number_is_a_parse_error_not_value_error() -> None:
    with pytest.raises(SdpParseError, match="invalid o= session version"):
        parse_sdp("v=0\r\no=- 1 " + "9" * 5000 + " IN IP4 a\r\n")
