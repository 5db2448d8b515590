"""Editing helpers: each edit changes exactly the lines it is about, in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.sdp import (
    Connection,
    CryptoAttribute,
    CryptoSuite,
    Direction,
    MediaDescription,
    Origin,
    RtcpAttribute,
    SessionDescription,
    parse_sdp,
    plain_proto,
    secure_proto,
)

DATA = Path(__file__).parent / "data"


def load(name: str) -> SessionDescription:
    return parse_sdp((DATA / name).read_bytes())


def lines(sd: SessionDescription) -> list[str]:
    return str(sd).split("\r\n")[:-1]


def diff(before: SessionDescription, after: SessionDescription) -> tuple[list[str], list[str]]:
    """(lines removed, lines added), order-insensitive."""
    old, new = lines(before), lines(after)
    return [x for x in old if x not in new], [x for x in new if x not in old]


BARE = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=x\r\n"


def test_set_port_and_connection_per_media() -> None:
    sd = load("rfc5118_mult_ip_in_sdp.sdp")
    before = sd.copy()
    audio, video = sd.media
    audio.port = 20000
    audio.connection = Connection.of("203.0.113.7")
    video.port = 0
    assert diff(before, sd) == (
        ["m=audio 22334 RTP/AVP 0", "c=IN IP4 192.0.2.1", "m=video 6024 RTP/AVP 107"],
        ["m=audio 20000 RTP/AVP 0", "c=IN IP4 203.0.113.7", "m=video 0 RTP/AVP 107"],
    )
    assert video.rejected
    # Position is kept: the c= line is still second in its section.
    assert audio.lines[1].type == "c"
    with pytest.raises(ValueError, match="port out of range"):
        audio.port = 65536


def test_media_connection_inserted_in_rfc_order_and_removed() -> None:
    sd = parse_sdp(BARE.replace("m=audio 4000 RTP/AVP 0", "m=audio 4000 RTP/AVP 0\r\nb=AS:64"))
    [audio] = sd.media
    audio.connection = Connection.of("2001:db8::5")
    assert [line.type for line in audio.lines] == ["m", "c", "b", "a"]
    assert str(audio.lines[1]) == "c=IN IP6 2001:db8::5"
    audio.connection = None
    assert [line.type for line in audio.lines] == ["m", "b", "a"]


def test_session_connection_inserted_before_t() -> None:
    sd = parse_sdp(BARE)
    sd.connection = Connection.of("192.0.2.9")
    assert [line.type for line in sd.lines] == ["v", "o", "s", "c", "t"]
    sd.connection = Connection.of("192.0.2.10")
    assert str(sd.lines[3]) == "c=IN IP4 192.0.2.10"


def test_set_connection_address_everywhere() -> None:
    sd = load("linphone_ice.sdp")
    sd.set_connection_address("198.51.100.4")
    assert sd.connection == Connection("198.51.100.4")
    assert all(m.connection == Connection("198.51.100.4") for m in sd.media)
    sd = load("rtpengine_offer.sdp")
    sd.set_connection_address("2001:db8::9")
    assert [str(line) for line in sd.lines][:4] == [
        "v=0",
        "o=- 1545997027 1 IN IP4 198.51.100.1",
        "s=tester",
        "c=IN IP6 2001:db8::9",
    ]
    assert sd.media[0].connection == Connection("2001:db8::9", "IP6")


def test_direction_replaced_in_place_and_duplicates_removed() -> None:
    sd = parse_sdp(BARE + "a=sendonly\r\na=y\r\na=inactive\r\n")
    [audio] = sd.media
    audio.direction = Direction.RECVONLY
    assert [str(line) for line in audio.lines] == [
        "m=audio 4000 RTP/AVP 0",
        "a=x",
        "a=recvonly",
        "a=y",
    ]
    audio.direction = None
    assert audio.direction is None
    sd.direction = Direction.INACTIVE
    assert str(sd.lines[-1]) == "a=inactive"
    assert sd.effective_direction(audio) is Direction.INACTIVE


def test_proto_switch() -> None:
    assert secure_proto("RTP/AVP") == "RTP/SAVP"
    assert secure_proto("RTP/AVPF") == "RTP/SAVPF"
    assert secure_proto("UDP/TLS/RTP/SAVPF") == "RTP/SAVPF"
    assert plain_proto("RTP/SAVP") == "RTP/AVP"
    assert plain_proto("RTP/SAVPF") == "RTP/AVPF"
    assert plain_proto("udptl") == "udptl"
    media = MediaDescription.create("audio", 4000, "RTP/AVP", [0])
    media.set_secure(True)
    assert media.proto == "RTP/SAVP" and media.secure
    media.set_secure(True)
    assert media.proto == "RTP/SAVP"
    media.set_secure(False)
    assert media.proto == "RTP/AVP" and not media.secure


def test_crypto_lines_replaced_where_they_were() -> None:
    sd = load("mitel_6867i.sdp")
    [audio] = sd.media
    ours = CryptoAttribute.create(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, bytes(range(30)))
    audio.crypto = [ours]
    texts = [str(line) for line in audio.lines]
    assert texts[-2:] == [
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd",
        "a=sendrecv",
    ]
    assert audio.crypto == [ours]
    audio.crypto = []
    assert not audio.has_attribute("crypto")
    audio.crypto = [ours]  # none left: appended
    assert str(audio.lines[-1]).startswith("a=crypto:1 ")
    assert audio.remove_attributes("crypto") == 1


def test_filter_codecs_keeps_dtmf_and_cn() -> None:
    sd = load("kamailio_passthrough.sdp")
    [audio] = sd.media
    before = sd.copy()
    assert audio.filter_codecs(["PCMU"]) == ("0", "13", "101")
    removed, added = diff(before, sd)
    assert sorted(removed) == sorted(
        [
            "m=audio 52346 RTP/AVP 8 0 18 13 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:18 G729/8000",
            "a=fmtp:18 annexb=no",
        ]
    )
    assert added == ["m=audio 52346 RTP/AVP 0 13 101"]


def test_filter_codecs_without_cn_and_reordered() -> None:
    sd = load("kamailio_passthrough.sdp")
    [audio] = sd.media
    kept = audio.filter_codecs(["G729", "PCMA"], comfort_noise=False, reorder=True)
    assert kept == ("18", "8", "101")
    assert audio.formats == kept
    assert not any(v.startswith("13 ") for v in audio.attribute_values("rtpmap"))
    assert audio.fmtps == {"18": "annexb=no", "101": "0-15"}


def test_filter_codecs_nothing_acceptable_changes_nothing() -> None:
    sd = load("kamailio_passthrough.sdp")
    before = sd.copy()
    assert sd.media[0].filter_codecs(["opus", "G722"]) == ()
    assert sd == before


def test_filter_codecs_by_rate_and_rtcp_fb_lines() -> None:
    sd = load("linphone_ice.sdp")
    audio, video = sd.media
    assert audio.filter_codecs(["opus/48000/2", "speex/16000"]) == ("96", "97", "101", "99", "100")
    assert video.filter_codecs(["H264"]) == ("97",)
    assert video.attribute_values("rtcp-fb") == ["* trr-int 1000", "* ccm tmmbr", "97 nack pli"]


def test_reorder_codecs() -> None:
    sd = load("mitel_6867i.sdp")
    [audio] = sd.media
    audio.reorder_codecs(["G722", "PCMA"])
    assert audio.formats == ("9", "8", "0", "18", "101")


def test_remove_formats() -> None:
    sd = load("linphone_ice.sdp")
    audio = sd.media[0]
    audio.remove_formats([101, "99"])
    assert audio.formats == ("96", "97", "98", "0", "8", "18", "100")
    assert [c.clock_rate for c in audio.codecs if c.is_telephone_event] == [8000]


def test_ptime_maxptime() -> None:
    sd = load("kamailio_passthrough.sdp")
    [audio] = sd.media
    audio.ptime = 30
    audio.maxptime = None
    assert audio.ptime == 30 and audio.maxptime is None
    assert audio.attribute_values("ptime") == ["30"]
    audio.ptime = None
    assert audio.ptime is None
    audio.ptime = 20
    assert str(audio.lines[-1]) == "a=ptime:20"


def test_decimal_ptime_is_rounded() -> None:
    [audio] = parse_sdp(BARE + "a=ptime:20.0\r\n").media
    assert audio.ptime == 20


def test_rtcp_mux_and_rtcp_attribute() -> None:
    sd = load("linphone_ice.sdp")
    audio = sd.media[0]
    assert not audio.rtcp_mux
    audio.rtcp_mux = True
    audio.rtcp_mux = True
    assert audio.attribute_values("rtcp-mux") == [""]
    audio.rtcp = RtcpAttribute(20001, Connection.of("192.0.2.1"))
    assert audio.attribute_values("rtcp") == ["20001 IN IP4 192.0.2.1"]
    assert audio.rtcp == RtcpAttribute(20001, Connection("192.0.2.1"))
    audio.rtcp = None
    audio.rtcp_mux = False
    assert audio.rtcp is None and not audio.rtcp_mux


def test_bump_version_and_origin() -> None:
    sd = load("baresip_sdes.sdp")
    sd.bump_version()
    assert sd.origin.session_version == 2890844528
    sd.origin = Origin("limen", "42", 7, "IN", "IP4", "192.0.2.50")
    assert str(sd.lines[1]) == "o=limen 42 7 IN IP4 192.0.2.50"


def test_bandwidth() -> None:
    sd = load("baresip_sdes.sdp")
    [audio] = sd.media
    audio.set_bandwidth("AS", 80)
    audio.set_bandwidth("TIAS", 64000)
    assert [str(b) for b in audio.bandwidths] == ["AS:80", "TIAS:64000"]
    assert [line.type for line in audio.lines[:3]] == ["m", "b", "b"]
    audio.set_bandwidth("as", None)
    assert [str(b) for b in audio.bandwidths] == ["TIAS:64000"]
    sd.set_bandwidth("CT", 128)
    assert [line.type for line in sd.lines] == ["v", "o", "s", "c", "b", "t", "a"]


def test_generic_attributes() -> None:
    sd = parse_sdp(BARE)
    [audio] = sd.media
    audio.add_attribute("label", "1")
    audio.set_attribute("X", "2")  # case-insensitive: replaces a=x in place
    assert [str(line) for line in audio.lines] == [
        "m=audio 4000 RTP/AVP 0",
        "a=X:2",
        "a=label:1",
    ]
    assert audio.attribute("x") == "2"
    assert audio.attribute("nothing") is None
    assert audio.remove_attributes("label", lambda value: value == "2") == 0
    assert audio.remove_attributes("label") == 1


def test_strip_ice_and_dtls() -> None:
    sd = load("linphone_ice.sdp")
    assert sd.strip_ice() == 2 + 4 + 2
    assert "candidate" not in str(sd) and "ice-" not in str(sd)
    assert sd.attribute("record") == "off"
    sd = load("rtpengine_offer.sdp")
    assert sd.strip_dtls() == 3
    assert sd.media[0].attribute("fingerprint") is None


def test_create() -> None:
    sd = SessionDescription.create(
        Origin("limen", "1", 0, "IN", "IP4", "192.0.2.1"), connection=Connection.of("192.0.2.1")
    )
    media = MediaDescription.create("audio", 20000, "RTP/AVP", [8, 101])
    media.add_attribute("rtpmap", "101 telephone-event/8000")
    sd.media.append(media)
    assert str(sd) == (
        "v=0\r\no=limen 1 0 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 20000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    assert repr(sd) == "<SessionDescription limen 1 0 IN IP4 192.0.2.1 with 1 media>"
    assert repr(media) == "<MediaDescription 'audio 20000 RTP/AVP 8 101'>"
    assert list(sd) == [media]
