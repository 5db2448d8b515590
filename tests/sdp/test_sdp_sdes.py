"""SDES a=crypto (RFC 4568) with the RFC 7714 AEAD suites."""

from __future__ import annotations

import base64

import pytest

from limen.sdp import (
    SUPPORTED_SUITES,
    CryptoAttribute,
    CryptoSuite,
    KeyParams,
    SdpParseError,
    accepted_crypto,
    answer_crypto,
    choose_crypto,
    generate_crypto,
    generate_key,
    offer_crypto,
    parse_crypto,
)

KEY30 = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568 §4 example key


def test_rfc4568_example() -> None:
    """RFC 4568 §4's example attribute, with lifetime and MKI."""
    attr = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4")
    assert attr.tag == 1
    assert attr.crypto_suite is CryptoSuite.AES_CM_128_HMAC_SHA1_80
    assert attr.keys == (KeyParams(base64.b64decode(KEY30), 2**20, 1, 4),)
    assert str(attr) == f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4"
    assert not attr.is_usable()  # MKI: pylibsrtp cannot do it


@pytest.mark.parametrize(
    ("value", "lifetime", "mki"),
    [
        (f"inline:{KEY30}", None, None),
        (f"inline:{KEY30}|2^31", 2**31, None),
        (f"inline:{KEY30}|1000", 1000, None),
        (f"inline:{KEY30}|1:4", None, (1, 4)),
        (f"INLINE:{KEY30}|2^48|255:1", 2**48, (255, 1)),
    ],
)
def test_key_params(value: str, lifetime: int | None, mki: tuple[int, int] | None) -> None:
    key = KeyParams.parse(value)
    assert key.key_salt == base64.b64decode(KEY30)
    assert key.lifetime == lifetime
    assert (key.mki, key.mki_length) == (mki or (None, None))


def test_session_params_and_several_keys() -> None:
    attr = parse_crypto(
        f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|2^20|1:4;inline:{KEY30}|2^20|2:4 "
        "KDR=1 UNENCRYPTED_SRTCP"
    )
    assert len(attr.keys) == 2
    assert attr.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert not attr.is_usable()
    assert str(attr).endswith(" KDR=1 UNENCRYPTED_SRTCP")


def test_usable_rules() -> None:
    assert parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}").is_usable()
    assert parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} WSH=128").is_usable()
    assert not parse_crypto(
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} FEC_ORDER=FEC_SRTP"
    ).is_usable()
    assert not parse_crypto(f"1 F8_128_HMAC_SHA1_80 inline:{KEY30}").is_usable()
    assert not parse_crypto(f"1 AEAD_AES_128_GCM inline:{KEY30}").is_usable()  # 30 != 28
    assert not parse_crypto(f"1 aes_cm_128_hmac_sha1_80 inline:{KEY30}").is_usable()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "crypto attribute needs tag, suite and key params"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:AAAA", "invalid crypto tag: 'x'"),
        ("1234567890 S inline:AAAA", "crypto tag out of range: '1234567890'"),
        ("1 S uri:https://example.com", "unsupported key method: 'uri:https://example.com'"),
        ("1 S inline:AA*A", "invalid base64 key: 'AA*A'"),
        ("1 S inline:A", "invalid base64 key: 'A'"),
        ("1 S inline:AAAA|1|2|3", "invalid key params: 'inline:AAAA|1|2|3'"),
        ("1 S inline:AAAA|1:4|2^20", "invalid key params: 'inline:AAAA|1:4|2^20'"),
        ("1 S inline:AAAA|2^x", "invalid key lifetime exponent: 'x'"),
        ("1 S inline:AAAA|1:0", "invalid MKI length: 'inline:AAAA|1:0'"),
        ("1 S inline:AAAA|1:200", "MKI length out of range: '200'"),
        ("1 S inline:AAAA|1000|2000", "invalid key params: 'inline:AAAA|1000|2000'"),
    ],
)
def test_invalid(value: str, message: str) -> None:
    with pytest.raises(SdpParseError) as info:
        parse_crypto(value)
    assert message in info.value.reason


@pytest.mark.parametrize("suite", list(CryptoSuite))
def test_suite_lengths_and_generation(suite: CryptoSuite) -> None:
    expected = {
        CryptoSuite.AES_CM_128_HMAC_SHA1_80: (16, 14, 10),
        CryptoSuite.AES_CM_128_HMAC_SHA1_32: (16, 14, 4),
        CryptoSuite.AEAD_AES_128_GCM: (16, 12, 16),  # RFC 7714 §12: 96-bit salt
        CryptoSuite.AEAD_AES_256_GCM: (32, 12, 16),
    }[suite]
    assert (suite.key_length, suite.salt_length, suite.srtp_tag_length) == expected
    key = generate_key(suite)
    assert len(key) == suite.master_length == expected[0] + expected[1]
    assert generate_key(suite) != key
    attr = generate_crypto(7, suite)
    assert attr.is_usable() and attr.tag == 7 and attr.suite == suite.value
    again = parse_crypto(str(attr))
    assert again == attr
    assert again.key_salt == attr.key_salt


def test_create_checks() -> None:
    with pytest.raises(ValueError, match="needs 30 bytes"):
        CryptoAttribute.create(1, CryptoSuite.AES_CM_128_HMAC_SHA1_80, bytes(28))
    with pytest.raises(ValueError, match="tag out of range"):
        CryptoAttribute.create(-1, CryptoSuite.AEAD_AES_128_GCM, bytes(28))
    attr = CryptoAttribute.create(1, CryptoSuite.AEAD_AES_128_GCM, bytes(28), lifetime=2**31)
    assert str(attr) == "1 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==|2^31"


def test_padding_optional_on_input() -> None:
    padded = generate_crypto(1, CryptoSuite.AEAD_AES_128_GCM)
    text = str(padded)
    assert text.endswith("==")
    assert parse_crypto(text.rstrip("=")) == padded


def test_offer_crypto() -> None:
    offer = offer_crypto()
    assert [(a.tag, a.crypto_suite) for a in offer] == list(enumerate(SUPPORTED_SUITES, start=1))
    assert len({a.key_salt for a in offer}) == 4
    only = offer_crypto([CryptoSuite.AES_CM_128_HMAC_SHA1_80])
    assert [a.suite for a in only] == ["AES_CM_128_HMAC_SHA1_80"]


def _offer(*suites: str) -> list[CryptoAttribute]:
    lengths = {"AEAD_AES_128_GCM": 28, "AEAD_AES_256_GCM": 44}
    return [
        CryptoAttribute(tag, suite, (KeyParams(bytes(lengths.get(suite, 30))),))
        for tag, suite in enumerate(suites, start=1)
    ]


def test_choose_offer_order_by_default() -> None:
    offered = _offer("F8_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_256_GCM")
    assert choose_crypto(offered) == offered[1]
    assert choose_crypto(offered, our_preference=True) == offered[2]
    assert choose_crypto(offered, [CryptoSuite.AES_CM_128_HMAC_SHA1_80]) is None
    assert choose_crypto([]) is None


def test_answer_crypto_uses_tag_and_suite_with_fresh_key() -> None:
    offered = _offer("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    result = answer_crypto(offered)
    assert result is not None
    chosen, ours = result
    assert chosen is offered[0]
    assert (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert ours.key_salt != chosen.key_salt and len(ours.key_salt) == 30
    assert answer_crypto(_offer("NULL_HMAC_SHA1_80")) is None


def test_accepted_crypto_matches_answer_to_offer() -> None:
    offer = offer_crypto()
    answer = [CryptoAttribute.create(3, CryptoSuite.AES_CM_128_HMAC_SHA1_80, bytes(30))]
    assert accepted_crypto(offer, answer) == (offer[2], answer[0])
    wrong_tag = [CryptoAttribute.create(2, CryptoSuite.AES_CM_128_HMAC_SHA1_80, bytes(30))]
    assert accepted_crypto(offer, wrong_tag) is None
    assert accepted_crypto(offer, []) is None
    assert accepted_crypto(offer, answer * 2) is None
