"""SRTP/SRTCP contexts over pylibsrtp: every suite, both code paths (cffi fast path and
pylibsrtp's public API), known-answer vectors, tampering, replay, interop, bad input."""

from __future__ import annotations

import contextlib
import gc
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from limen.rtp import (
    SUITES,
    RtcpReceiverReport,
    RtcpSenderReport,
    SrtpAuthError,
    SrtpContext,
    SrtpDirection,
    SrtpError,
    SrtpReplayError,
)
from limen.sdp import CryptoSuite, generate_key, parse_crypto

PATHS = [pytest.param(True, id="fast"), pytest.param(False, id="public")]
ALL = [
    pytest.param(suite, fast, id=f"{suite}-{'fast' if fast else 'public'}")
    for suite in CryptoSuite
    for fast in (True, False)
]
TAG = {
    CryptoSuite.AES_CM_128_HMAC_SHA1_80: 10,
    CryptoSuite.AES_CM_128_HMAC_SHA1_32: 4,
    CryptoSuite.AEAD_AES_128_GCM: 16,
    CryptoSuite.AEAD_AES_256_GCM: 16,
}
PROFILES = {
    CryptoSuite.AES_CM_128_HMAC_SHA1_80: Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    CryptoSuite.AES_CM_128_HMAC_SHA1_32: Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    CryptoSuite.AEAD_AES_128_GCM: Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    CryptoSuite.AEAD_AES_256_GCM: Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def rtp(seq: int, ssrc: int = 0x5EADBEEF, payload: bytes = b"\xd5" * 160) -> bytes:
    """A 172-byte G.711 packet (20 ms) by default."""
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc) + payload


def pair(suite: CryptoSuite, fast: bool) -> tuple[SrtpContext, SrtpContext]:
    key = generate_key(suite)
    return SrtpContext.outbound(suite, key, fast=fast), SrtpContext.inbound(suite, key, fast=fast)


def test_suites_match_sdes() -> None:
    assert set(SUITES) == {suite.value for suite in CryptoSuite}


@pytest.mark.parametrize(("suite", "fast"), ALL)
def test_round_trip(suite: CryptoSuite, fast: bool) -> None:
    tx, rx = pair(suite, fast)
    for seq in range(65530, 65546):  # across the 16-bit wrap (ROC increments)
        packet = rtp(seq)
        protected = tx.protect(packet)
        assert len(protected) == len(packet) + TAG[suite]
        assert protected[:12] == packet[:12]  # header in clear (RFC 3711 §3.1)
        assert protected[12:172] != packet[12:]
        assert rx.unprotect(protected) == packet


@pytest.mark.parametrize(("suite", "fast"), ALL)
def test_rtcp_round_trip(suite: CryptoSuite, fast: bool) -> None:
    tx, rx = pair(suite, fast)
    for n in range(3):
        report = bytes(RtcpSenderReport(0x5EADBEEF, n << 32, n * 160, n, n * 160))
        protected = tx.protect_rtcp(report)
        # SRTCP adds the E flag + 31-bit index (4 bytes) and the tag (RFC 3711 §3.4);
        # the _32 suite still uses an 80-bit tag for SRTCP (RFC 4568 §6.2.2).
        assert len(protected) == len(report) + 4 + max(TAG[suite], 10)
        assert rx.unprotect_rtcp(protected) == report


@pytest.mark.parametrize(("suite", "fast"), ALL)
def test_tampering_is_an_auth_error(suite: CryptoSuite, fast: bool) -> None:
    tx, rx = pair(suite, fast)
    protected = tx.protect(rtp(1))
    for index in (2, 20, len(protected) - 1):  # header, payload, tag
        tampered = bytearray(protected)
        tampered[index] ^= 0x01
        with pytest.raises(SrtpAuthError, match=r"^authentication failure$"):
            rx.unprotect(bytes(tampered))
    assert rx.unprotect(protected) == rtp(1)  # the real one still passes
    report = tx.protect_rtcp(bytes(RtcpReceiverReport(1)))
    with pytest.raises(SrtpAuthError):
        rx.unprotect_rtcp(report[:-1] + bytes([report[-1] ^ 0x80]))


@pytest.mark.parametrize(("suite", "fast"), ALL)
def test_wrong_key_is_an_auth_error(suite: CryptoSuite, fast: bool) -> None:
    tx = SrtpContext.outbound(suite, generate_key(suite), fast=fast)
    rx = SrtpContext.inbound(suite, generate_key(suite), fast=fast)
    with pytest.raises(SrtpAuthError):
        rx.unprotect(tx.protect(rtp(7)))


@pytest.mark.parametrize(("suite", "fast"), ALL)
def test_replay(suite: CryptoSuite, fast: bool) -> None:
    tx, rx = pair(suite, fast)
    packets = [tx.protect(rtp(seq)) for seq in range(300)]
    rx.unprotect(packets[0])
    with pytest.raises(SrtpReplayError, match=r"^replay check failed \(bad index\)$"):
        rx.unprotect(packets[0])
    rx.unprotect(packets[299])
    with pytest.raises(SrtpReplayError, match=r"^replay check failed \(index too old\)$"):
        rx.unprotect(packets[10])  # 289 behind, window 128
    rx.unprotect(packets[250])  # late but inside the window: fine
    report = tx.protect_rtcp(bytes(RtcpReceiverReport(1)))
    rx.unprotect_rtcp(report)
    with pytest.raises(SrtpReplayError):
        rx.unprotect_rtcp(report)


@pytest.mark.parametrize("fast", PATHS)
def test_repeated_sequence_on_protect(fast: bool) -> None:
    key = generate_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    tx = SrtpContext.outbound("AES_CM_128_HMAC_SHA1_80", key, fast=fast)
    tx.protect(rtp(5))
    with pytest.raises(SrtpReplayError):
        tx.protect(rtp(5))
    lenient = SrtpContext.outbound("AES_CM_128_HMAC_SHA1_80", key, fast=fast, allow_repeat_tx=True)
    assert lenient.protect(rtp(5)) == lenient.protect(rtp(5))


@pytest.mark.parametrize("fast", PATHS)
def test_replay_window_option(fast: bool) -> None:
    key = generate_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    tx = SrtpContext.outbound("AES_CM_128_HMAC_SHA1_80", key, fast=fast)
    rx = SrtpContext.inbound("AES_CM_128_HMAC_SHA1_80", key, fast=fast, replay_window=1024)
    packets = [tx.protect(rtp(seq)) for seq in range(600)]
    rx.unprotect(packets[599])
    assert rx.unprotect(packets[10]) == rtp(10)  # 589 behind: inside a 1024 window


@pytest.mark.parametrize(("suite", "fast"), ALL)
def test_interop_with_independent_pylibsrtp_session(suite: CryptoSuite, fast: bool) -> None:
    """Packets from a plain pylibsrtp Session (built from the SDES key) decrypt here, and
    ours decrypt there: same key layout, same profile."""
    attr_key = generate_key(suite)
    profile = PROFILES[suite]
    theirs_tx = Session(
        Policy(key=attr_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    theirs_rx = Session(
        Policy(key=attr_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    ours_rx = SrtpContext.inbound(suite, attr_key, fast=fast)
    ours_tx = SrtpContext.outbound(suite, attr_key, fast=fast)
    for seq in range(3):
        assert ours_rx.unprotect(theirs_tx.protect(rtp(seq))) == rtp(seq)
        assert theirs_rx.unprotect(ours_tx.protect(rtp(seq, ssrc=1))) == rtp(seq, ssrc=1)


@pytest.mark.parametrize("fast", PATHS)
def test_known_answer_aes_cm(fast: bool) -> None:
    """libsrtp's own validation vector (test/srtp_driver.c, srtp_validate)."""
    key = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
    plaintext = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
    ciphertext = bytes.fromhex(
        "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
    )
    assert (
        SrtpContext.outbound("AES_CM_128_HMAC_SHA1_80", key, fast=fast).protect(plaintext)
        == ciphertext
    )
    assert (
        SrtpContext.inbound("AES_CM_128_HMAC_SHA1_80", key, fast=fast).unprotect(ciphertext)
        == plaintext
    )


@pytest.mark.parametrize("fast", PATHS)
def test_known_answer_aes_gcm(fast: bool) -> None:
    """libsrtp's AEAD_AES_128_GCM validation vector (srtp_validate_aes_gcm): 16-byte key +
    12-byte salt, exactly the RFC 7714 SDES inline layout."""
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0fa0a1a2a3a4a5a6a7a8a9aaab")
    plaintext = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
    ciphertext = bytes.fromhex(
        "800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392"
    )
    assert SrtpContext.outbound("AEAD_AES_128_GCM", key, fast=fast).protect(plaintext) == ciphertext
    assert (
        SrtpContext.inbound("AEAD_AES_128_GCM", key, fast=fast).unprotect(ciphertext) == plaintext
    )


def test_sdes_attribute_to_context() -> None:
    """The key as written in a=crypto (base64 key||salt) is what the context takes."""
    attr = parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm")
    assert attr.key_salt.hex() == "e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6"
    context = SrtpContext.inbound(attr.suite, attr.key_salt)
    assert context.unprotect(
        bytes.fromhex(
            "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
        )
    ) == bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", SrtpError),
        (b"\x80", SrtpError),
        (b"\x80\x08\x00\x01", SrtpError),
        (rtp(1)[:12], SrtpError),
        (b"\x90" + rtp(1)[1:12], SrtpError),  # extension bit, no extension
        (bytes(3000), SrtpError),
    ],
)
def test_malformed_srtp(fast: bool, data: bytes, error: type[SrtpError]) -> None:
    _, rx = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80, fast)
    with pytest.raises(error):
        rx.unprotect(data)
    with pytest.raises(SrtpError):
        rx.unprotect_rtcp(data[:7])


@pytest.mark.parametrize("fast", PATHS)
def test_too_long_is_refused_both_ways(fast: bool) -> None:
    tx, rx = pair(CryptoSuite.AES_CM_128_HMAC_SHA1_80, fast)
    with pytest.raises(SrtpError, match="too long"):
        tx.protect(rtp(1, payload=bytes(2100)))
    assert rx.unprotect(tx.protect(rtp(1, payload=bytes(1300)))) == rtp(1, payload=bytes(1300))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="unsupported SRTP suite"):
        SrtpContext.inbound("F8_128_HMAC_SHA1_80", bytes(30))
    with pytest.raises(ValueError, match="needs a 28-byte master key and salt"):
        SrtpContext.inbound("AEAD_AES_128_GCM", bytes(30))
    with pytest.raises(ValueError, match="replay window"):
        SrtpContext.inbound("AEAD_AES_128_GCM", bytes(28), replay_window=10)


def test_direction_is_enforced() -> None:
    tx, rx = pair(CryptoSuite.AEAD_AES_256_GCM, True)
    assert tx.direction is SrtpDirection.OUTBOUND and rx.direction is SrtpDirection.INBOUND
    assert repr(rx) == "<SrtpContext inbound AEAD_AES_256_GCM>"
    with pytest.raises(RuntimeError, match="cannot be used outbound"):
        rx.protect(rtp(1))
    with pytest.raises(RuntimeError, match="cannot be used inbound"):
        tx.unprotect(rtp(1))
    with pytest.raises(RuntimeError):
        rx.protect_rtcp(rtp(1))
    with pytest.raises(RuntimeError):
        tx.unprotect_rtcp(rtp(1))


def test_independent_keys_per_side() -> None:
    """The bridge: phone-side key in, PBX-side key out; neither decrypts the other."""
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    phone_key, pbx_key = generate_key(suite), generate_key(suite)
    phone_tx = SrtpContext.outbound(suite, phone_key)
    relay_in = SrtpContext.inbound(suite, phone_key)
    relay_out = SrtpContext.outbound(suite, pbx_key)
    pbx_rx = SrtpContext.inbound(suite, pbx_key)
    wire = phone_tx.protect(rtp(1))
    forwarded = relay_out.protect(relay_in.unprotect(wire))
    assert forwarded != wire
    assert pbx_rx.unprotect(forwarded) == rtp(1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_unprotect_raises_only_srtp_errors(data: bytes, fast: bool) -> None:
    rx = SrtpContext.inbound("AES_CM_128_HMAC_SHA1_80", bytes(30), fast=fast)
    for unprotect in (rx.unprotect, rx.unprotect_rtcp):
        with contextlib.suppress(SrtpError):
            unprotect(data)


def test_operations_outlive_the_context() -> None:
    """The relay may keep only the bound operations; libsrtp state must stay alive."""
    key = generate_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80)
    protect = SrtpContext.outbound(CryptoSuite.AES_CM_128_HMAC_SHA1_80, key).protect
    unprotect = SrtpContext.inbound(CryptoSuite.AES_CM_128_HMAC_SHA1_80, key).unprotect
    gc.collect()
    for seq in range(50):
        assert unprotect(protect(rtp(seq))) == rtp(seq)
