"""RTP packet corpus (after aiortc/tests/test_rtp.py): valid captures, their ``_invalid`` and
``_truncated`` variants, exact error messages; RFC 4733 event payloads; demultiplexing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.rtp import (
    PacketKind,
    RtpHeader,
    RtpPacket,
    RtpParseError,
    TelephoneEvent,
    classify,
    demux,
    is_rtcp,
    parse_rtp_fields,
)

# G.711 A-law, 20 ms: PT 8, seq 8000, ts 40960, SSRC 0x5eadbeef, 160 bytes of silence.
RTP_PCMA = bytes.fromhex("80 08 1f 40 00 00 a0 00 5e ad be ef") + b"\xd5" * 160
# RFC 4733 event: marker, PT 101, digit 5, volume 10, duration 160.
RTP_DTMF = bytes.fromhex("80 e5 1f 41 00 00 a0 a0 5e ad be ef 05 0a 00 a0")
# Two CSRCs (a mixer's output).
RTP_CSRC = bytes.fromhex("82 00 00 01 00 00 00 a0 00 00 00 01 11 11 11 11 22 22 22 22 ff ff")
# RFC 8285 one-byte header extension (0xBEDE), one element: ID 1, one byte (audio level).
RTP_EXTENSION = bytes.fromhex("90 00 00 02 00 00 01 40 00 00 00 02 be de 00 01 10 aa 00 00 7f")
# Padding: 3 payload bytes, 4 bytes of padding (last byte counts them, itself included).
RTP_PADDING = bytes.fromhex("a0 00 00 03 00 00 01 e0 00 00 00 03 01 02 03 00 00 00 04")

VALID = {
    "rtp_pcma": (RTP_PCMA, (8, 0, 8000, 40960, 0x5EADBEEF, 12)),
    "rtp_dtmf": (RTP_DTMF, (101, 1, 8001, 41120, 0x5EADBEEF, 12)),
    "rtp_csrc": (RTP_CSRC, (0, 0, 1, 160, 1, 20)),
    "rtp_extension": (RTP_EXTENSION, (0, 0, 2, 320, 2, 20)),
    "rtp_padding": (RTP_PADDING, (0, 0, 3, 480, 3, 12)),
}

INVALID = {
    "rtp_truncated": (RTP_PCMA[:11], "RTP packet length is less than 12 bytes"),
    "rtp_empty_truncated": (b"", "RTP packet length is less than 12 bytes"),
    "rtp_version_invalid": (b"\x40" + RTP_PCMA[1:], "RTP packet has invalid version"),
    "rtp_version3_invalid": (b"\xc0" + RTP_PCMA[1:], "RTP packet has invalid version"),
    "rtp_csrc_truncated": (RTP_CSRC[:19], "RTP packet has truncated CSRC"),
    "rtp_extension_header_truncated": (
        RTP_EXTENSION[:14],
        "RTP packet has truncated extension profile / length",
    ),
    "rtp_extension_value_truncated": (
        RTP_EXTENSION[:19],
        "RTP packet has truncated extension value",
    ),
}

PADDING_INVALID = {
    "rtp_padding_zero_invalid": RTP_PADDING[:-1] + b"\x00",
    "rtp_padding_too_long_invalid": RTP_PADDING[:-1] + b"\x08",
    "rtp_padding_only_header_invalid": bytes.fromhex("a0 00 00 03 00 00 01 e0 00 00 00 03"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_fields(name: str) -> None:
    data, fields = VALID[name]
    assert parse_rtp_fields(data) == fields


def test_pcma() -> None:
    packet = RtpPacket.parse(RTP_PCMA)
    assert packet.header == RtpHeader(8, 8000, 40960, 0x5EADBEEF)
    assert packet.header.length == 12
    assert packet.payload == b"\xd5" * 160
    assert packet.padding_size == 0
    assert bytes(packet) == RTP_PCMA


def test_dtmf() -> None:
    packet = RtpPacket.parse(RTP_DTMF)
    assert packet.header.marker
    assert packet.header.payload_type == 101
    event = TelephoneEvent.parse(packet.payload)
    assert event == TelephoneEvent(event=5, end=False, volume=10, duration=160)
    assert event.key == "5"
    assert bytes(event) == packet.payload
    assert bytes(packet) == RTP_DTMF


def test_telephone_event_end_and_keys() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("0b 8a 03 20 0b 8a 03 20"))
    assert event == TelephoneEvent(11, True, 10, 800)
    assert event.key == "#"
    assert TelephoneEvent(16, False, 0, 0).key is None  # flash hook, not a key
    with pytest.raises(RtpParseError, match=r"^telephone-event payload is shorter than 4 bytes$"):
        TelephoneEvent.parse(b"\x05\x0a\x00")
    with pytest.raises(ValueError, match="volume out of range"):
        bytes(TelephoneEvent(1, False, 64, 0))


def test_csrc() -> None:
    packet = RtpPacket.parse(RTP_CSRC)
    assert packet.header.csrcs == (0x11111111, 0x22222222)
    assert packet.header.length == 20
    assert packet.payload == b"\xff\xff"
    assert bytes(packet) == RTP_CSRC


def test_extension() -> None:
    packet = RtpPacket.parse(RTP_EXTENSION)
    assert packet.header.extension_profile == 0xBEDE
    assert packet.header.extension == bytes.fromhex("10 aa 00 00")
    assert packet.payload == b"\x7f"
    assert bytes(packet) == RTP_EXTENSION


def test_padding() -> None:
    packet = RtpPacket.parse(RTP_PADDING)
    assert packet.header.padding
    assert packet.payload == b"\x01\x02\x03"
    assert packet.padding_size == 4
    assert bytes(packet) == RTP_PADDING


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_and_truncated(name: str) -> None:
    data, message = INVALID[name]
    for parse in (parse_rtp_fields, RtpHeader.parse, RtpPacket.parse):
        with pytest.raises(RtpParseError) as info:
            parse(data)
        assert str(info.value) == message


@pytest.mark.parametrize("name", sorted(PADDING_INVALID))
def test_padding_invalid(name: str) -> None:
    data = PADDING_INVALID[name]
    parse_rtp_fields(data)  # the fast path does not look at (possibly encrypted) padding
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == "RTP packet padding length is invalid"


def test_serialise_checks() -> None:
    with pytest.raises(ValueError, match="payload type out of range"):
        bytes(RtpHeader(128, 0, 0, 0))
    with pytest.raises(ValueError, match="at most 15 CSRCs"):
        bytes(RtpHeader(0, 0, 0, 0, csrcs=tuple(range(16))))
    with pytest.raises(ValueError, match="multiple of 4"):
        bytes(RtpHeader(0, 0, 0, 0, extension_profile=1, extension=b"x"))
    with pytest.raises(ValueError, match="padding size out of range"):
        bytes(RtpPacket(RtpHeader(0, 0, 0, 0), b"", 256))


def test_accepts_memoryview_and_bytearray() -> None:
    assert parse_rtp_fields(memoryview(RTP_EXTENSION)) == VALID["rtp_extension"][1]  # type: ignore[arg-type]
    assert RtpPacket.parse(bytearray(RTP_PADDING)).payload == b"\x01\x02\x03"  # type: ignore[arg-type]


# -- demultiplexing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (0, PacketKind.STUN),
        (1, PacketKind.STUN),
        (3, PacketKind.STUN),
        (4, PacketKind.DROP),
        (15, PacketKind.DROP),
        (16, PacketKind.ZRTP),
        (19, PacketKind.ZRTP),
        (20, PacketKind.DTLS),
        (22, PacketKind.DTLS),
        (63, PacketKind.DTLS),
        (64, PacketKind.TURN_CHANNEL),
        (79, PacketKind.TURN_CHANNEL),
        (80, PacketKind.DROP),
        (127, PacketKind.DROP),
        (128, PacketKind.RTP_RTCP),
        (0x80, PacketKind.RTP_RTCP),
        (191, PacketKind.RTP_RTCP),
        (192, PacketKind.DROP),
        (255, PacketKind.DROP),
    ],
)
def test_classify(first: int, kind: PacketKind) -> None:
    """RFC 7983 §7."""
    assert classify(first) is kind


def test_demux() -> None:
    rr = bytes.fromhex("80 c9 00 01 5e ad be ef")
    assert demux(RTP_PCMA) is PacketKind.RTP
    assert demux(RTP_DTMF) is PacketKind.RTP  # marker + PT 101: 0xe5 is not RTCP
    assert demux(rr) is PacketKind.RTCP
    assert demux(bytes.fromhex("80 d0 00 00")) is PacketKind.RTCP  # 208, still 192-223
    assert demux(bytes.fromhex("80 e0 00 00")) is PacketKind.RTP  # 224: PT 96 with marker
    assert demux(bytes.fromhex("00 01 00 00 21 12 a4 42")) is PacketKind.STUN
    assert demux(bytes.fromhex("16 fe fd")) is PacketKind.DTLS
    assert demux(b"") is PacketKind.DROP
    assert demux(b"\x80\xc9\x00") is PacketKind.DROP
    assert is_rtcp(rr) and not is_rtcp(RTP_PCMA) and not is_rtcp(b"\x80")


# -- properties --------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_parsers_raise_only_rtp_parse_error(data: bytes) -> None:
    for parse in (parse_rtp_fields, RtpHeader.parse, RtpPacket.parse, TelephoneEvent.parse):
        with contextlib.suppress(RtpParseError):
            parse(data)
    assert isinstance(demux(data), PacketKind)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        RtpHeader,
        payload_type=st.integers(0, 127),
        sequence_number=st.integers(0, 0xFFFF),
        timestamp=st.integers(0, 0xFFFFFFFF),
        ssrc=st.integers(0, 0xFFFFFFFF),
        marker=st.booleans(),
        csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
        extension_profile=st.none() | st.integers(0, 0xFFFF),
        extension=st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)),
    ),
    st.binary(max_size=200),
    st.integers(0, 255),
)
def test_serialise_parse_identity(header: RtpHeader, payload: bytes, padding: int) -> None:
    if header.extension_profile is None:
        header = RtpHeader(
            header.payload_type,
            header.sequence_number,
            header.timestamp,
            header.ssrc,
            header.marker,
            header.csrcs,
        )
    packet = RtpPacket(header, payload, padding)
    data = bytes(packet)
    parsed = RtpPacket.parse(data)
    assert parsed.payload == payload and parsed.padding_size == padding
    assert parsed.header.sequence_number == header.sequence_number
    assert bytes(parsed) == data
    fields = parse_rtp_fields(data)
    assert fields == (
        header.payload_type,
        int(header.marker),
        header.sequence_number,
        header.timestamp,
        header.ssrc,
        header.length,
    )
