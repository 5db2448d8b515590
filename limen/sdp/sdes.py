"""SDES key exchange in SDP: the ``a=crypto`` attribute (RFC 4568), with the AEAD suites of
RFC 7714.

- Grammar (RFC 4568 §9.1): ``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]``;
  key-params ``inline:<base64 key||salt>[|<lifetime>][|<MKI>:<MKI length>]``, several joined
  by ``;`` (§6.1, §9.2); lifetime decimal or ``2^n``.
- Suites and master key/salt lengths (RFC 4568 §6.2, RFC 7714 §12): AES_CM_128_HMAC_SHA1_80
  and _32: 16-byte key + 14-byte salt; AEAD_AES_128_GCM: 16 + 12; AEAD_AES_256_GCM: 32 + 12.
  The inline value is key then salt concatenated, which is exactly the master key libsrtp
  (and so pylibsrtp) takes for each profile.
- Offer/answer (RFC 4568 §7.1): the answerer picks one offered attribute it supports and
  answers with the same tag and suite and its *own* key (each side keys what it sends;
  §6.1). :func:`answer_crypto` does that.

What we accept (:meth:`CryptoAttribute.is_usable`): a known suite, exactly one key with the
right length, no MKI, and no session parameters other than the advisory ``WSH`` (§6.3.7).
pylibsrtp exposes neither MKI nor KDR/UNENCRYPTED_*/FEC session parameters, and §6.3 says an
attribute with parameters we do not implement must not be chosen; the offerer normally lists
a plain alternative.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from limen.sdp.errors import SdpParseError
from limen.sdp.fields import parse_uint

_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")
_MAX_TAG = 999_999_999  # RFC 4568 §9.1: tag = 1*9DIGIT


class CryptoSuite(enum.StrEnum):
    """The SRTP crypto suites Limen implements (names as written in ``a=crypto``)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"
    AEAD_AES_256_GCM = "AEAD_AES_256_GCM"

    @property
    def key_length(self) -> int:
        """Master key length in bytes."""
        return 32 if self is CryptoSuite.AEAD_AES_256_GCM else 16

    @property
    def salt_length(self) -> int:
        """Master salt length in bytes (RFC 7714 §12: 96-bit salt for the AEAD suites)."""
        return 12 if self.is_aead else 14

    @property
    def master_length(self) -> int:
        """Length of the inline key||salt value, and of the key pylibsrtp expects."""
        return self.key_length + self.salt_length

    @property
    def is_aead(self) -> bool:
        return self in (CryptoSuite.AEAD_AES_128_GCM, CryptoSuite.AEAD_AES_256_GCM)

    @property
    def srtp_tag_length(self) -> int:
        """Bytes of tag SRTP adds to each RTP packet: 10 or 4 (HMAC), 16 (GCM).

        SRTCP always uses the 80-bit tag with the HMAC suites (RFC 4568 §6.2.2).
        """
        if self.is_aead:
            return 16
        return 4 if self is CryptoSuite.AES_CM_128_HMAC_SHA1_32 else 10


# Strongest first. What we offer and how we rank when asked to choose by our preference.
SUPPORTED_SUITES: tuple[CryptoSuite, ...] = (
    CryptoSuite.AEAD_AES_256_GCM,
    CryptoSuite.AEAD_AES_128_GCM,
    CryptoSuite.AES_CM_128_HMAC_SHA1_80,
    CryptoSuite.AES_CM_128_HMAC_SHA1_32,
)

_KNOWN = {suite.value: suite for suite in CryptoSuite}


def _decode_base64(text: str) -> bytes:
    # Senders differ on '=' padding (30-byte AES_CM keys need none, 28/44-byte GCM keys do);
    # accept both.
    if not _BASE64_RE.match(text):
        raise SdpParseError(f"invalid base64 key: {text!r}")
    padded = text.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise SdpParseError(f"invalid base64 key: {text!r}") from None


def _parse_lifetime(text: str) -> int:
    if text.startswith("2^"):
        return 1 << parse_uint(text[2:], "key lifetime exponent", 64)
    return parse_uint(text, "key lifetime")


def _format_lifetime(lifetime: int) -> str:
    if lifetime > 1 and lifetime & (lifetime - 1) == 0:
        return f"2^{lifetime.bit_length() - 1}"
    return str(lifetime)


@dataclass(frozen=True, slots=True)
class KeyParams:
    """One ``inline:`` key-param: the master key||salt, optional lifetime and MKI."""

    key_salt: bytes
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None

    @classmethod
    def parse(cls, text: str) -> KeyParams:
        method, sep, info = text.partition(":")
        if not sep or method.lower() != "inline":
            raise SdpParseError(f"unsupported key method: {text!r}")
        key_text, *extras = info.split("|")
        if len(extras) > 2:
            raise SdpParseError(f"invalid key params: {text!r}")
        lifetime = mki = mki_length = None
        for index, extra in enumerate(extras):
            if ":" in extra:  # MKI:length, always last (§9.2)
                if index != len(extras) - 1:
                    raise SdpParseError(f"invalid key params: {text!r}")
                mki_text, _, length_text = extra.partition(":")
                mki = parse_uint(mki_text, "MKI")
                mki_length = parse_uint(length_text, "MKI length", 128)
                if mki_length == 0:
                    raise SdpParseError(f"invalid MKI length: {text!r}")
            elif index == 0:
                lifetime = _parse_lifetime(extra)
            else:
                raise SdpParseError(f"invalid key params: {text!r}")
        return cls(_decode_base64(key_text), lifetime, mki, mki_length)

    def __str__(self) -> str:
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            text += "|" + _format_lifetime(self.lifetime)
        if self.mki is not None:
            text += f"|{self.mki}:{self.mki_length}"
        return text


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """An ``a=crypto`` attribute value (RFC 4568 §9.1)."""

    tag: int
    suite: str
    keys: tuple[KeyParams, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        parts = value.split()
        if len(parts) < 3:
            raise SdpParseError(f"crypto attribute needs tag, suite and key params: {value!r}")
        tag_text, suite, key_text, *session_params = parts
        tag = parse_uint(tag_text, "crypto tag", _MAX_TAG)
        keys = tuple(KeyParams.parse(item) for item in key_text.split(";"))
        return cls(tag, suite, keys, tuple(session_params))

    @classmethod
    def create(
        cls, tag: int, suite: CryptoSuite, key_salt: bytes, *, lifetime: int | None = None
    ) -> CryptoAttribute:
        if len(key_salt) != suite.master_length:
            raise ValueError(f"{suite} needs {suite.master_length} bytes of key and salt")
        if not 0 <= tag <= _MAX_TAG:
            raise ValueError(f"crypto tag out of range: {tag}")
        return cls(tag, suite.value, (KeyParams(key_salt, lifetime),))

    @property
    def crypto_suite(self) -> CryptoSuite | None:
        """The suite if we implement it (suite names are case-sensitive, §9.1)."""
        return _KNOWN.get(self.suite)

    @property
    def key_salt(self) -> bytes:
        """The first key's master key||salt: what :class:`limen.rtp.SrtpContext` takes."""
        return self.keys[0].key_salt

    def is_usable(self) -> bool:
        """Whether we can run SRTP with this attribute (see the module docstring)."""
        suite = self.crypto_suite
        if suite is None or len(self.keys) != 1:
            return False
        key = self.keys[0]
        if key.mki is not None or len(key.key_salt) != suite.master_length:
            return False
        return all(param.startswith("WSH=") for param in self.session_params)

    def __str__(self) -> str:
        keys = ";".join(str(key) for key in self.keys)
        return " ".join((str(self.tag), self.suite, keys, *self.session_params))


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an ``a=crypto`` value (the text after ``a=crypto:``)."""
    return CryptoAttribute.parse(value)


def generate_key(suite: CryptoSuite) -> bytes:
    """A fresh random master key||salt for ``suite`` (``secrets``: the OS CSPRNG)."""
    return secrets.token_bytes(suite.master_length)


def generate_crypto(tag: int, suite: CryptoSuite) -> CryptoAttribute:
    """An ``a=crypto`` attribute with a fresh key."""
    return CryptoAttribute.create(tag, suite, generate_key(suite))


def offer_crypto(suites: Iterable[CryptoSuite] = SUPPORTED_SUITES) -> list[CryptoAttribute]:
    """Attributes for an SDES offer: one per suite, tags 1, 2 ..., each with its own key."""
    return [generate_crypto(tag, suite) for tag, suite in enumerate(suites, start=1)]


def choose_crypto(
    offered: Iterable[CryptoAttribute],
    supported: Sequence[CryptoSuite] = SUPPORTED_SUITES,
    *,
    our_preference: bool = False,
) -> CryptoAttribute | None:
    """The offered attribute to accept, or None if none is usable.

    By default the offerer's order wins (RFC 4568 §7.1.1: offers list attributes in order of
    preference; rtpengine does the same). With ``our_preference`` the best suite by the order
    of ``supported`` is chosen; the first offered attribute of that suite wins.
    """
    usable = [attr for attr in offered if attr.is_usable() and attr.crypto_suite in supported]
    if not usable:
        return None
    if our_preference:
        return min(usable, key=lambda attr: supported.index(attr.suite))
    return usable[0]


def answer_crypto(
    offered: Iterable[CryptoAttribute],
    supported: Sequence[CryptoSuite] = SUPPORTED_SUITES,
    *,
    our_preference: bool = False,
) -> tuple[CryptoAttribute, CryptoAttribute] | None:
    """(the accepted offered attribute, our answer attribute with a fresh key), or None.

    The answer keeps the offer's tag and suite (RFC 4568 §7.1.2). The accepted attribute's
    key decrypts what the offerer sends; ours encrypts what we send to it.
    """
    chosen = choose_crypto(offered, supported, our_preference=our_preference)
    if chosen is None:
        return None
    suite = chosen.crypto_suite
    assert suite is not None  # is_usable() checked it
    return chosen, CryptoAttribute.create(chosen.tag, suite, generate_key(suite))


def accepted_crypto(
    offered: Iterable[CryptoAttribute], answered: Iterable[CryptoAttribute]
) -> tuple[CryptoAttribute, CryptoAttribute] | None:
    """Match an answer to the offer we sent: (our offered attribute, their answer), or None.

    RFC 4568 §7.1.3: the answer carries exactly one attribute whose tag and suite must match
    an offered one; anything else means SRTP was not negotiated.
    """
    answers = [attr for attr in answered if attr.is_usable()]
    if len(answers) != 1:
        return None
    answer = answers[0]
    for attr in offered:
        if attr.tag == answer.tag and attr.suite == answer.suite:
            return attr, answer
    return None
