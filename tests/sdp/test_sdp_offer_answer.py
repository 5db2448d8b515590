"""RFC 3264 offer/answer helpers: answer skeletons, direction rules, hold, o= versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.sdp import (
    Capabilities,
    Connection,
    Direction,
    LocalOrigin,
    Origin,
    answer_direction,
    build_answer,
    is_hold,
    is_session_on_hold,
    parse_sdp,
)

DATA = Path(__file__).parent / "data"
ORIGIN = Origin("limen", "7", 1, "IN", "IP4", "192.0.2.1")


def load(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize(
    ("offered", "local", "answer"),
    [
        (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
        (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
        (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
        (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
    ],
)
def test_answer_direction(offered: Direction, local: Direction, answer: Direction) -> None:
    """RFC 3264 §6.1."""
    assert answer_direction(offered, local) is answer


def test_direction_helpers() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    assert Direction.of(send=True, recv=True) is Direction.SENDRECV
    assert Direction.SENDRECV.sends and Direction.SENDRECV.receives
    assert not Direction.RECVONLY.sends


def test_answer_to_linphone_rejects_video_and_keeps_order() -> None:
    offer = parse_sdp(load("linphone_ice.sdp"))
    answer = build_answer(
        offer,
        Capabilities(codecs=("PCMA", "PCMU")),
        origin=ORIGIN,
        address="192.0.2.1",
        ports=[20000, 20002],
    )
    assert str(answer) == (
        "v=0\r\n"
        "o=limen 7 1 IN IP4 192.0.2.1\r\n"
        "s=-\r\n"
        "c=IN IP4 192.0.2.1\r\n"
        "t=0 0\r\n"
        "m=audio 20000 RTP/AVP 0 8 101 99 100\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/48000\r\n"
        "a=rtpmap:99 telephone-event/16000\r\n"
        "a=rtpmap:100 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
        "m=video 0 RTP/AVP 96 97\r\n"
    )


def test_answer_reorders_sets_ptime_mux_and_hold_direction() -> None:
    offer = parse_sdp(load("snom_hold.sdp"))
    offer.media[0].rtcp_mux = True
    answer = build_answer(
        offer,
        Capabilities(codecs=("G722", "PCMA"), reorder=True, ptime=30),
        origin=ORIGIN,
        address="2001:db8::1",
        ports=[30000],
    )
    [audio] = answer.media
    assert answer.connection == Connection("2001:db8::1", "IP6")
    assert audio.formats == ("9", "8", "101")
    assert audio.proto == "RTP/SAVP"  # crypto is the caller's business
    assert audio.crypto == []
    assert audio.ptime == 30
    assert audio.rtcp_mux
    assert audio.direction is Direction.RECVONLY  # offer was sendonly
    assert audio.fmtps == {"101": "0-15"}


def test_answer_rejections() -> None:
    offer = parse_sdp(load("rfc5118_ipv6_in_sdp.sdp"))
    # audio: G726-32 not in our list; video: not a media type we take.
    answer = build_answer(
        offer, Capabilities(codecs=("PCMU",)), origin=ORIGIN, address="::1", ports=[1, 2]
    )
    assert [str(m.media_line) for m in answer.media] == [
        "audio 0 RTP/AVP 2",
        "video 0 RTP/AVP 107",
    ]
    # Port 0 from the caller rejects a stream we could otherwise take.
    answer = build_answer(offer, Capabilities(), origin=ORIGIN, address="::1", ports=[0, 2])
    assert answer.media[0].rejected
    # A stream the offer rejected stays rejected; an unknown proto is rejected.
    offer.media[0].port = 0
    offer.media[1].proto = "RTP/AVP/TCP"
    answer = build_answer(
        offer,
        Capabilities(media_types=frozenset({"audio", "video"})),
        origin=ORIGIN,
        address="::1",
        ports=[5, 6],
    )
    assert all(m.rejected for m in answer.media)
    with pytest.raises(ValueError, match="need 2 ports"):
        build_answer(offer, Capabilities(), origin=ORIGIN, address="::1", ports=[1])


def test_answer_without_dtmf_or_cn_when_not_allowed() -> None:
    offer = parse_sdp(load("kamailio_passthrough.sdp"))
    answer = build_answer(
        offer,
        Capabilities(telephone_event=False, comfort_noise=False),
        origin=ORIGIN,
        address="192.0.2.1",
        ports=[4000],
    )
    assert answer.media[0].formats == ("8", "0", "18")
    assert answer.media[0].ptime == 20


def test_answer_to_legacy_hold_is_recvonly() -> None:
    offer = parse_sdp(load("rfc2543_legacy_hold.sdp"))
    answer = build_answer(offer, Capabilities(), origin=ORIGIN, address="192.0.2.1", ports=[9])
    assert answer.media[0].direction is Direction.RECVONLY


def test_hold_detection() -> None:
    for name, held in [
        ("snom_hold.sdp", True),
        ("rfc2543_legacy_hold.sdp", True),
        ("baresip_sdes.sdp", False),
        ("kamailio_passthrough.sdp", False),
    ]:
        sd = parse_sdp(load(name))
        assert is_hold(sd, sd.media[0]) is held, name
        assert is_session_on_hold(sd) is held, name
    sd = parse_sdp(load("baresip_sdes.sdp"))
    sd.media[0].direction = Direction.INACTIVE
    assert is_hold(sd, sd.media[0])
    sd.media[0].direction = Direction.RECVONLY  # we hold them: they still receive
    assert not is_hold(sd, sd.media[0])
    sd.media[0].port = 0
    assert not is_hold(sd, sd.media[0])
    assert not is_session_on_hold(sd)


def test_ipv6_unspecified_is_not_legacy_hold() -> None:
    """RFC 2543 hold is an IPv4 convention (RFC 3264 §8.4)."""
    sd = parse_sdp(load("rfc5118_ipv6_in_sdp.sdp"))
    sd.connection = Connection("::", "IP6")
    assert sd.effective_direction(sd.media[0]) is Direction.SENDRECV


def test_local_origin_versions() -> None:
    local = LocalOrigin("203.0.113.5", session_id="4711")
    first = parse_sdp(load("baresip_sdes.sdp"))
    local.stamp(first)
    assert str(first.origin) == "limen 4711 0 IN IP4 203.0.113.5"
    same = parse_sdp(load("baresip_sdes.sdp"))
    same.origin = Origin("x", "y", 99, "IN", "IP4", "192.0.2.99")  # their o= does not matter
    local.stamp(same)
    assert same.origin.session_version == 0
    changed = parse_sdp(load("baresip_sdes.sdp"))
    changed.media[0].direction = Direction.SENDONLY
    local.stamp(changed)
    assert changed.origin.session_version == 1
    local.stamp(changed.copy())
    assert local.version == 1
    v6 = LocalOrigin("2001:db8::5")
    assert v6.origin.addrtype == "IP6"
    assert v6.session_id.isdigit()
