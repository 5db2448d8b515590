"""RTCP corpus: SR, RR, SDES, BYE, compound packets, unknown types; ``_invalid`` and
``_truncated`` variants with exact messages; serialise ∘ parse."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.rtp import (
    ReportBlock,
    RtcpBye,
    RtcpOther,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtpParseError,
    SdesChunk,
    parse_rtcp,
    rtcp_report_blocks,
)

# SR, one report block (52 bytes, length field 12).
RTCP_SR = bytes.fromhex(
    "81c8000c"  # V=2 RC=1 PT=200 length=12
    "5eadbeef"  # sender SSRC
    "e8a1b2c34d5e6f70"  # NTP timestamp
    "0001f400"  # RTP timestamp
    "000000fa"  # sender's packet count: 250
    "00009c40"  # sender's octet count: 40000
    "1a2b3c4d"  # report block: source SSRC
    "0c"  # fraction lost 12/256
    "000005"  # cumulative lost 5
    "00010fa0"  # extended highest sequence: cycle 1, seq 4000
    "00000023"  # jitter 35
    "b2c34d5e"  # LSR
    "00008000"  # DLSR 0.5 s
)
# SDES with a CNAME (a typical compound's second packet).
RTCP_SDES = bytes.fromhex("81ca0006 5eadbeef 010f") + b"limen@192.0.2.1" + bytes(3)
# RR without report blocks (a receiver that has not heard anyone yet).
RTCP_RR = bytes.fromhex("80c90001 1a2b3c4d")
# BYE with a reason.
RTCP_BYE = bytes.fromhex("81cb0004 5eadbeef 08") + b"shutdown" + bytes(3)
# RFC 4585 PSFB PLI: not parsed, kept.
RTCP_PLI = bytes.fromhex("81ce0002 5eadbeef 1a2b3c4d")
# RR with padding (P bit, 4 padding bytes).
RTCP_RR_PADDED = bytes.fromhex("a0c90002 1a2b3c4d 00000004")

BLOCK = ReportBlock(0x1A2B3C4D, 12, 5, 0x10FA0, 35, 0xB2C34D5E, 0x8000)
SR = RtcpSenderReport(0x5EADBEEF, 0xE8A1B2C34D5E6F70, 0x1F400, 250, 40000, (BLOCK,))
SDES = RtcpSourceDescription((SdesChunk(0x5EADBEEF, ((1, b"limen@192.0.2.1"),)),))

INVALID = {
    "rtcp_truncated": (RTCP_RR[:3], "RTCP packet length is less than 4 bytes"),
    "rtcp_compound_truncated": (RTCP_RR + RTCP_RR[:2], "RTCP packet length is less than 4 bytes"),
    "rtcp_version_invalid": (b"\x40" + RTCP_RR[1:], "RTCP packet has invalid version"),
    "rtcp_length_truncated": (RTCP_SR[:-4], "RTCP packet is truncated"),
    "rtcp_sr_invalid": (
        bytes.fromhex("81c80006") + RTCP_SR[4:28],
        "RTCP sender report length is invalid",
    ),
    "rtcp_rr_invalid": (
        bytes.fromhex("81c90001 1a2b3c4d"),
        "RTCP receiver report length is invalid",
    ),
    "rtcp_bye_invalid": (bytes.fromhex("82cb0001 5eadbeef"), "RTCP bye length is invalid"),
    "rtcp_bye_reason_truncated": (
        bytes.fromhex("81cb0002 5eadbeef 09414243"),
        "RTCP bye reason is truncated",
    ),
    "rtcp_padding_zero_invalid": (
        RTCP_RR_PADDED[:-1] + b"\x00",
        "RTCP packet padding length is invalid",
    ),
    "rtcp_padding_long_invalid": (
        RTCP_RR_PADDED[:-1] + b"\x0d",
        "RTCP packet padding length is invalid",
    ),
    "rtcp_sdes_chunk_truncated": (
        bytes.fromhex("82ca0002 5eadbeef 00000000"),
        "RTCP SDES chunk is truncated",
    ),
    "rtcp_sdes_item_truncated": (
        bytes.fromhex("81ca0002 5eadbeef 01054142"),
        "RTCP SDES item is truncated",
    ),
    "rtcp_sdes_end_truncated": (
        bytes.fromhex("81ca0002 5eadbeef 01024142"),
        "RTCP SDES chunk is truncated",
    ),
}


def test_sender_report() -> None:
    [sr] = parse_rtcp(RTCP_SR)
    assert sr == SR
    assert bytes(sr) == RTCP_SR


def test_compound_sr_sdes() -> None:
    packets = parse_rtcp(RTCP_SR + RTCP_SDES)
    assert packets == [SR, SDES]
    assert SDES.chunks[0].cname == b"limen@192.0.2.1"
    assert bytes(SDES) == RTCP_SDES
    assert rtcp_report_blocks(packets) == [(0x5EADBEEF, BLOCK)]


def test_compound_rr_sdes_bye() -> None:
    packets = parse_rtcp(RTCP_RR + RTCP_SDES + RTCP_BYE)
    assert packets == [RtcpReceiverReport(0x1A2B3C4D), SDES, RtcpBye((0x5EADBEEF,), b"shutdown")]
    assert b"".join(map(bytes, packets)) == RTCP_RR + RTCP_SDES + RTCP_BYE


def test_bye_without_reason_and_several_sources() -> None:
    bye = RtcpBye((1, 2))
    assert parse_rtcp(bytes(bye)) == [bye]
    assert bytes(bye) == bytes.fromhex("82cb0002 00000001 00000002")


def test_unknown_type_is_kept() -> None:
    [pli] = parse_rtcp(RTCP_PLI)
    assert pli == RtcpOther(206, 1, bytes.fromhex("5eadbeef 1a2b3c4d"))
    assert bytes(pli) == RTCP_PLI


def test_padding() -> None:
    assert parse_rtcp(RTCP_RR_PADDED) == [RtcpReceiverReport(0x1A2B3C4D)]


def test_negative_cumulative_loss() -> None:
    block = ReportBlock(1, 0, -3, 100, 0, 0, 0)
    data = bytes(RtcpReceiverReport(9, (block,)))
    assert parse_rtcp(data) == [RtcpReceiverReport(9, (block,))]
    assert data[13:16] == bytes.fromhex("fffffd")
    # Clamped to 24 bits on output.
    big = ReportBlock(1, 0, 1 << 30, 100, 0, 0, 0)
    [rr] = parse_rtcp(bytes(RtcpReceiverReport(9, (big,))))
    assert isinstance(rr, RtcpReceiverReport) and rr.reports[0].packets_lost == 0x7FFFFF


def test_sdes_chunk_on_boundary() -> None:
    """A chunk whose items end on a 32-bit boundary still needs a null octet (+3 pad)."""
    sdes = RtcpSourceDescription((SdesChunk(7, ((1, b"ab"),)), SdesChunk(8, ())))
    data = bytes(sdes)
    assert data == bytes.fromhex("82ca0005 00000007 01026162 00000000 00000008 00000000")
    assert parse_rtcp(data) == [sdes]


def test_report_extension_kept() -> None:
    rr = RtcpReceiverReport(1, (), b"\x01\x02\x03\x04")
    assert parse_rtcp(bytes(rr)) == [rr]


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_and_truncated(name: str) -> None:
    data, message = INVALID[name]
    with pytest.raises(RtpParseError) as info:
        parse_rtcp(data)
    assert str(info.value) == message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_parse_raises_only_rtp_parse_error(data: bytes) -> None:
    with contextlib.suppress(RtpParseError):
        parse_rtcp(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=80))
def test_parse_valid_headers_raises_only_rtp_parse_error(data: bytes) -> None:
    """Force version 2 and a matching length so parsing gets past the common header."""
    body = data[4:]
    body += bytes(-len(body) % 4)
    packet = bytes([0x80 | (data[0] & 0x3F), 200 + data[1] % 8]) + (len(body) // 4).to_bytes(2)
    with contextlib.suppress(RtpParseError):
        parse_rtcp(packet + body)


_u32 = st.integers(0, 0xFFFFFFFF)
_blocks = st.lists(
    st.builds(
        ReportBlock,
        _u32,
        st.integers(0, 255),
        st.integers(-0x800000, 0x7FFFFF),
        _u32,
        _u32,
        _u32,
        _u32,
    ),
    max_size=31,
).map(tuple)
_words = st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4))
_packets = st.one_of(
    st.builds(
        RtcpSenderReport,
        _u32,
        st.integers(0, 2**64 - 1),
        _u32,
        _u32,
        _u32,
        _blocks,
        _words,
    ),
    st.builds(RtcpReceiverReport, _u32, _blocks, _words),
    st.builds(
        RtcpSourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                _u32,
                st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)), max_size=3).map(
                    tuple
                ),
            ),
            max_size=31,
        ).map(tuple),
    ),
    st.builds(RtcpBye, st.lists(_u32, max_size=31).map(tuple), st.none() | st.binary(max_size=255)),
    st.builds(RtcpOther, st.integers(205, 255), st.integers(0, 31), _words),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_packets, min_size=1, max_size=4))
def test_serialise_parse_identity(packets: list[object]) -> None:
    data = b"".join(bytes(p) for p in packets)  # type: ignore[call-overload]
    assert parse_rtcp(data) == packets
