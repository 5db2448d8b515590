"""SIP digest access authentication, both sides, sans-IO.

Implements:

- RFC 7616 §3.3 (challenge: WWW-Authenticate / Proxy-Authenticate values), §3.4 (credentials:
  Authorization / Proxy-Authorization values), §3.4.1 (response), §3.4.2 (A1 and the ``-sess``
  variants), §3.4.3 (A2, ``auth-int``), §3.4.4 (userhash), §3.4.4/RFC 8187 (``username*``
  on input), §3.5 (``stale``), §3.9 (worked examples, used by the tests), §5.4/§5.5
  (limited-use nonces, replay protection through the nonce count).
- RFC 2617 §3.2.2.1 / RFC 2069: responses without ``qop``, which RFC 3261 §22.4 still
  requires a server to accept.
- RFC 3261 §22.4 (SIP use of digest), §25.1 (token, quoted-string grammar).
- RFC 8760 §2.1-§2.4 (SHA-256 and SHA-512-256 in SIP, several challenges in preference
  order, how a client picks one).

Nothing here reads a clock or touches a socket: the caller passes ``now`` (seconds; wall-clock
time if nonces must survive a restart). Everything that parses network input raises
:class:`~limen.sip.errors.SipParseError` and nothing else; misuse by our own code raises
:class:`~limen.sip.errors.SipUsageError`.

Deviations (written down where they happen, too):

- Passwords and usernames are always hashed as UTF-8 (SIP is UTF-8, RFC 3261 §25.1); there is
  no ISO-8859-1 fallback and no PRECIS normalisation (RFC 7616 §4).
- Parsing is lenient where lenience costs nothing: unquoted values where RFC 7616 wants
  quoted ones (and the reverse), empty list elements, any case for parameter names.
- ``Authentication-Info`` (RFC 7616 §3.5 ``rspauth``/``nextnonce``) is not produced.
- The ``uri`` check is an exact string comparison, not RFC 3261 §19.1.4 URI equality; the
  caller may normalise first.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import struct
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from limen.sip.errors import SipParseError, SipUsageError
from limen.sip.grammar import MAX_PARAMS

__all__ = [
    "DigestAlgorithm",
    "DigestChallenge",
    "DigestCredentials",
    "DigestServer",
    "VerifyResult",
    "answer_challenge",
    "compute_ha1",
    "compute_response",
    "compute_session_ha1",
    "compute_userhash",
    "format_challenge",
    "format_credentials",
    "parse_challenge",
    "parse_credentials",
    "select_challenge",
]


# --------------------------------------------------------------------------------------------
# Algorithms (RFC 7616 §3.2, §6.1 registry; RFC 8760 §2.1)
# --------------------------------------------------------------------------------------------


def _sha512_256_available() -> bool:
    # SHA-512/256 comes from OpenSSL through hashlib; every maintained OpenSSL has it, but a
    # build without it must not break import: the algorithm is then simply "unsupported".
    try:
        hashlib.new("sha512_256")
    except ValueError:
        return False
    return True


_HAVE_SHA512_256 = _sha512_256_available()


class DigestAlgorithm(enum.Enum):
    """The digest algorithms we implement, by their registered names (RFC 7616 §6.1)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"
    SHA_512_256 = "SHA-512-256"
    SHA_512_256_SESS = "SHA-512-256-sess"

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants, whose A1 also covers nonce and cnonce (§3.4.2)."""
        return self.value.endswith("-sess")

    @property
    def hashlib_name(self) -> str:
        base = self.value.removesuffix("-sess")
        return {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[base]

    @property
    def strength(self) -> int:
        """Client preference rank (RFC 8760 §2.4 local policy): SHA-512-256 > SHA-256 > MD5."""
        return {"md5": 1, "sha256": 2, "sha512_256": 3}[self.hashlib_name]

    @property
    def available(self) -> bool:
        return self.hashlib_name != "sha512_256" or _HAVE_SHA512_256

    @classmethod
    def from_name(cls, name: str) -> DigestAlgorithm | None:
        """The algorithm a (case-insensitive) ``algorithm=`` value names, or None if unknown
        or not available in this Python build."""
        # ASCII-only: str.lower() maps some non-ASCII letters onto ASCII ones.
        if not name.isascii():
            return None
        for alg in cls:
            if alg.value.lower() == name.lower():
                return alg if alg.available else None
        return None


def _to_algorithm(algorithm: DigestAlgorithm | str) -> DigestAlgorithm:
    if isinstance(algorithm, DigestAlgorithm):
        if not algorithm.available:
            raise SipUsageError(f"digest algorithm {algorithm.value} is not available")
        return algorithm
    alg = DigestAlgorithm.from_name(algorithm)
    if alg is None:
        raise SipUsageError(f"unsupported digest algorithm {algorithm!r}")
    return alg


def _utf8(text: str) -> bytes:
    # Parsed values never hold lone surrogates (the parsers reject them); "surrogatepass"
    # only keeps a hand-built value from raising UnicodeEncodeError in the middle of a hash.
    return text.encode("utf-8", "surrogatepass")


def _h(alg: DigestAlgorithm, data: str | bytes) -> str:
    """H(data): lowercase hex digest (RFC 7616 §3.2, RFC 8760 §2.2)."""
    raw = _utf8(data) if isinstance(data, str) else data
    return hashlib.new(alg.hashlib_name, raw).hexdigest()


def _kd(alg: DigestAlgorithm, secret: str, data: str) -> str:
    """KD(secret, data) = H(concat(secret, ":", data)) (RFC 7616 §3.2)."""
    return _h(alg, f"{secret}:{data}")


# --------------------------------------------------------------------------------------------
# Hashing (RFC 7616 §3.4.1-§3.4.4)
# --------------------------------------------------------------------------------------------


def compute_session_ha1(
    ha1: str, algorithm: DigestAlgorithm | str, *, nonce: str, cnonce: str
) -> str:
    """Turn H(username:realm:password) into the ``-sess`` HA1 (RFC 7616 §3.4.2).

    A1 = H(username:realm:password) ":" nonce ":" cnonce, so a server that stores only the
    plain HA1 can still check ``-sess`` responses. For non-session algorithms this returns
    ``ha1`` unchanged.
    """
    alg = _to_algorithm(algorithm)
    if not alg.is_session:
        return ha1
    return _h(alg, f"{ha1}:{nonce}:{cnonce}")


def compute_ha1(
    username: str,
    realm: str,
    password: str,
    algorithm: DigestAlgorithm | str = DigestAlgorithm.MD5,
    *,
    nonce: str | None = None,
    cnonce: str | None = None,
) -> str:
    """H(A1) (RFC 7616 §3.4.2); ``nonce`` and ``cnonce`` are required for ``-sess``."""
    alg = _to_algorithm(algorithm)
    ha1 = _h(alg, f"{username}:{realm}:{password}")
    if alg.is_session:
        if nonce is None or cnonce is None:
            raise SipUsageError(f"{alg.value} needs nonce and cnonce")
        return compute_session_ha1(ha1, alg, nonce=nonce, cnonce=cnonce)
    return ha1


def compute_userhash(username: str, realm: str, algorithm: DigestAlgorithm | str) -> str:
    """The hashed username H(username:realm) sent when ``userhash=true`` (RFC 7616 §3.4.4)."""
    return _h(_to_algorithm(algorithm), f"{username}:{realm}")


def compute_response(
    ha1: str,
    *,
    algorithm: DigestAlgorithm | str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1), from the effective HA1.

    ``ha1`` is what :func:`compute_ha1` returns (already the ``-sess`` form where that
    applies). ``qop`` None is the RFC 2069 form KD(HA1, nonce:HA2), kept because RFC 3261
    §22.4 requires servers to accept it; ``qop`` and ``nc`` are hashed exactly as sent.
    """
    alg = _to_algorithm(algorithm)
    if qop is not None and qop.lower() == "auth-int":
        # RFC 7616 §3.4.3: A2 = Method:request-uri:H(entity-body); an empty SIP body hashes
        # as H("") (RFC 3261 §22.4).
        ha2 = _h(alg, f"{method}:{uri}:{_h(alg, body)}")
    else:
        ha2 = _h(alg, f"{method}:{uri}")
    if qop is None:
        return _kd(alg, ha1, f"{nonce}:{ha2}")
    if qop.lower() not in ("auth", "auth-int"):
        raise SipUsageError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise SipUsageError("qop requires nc and cnonce")
    return _kd(alg, ha1, f"{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------------------------
# Parsed values
# --------------------------------------------------------------------------------------------


def _frozen_params(params: Mapping[str, str]) -> Mapping[str, str]:
    # Names are case-insensitive (RFC 7235 §2.1); store them lowercased, read-only.
    lowered = {name.lower(): value for name, value in params.items()}
    if len(lowered) != len(params):
        raise SipUsageError("auth-param names differ only in case")
    return MappingProxyType(lowered)


@dataclass(frozen=True)
class DigestChallenge:
    """A ``Digest`` challenge (RFC 7616 §3.3).

    ``params`` holds the auth-params this module does not know (names lowercased, values
    unquoted); known ones live in their fields only.
    """

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = DigestAlgorithm.MD5.value  # absent means MD5 (RFC 7616 §3.3)
    qop: tuple[str, ...] = ()  # the qop options offered, in the server's order
    stale: bool = False
    domain: tuple[str, ...] = ()  # space-separated URI list (RFC 7616 §3.3)
    userhash: bool = False
    charset: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_params(self.params))


@dataclass(frozen=True)
class DigestCredentials:
    """``Digest`` credentials (RFC 7616 §3.4); ``params`` as in :class:`DigestChallenge`."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = DigestAlgorithm.MD5.value
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None  # 8 hex digits, kept as sent because it is hashed as sent
    userhash: bool = False
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_params(self.params))

    @property
    def nc_value(self) -> int | None:
        """The nonce count as a number (``nc`` was checked to be hex at parse time)."""
        if self.nc is None:
            return None
        return _parse_nc(self.nc)


# --------------------------------------------------------------------------------------------
# Lexing (RFC 3261 §25.1, RFC 7235 §2.1 auth-param)
# --------------------------------------------------------------------------------------------

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WS = " \t"
_HEX = frozenset("0123456789abcdefABCDEF")


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


# Runs scanned in one C-level step each (possessive, so linear on any input): a header
# of 60 KB costs a handful of calls, not a Python iteration per character.
_WS_RE = re.compile(r"[ \t]*+")
_SEPARATORS_RE = re.compile(r"[ \t,]*+")
_TOKEN_RUN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]*+")
# Unquoted values end at whitespace, a comma or a quote. We accept more than a token
# there (broken UAs send uri=sip:... or base64 opaque values unquoted).
_UNQUOTED_RUN_RE = re.compile(r'[^,"\x00-\x20\x7f]*+')
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE, with no CR or LF anywhere.
_QUOTED_BODY_RE = re.compile(r'(?:[^"\\\r\n]++|\\[^\r\n])*+')
_QUOTED_STRING_RE = re.compile(r'"((?:[^"\\\r\n]++|\\[^\r\n])*+)"')
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


def _run_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where the run of ``pattern`` (which may match empty) starting at ``pos`` ends."""
    m = pattern.match(text, pos)
    return pos if m is None else m.end()


def _skip_ws(text: str, pos: int) -> int:
    return _run_end(_WS_RE, text, pos)


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Unquote the quoted-string opening at ``text[pos]`` (RFC 3261 §25.1 quoted-pair)."""
    m = _QUOTED_STRING_RE.match(text, pos)
    if m is None:
        # Say why: the body stops at the first character it may not hold.
        body = _QUOTED_BODY_RE.match(text, pos + 1)
        end = pos + 1 if body is None else body.end()
        if end < len(text) and (text[end] in "\r\n" or text[end + 1 : end + 2] in ("\r", "\n")):
            raise SipParseError("CR or LF inside a quoted string")
        raise SipParseError("unterminated quoted string")
    inner = m.group(1)
    if "\\" in inner:
        inner = _QUOTED_PAIR_RE.sub(r"\1", inner)
    return inner, m.end()


def _split_scheme(value: str) -> str:
    """Check the scheme is Digest (case-insensitive, RFC 7235 §2.1) and return the rest."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SipParseError("header value is not valid Unicode text") from None
    start = _skip_ws(value, 0)
    pos = _run_end(_TOKEN_RUN_RE, value, start)
    scheme = value[start:pos]
    if not scheme:
        raise SipParseError("missing authentication scheme")
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported authentication scheme {scheme!r}")
    if pos < len(value) and value[pos] not in _WS:
        raise SipParseError("expected whitespace after the Digest scheme")
    return value[pos:]


def _parse_params(text: str) -> dict[str, tuple[str, bool]]:
    """auth-params as ``{lowercased name: (unquoted value, was_quoted)}``.

    Empty list elements are skipped (RFC 7230 §7 asks recipients to accept them);
    a repeated name is an error (RFC 7235 §2.1: each parameter name MUST only occur once).
    """
    params: dict[str, tuple[str, bool]] = {}
    pos = 0
    n = len(text)
    while True:
        pos = _run_end(_SEPARATORS_RE, text, pos)  # whitespace and empty elements
        if pos >= n:
            return params
        if len(params) >= MAX_PARAMS:
            raise SipParseError("too many auth-params")
        start = pos
        pos = _run_end(_TOKEN_RUN_RE, text, pos)
        if pos == start:
            raise SipParseError(f"expected an auth-param name at offset {start}")
        name = text[start:pos].lower()
        pos = _skip_ws(text, pos)
        if pos >= n or text[pos] != "=":
            raise SipParseError(f"expected '=' after auth-param {name!r}")
        pos = _skip_ws(text, pos + 1)
        if pos < n and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
            quoted = True
        else:
            start = pos
            pos = _run_end(_UNQUOTED_RUN_RE, text, pos)
            if pos == start:
                raise SipParseError(f"empty value for auth-param {name!r}")
            value, quoted = text[start:pos], False
        if name in params:
            raise SipParseError(f"auth-param {name!r} appears twice")
        params[name] = (value, quoted)
        pos = _skip_ws(text, pos)
        if pos < n and text[pos] != ",":
            raise SipParseError(f"expected ',' after auth-param {name!r}")


def _flag(value: str) -> bool:
    # RFC 7616 §3.3: stale/userhash are "true" (case-insensitive); anything else is false.
    return value.lower() == "true"


def _parse_nc(nc: str) -> int:
    # nc-value = 8LHEX (RFC 7616 §3.4). Uppercase is accepted: the value is hashed as sent,
    # so the case only matters to the client that chose it. Checking the characters first
    # keeps int() from accepting "0x..", "_" or surrounding spaces.
    if len(nc) != 8 or not all(c in _HEX for c in nc):
        raise SipParseError(f"nonce count {nc!r} is not 8 hex digits")
    return int(nc, 16)


def _decode_ext_value(value: str) -> str:
    """Decode an RFC 8187 ext-value (``username*``, RFC 7616 §3.4.4)."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        raise SipParseError("malformed username* value")
    charset, _language, encoded = parts
    if charset.lower() not in ("utf-8", "iso-8859-1"):
        raise SipParseError(f"unsupported username* charset {charset!r}")
    try:
        raw = urllib.parse.unquote_to_bytes(encoded)
        text = raw.decode(charset.lower())
    except (UnicodeDecodeError, ValueError):
        raise SipParseError("undecodable username* value") from None
    if "\r" in text or "\n" in text:
        # A quoted username could not carry these either (RFC 3261 §25.1).
        raise SipParseError("CR or LF in username*")
    return text


# Names with a field of their own; everything else goes to ``params``.
_CHALLENGE_FIELDS = frozenset(
    {"realm", "nonce", "opaque", "algorithm", "qop", "stale", "domain", "userhash", "charset"}
)
_CREDENTIAL_FIELDS = frozenset(
    {
        "username",
        "username*",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "opaque",
        "qop",
        "nc",
        "userhash",
    }
)


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value (RFC 7616 §3.3, §3.8)."""
    params = _parse_params(_split_scheme(value))
    values = {name: v for name, (v, _q) in params.items()}
    for required in ("realm", "nonce"):
        if required not in values:
            raise SipParseError(f"Digest challenge without {required}")
    qop = values.get("qop")
    domain = values.get("domain")
    return DigestChallenge(
        realm=values["realm"],
        nonce=values["nonce"],
        opaque=values.get("opaque"),
        algorithm=values.get("algorithm", DigestAlgorithm.MD5.value),
        # qop-options is a quoted comma-separated list of tokens (RFC 7616 §3.3).
        qop=tuple(q.strip(_WS) for q in qop.split(",") if q.strip(_WS)) if qop else (),
        stale=_flag(values.get("stale", "false")),
        domain=tuple(domain.split()) if domain else (),
        userhash=_flag(values.get("userhash", "false")),
        charset=values.get("charset"),
        params={k: v for k, v in values.items() if k not in _CHALLENGE_FIELDS},
    )


def parse_credentials(value: str) -> DigestCredentials:
    """Parse an Authorization / Proxy-Authorization value (RFC 7616 §3.4, §3.8)."""
    params = _parse_params(_split_scheme(value))
    values = {name: v for name, (v, _q) in params.items()}
    if "username*" in values:
        # RFC 7616 §3.4.4: username and username* MUST NOT both be present.
        if "username" in values:
            raise SipParseError("both username and username* present")
        values["username"] = _decode_ext_value(values["username*"])
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in values:
            raise SipParseError(f"Digest credentials without {required}")
    nc = values.get("nc")
    if nc is not None:
        _parse_nc(nc)
    qop = values.get("qop")
    # RFC 7616 §3.4: cnonce and nc MUST be sent when qop is.
    if qop is not None and (nc is None or "cnonce" not in values):
        raise SipParseError("Digest credentials with qop but without nc or cnonce")
    return DigestCredentials(
        username=values["username"],
        realm=values["realm"],
        nonce=values["nonce"],
        uri=values["uri"],
        response=values["response"],
        algorithm=values.get("algorithm", DigestAlgorithm.MD5.value),
        cnonce=values.get("cnonce"),
        opaque=values.get("opaque"),
        qop=qop,
        nc=nc,
        userhash=_flag(values.get("userhash", "false")),
        params={k: v for k, v in values.items() if k not in _CREDENTIAL_FIELDS},
    )


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A quoted-string (RFC 3261 §25.1): '"' and '\\' and control characters other than
    HTAB go out as quoted-pairs; CR and LF cannot be represented at all."""
    out = ['"']
    for c in value:
        if c in "\r\n":
            raise SipUsageError("CR or LF cannot appear in a quoted string")
        if c in '"\\' or (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F:
            out.append("\\")
        out.append(c)
    out.append('"')
    return "".join(out)


def _token_or_quoted(value: str) -> str:
    # Values RFC 7616 sends unquoted (algorithm, qop in credentials, nc, charset) stay
    # unquoted when they are tokens; anything else is quoted so it still parses back.
    return value if _is_token(value) else _quote(value)


def _format_params(pairs: Iterable[tuple[str, str]], extra: Mapping[str, str]) -> str:
    items = [f"{name}={text}" for name, text in pairs]
    for name, value in extra.items():
        if not _is_token(name):
            raise SipUsageError(f"auth-param name {name!r} is not a token")
        # Unknown params are always quoted: RFC 7235 §2.1 says token and quoted-string
        # forms are equivalent, and quoting is the form that fits every value.
        items.append(f"{name.lower()}={_quote(value)}")
    return "Digest " + ", ".join(items)


def format_challenge(ch: DigestChallenge) -> str:
    """Canonical WWW-Authenticate / Proxy-Authenticate value (RFC 7616 §3.3 quoting)."""
    pairs: list[tuple[str, str]] = [("realm", _quote(ch.realm))]
    if ch.domain:
        for uri in ch.domain:
            if not uri or any(c.isspace() for c in uri):
                raise SipUsageError(f"domain URI {uri!r} is empty or holds whitespace")
        pairs.append(("domain", _quote(" ".join(ch.domain))))
    if ch.qop:
        for option in ch.qop:
            if not _is_token(option):
                raise SipUsageError(f"qop option {option!r} is not a token")
        pairs.append(("qop", _quote(",".join(ch.qop))))
    pairs.append(("algorithm", _token_or_quoted(ch.algorithm)))
    pairs.append(("nonce", _quote(ch.nonce)))
    if ch.opaque is not None:
        pairs.append(("opaque", _quote(ch.opaque)))
    if ch.stale:
        pairs.append(("stale", "true"))
    if ch.charset is not None:
        pairs.append(("charset", _token_or_quoted(ch.charset)))
    if ch.userhash:
        pairs.append(("userhash", "true"))
    _check_extra(ch.params, _CHALLENGE_FIELDS)
    return _format_params(pairs, ch.params)


def format_credentials(cr: DigestCredentials) -> str:
    """Canonical Authorization / Proxy-Authorization value (RFC 7616 §3.4 quoting)."""
    pairs: list[tuple[str, str]] = [
        ("username", _quote(cr.username)),
        ("realm", _quote(cr.realm)),
        ("uri", _quote(cr.uri)),
        ("algorithm", _token_or_quoted(cr.algorithm)),
        ("nonce", _quote(cr.nonce)),
    ]
    if cr.nc is not None:
        pairs.append(("nc", _token_or_quoted(cr.nc)))
    if cr.cnonce is not None:
        pairs.append(("cnonce", _quote(cr.cnonce)))
    if cr.qop is not None:
        pairs.append(("qop", _token_or_quoted(cr.qop)))
    pairs.append(("response", _quote(cr.response)))
    if cr.opaque is not None:
        pairs.append(("opaque", _quote(cr.opaque)))
    if cr.userhash:
        pairs.append(("userhash", "true"))
    _check_extra(cr.params, _CREDENTIAL_FIELDS)
    return _format_params(pairs, cr.params)


def _check_extra(extra: Mapping[str, str], known: frozenset[str]) -> None:
    for name in extra:
        if name.lower() in known:
            raise SipUsageError(f"auth-param {name!r} has its own field; not in params")


# --------------------------------------------------------------------------------------------
# Client side (RFC 7616 §3.4, RFC 8760 §2.4)
# --------------------------------------------------------------------------------------------


def _client_qop(options: Sequence[str]) -> str | None:
    """qop=auth when offered; auth-int only when it is the only choice; None when the
    challenge has no qop (RFC 2069 style)."""
    lowered = [q.lower() for q in options]
    if not lowered:
        return None
    if "auth" in lowered:
        return "auth"
    if "auth-int" in lowered:
        return "auth-int"
    return ""  # only options we do not know: the caller treats "" as unusable


def select_challenge(
    challenges: Iterable[DigestChallenge], *, realm: str | None = None
) -> DigestChallenge | None:
    """The challenge to answer among several, or None if none is usable.

    RFC 8760 §2.4 lets a UAC apply local policy over the server's order; ours is the
    strongest supported hash (SHA-512-256 > SHA-256 > MD5), the server's order breaking ties.
    A challenge is usable if we know its algorithm and one of its qop options (or it has
    none), and, when ``realm`` is given, if its realm matches.
    """
    best: DigestChallenge | None = None
    best_rank = 0
    for ch in challenges:
        alg = DigestAlgorithm.from_name(ch.algorithm)
        if alg is None or _client_qop(ch.qop) == "":
            continue
        if realm is not None and ch.realm != realm:
            continue
        if alg.strength > best_rank:
            best, best_rank = ch, alg.strength
    return best


def answer_challenge(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    cnonce: str | None = None,
    nc: int = 1,
) -> DigestCredentials:
    """Credentials answering ``challenge`` for a request (RFC 7616 §3.4, RFC 3261 §22.4).

    ``uri`` is the Request-URI of the request being authorised; ``body`` matters only for
    qop=auth-int. ``nc`` counts the requests made with this nonce (start at 1).
    Raises :class:`SipParseError` if the challenge names an algorithm or only qop options
    we do not support (use :func:`select_challenge` first to avoid that).
    """
    alg = DigestAlgorithm.from_name(challenge.algorithm)
    if alg is None:
        raise SipParseError(f"unsupported digest algorithm {challenge.algorithm!r}")
    qop = _client_qop(challenge.qop)
    if qop == "":
        raise SipParseError(f"no supported qop among {challenge.qop!r}")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise SipUsageError(f"nonce count {nc} out of range")
    nc_text = f"{nc:08x}" if qop is not None else None
    if cnonce is None and (qop is not None or alg.is_session):
        # RFC 7616 §3.4: an opaque quoted string; 24 random bytes, URL-safe base64.
        cnonce = secrets.token_urlsafe(24)
    ha1 = compute_ha1(
        username, challenge.realm, password, alg, nonce=challenge.nonce, cnonce=cnonce
    )
    response = compute_response(
        ha1,
        algorithm=alg,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    sent_username = username
    if challenge.userhash:
        sent_username = compute_userhash(username, challenge.realm, alg)
    return DigestCredentials(
        username=sent_username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,  # echoed as the server spelled it
        cnonce=cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
        userhash=challenge.userhash,
    )


# --------------------------------------------------------------------------------------------
# Server side (RFC 7616 §3.3, §3.5, §5.4, §5.5; RFC 8760 §2.3)
# --------------------------------------------------------------------------------------------


class VerifyResult(enum.Enum):
    """What :meth:`DigestServer.verify` concluded.

    Callers must answer BAD_RESPONSE and UNKNOWN_USER identically on the wire (a fresh
    challenge), or the difference enumerates users. STALE means the response was right but
    the nonce is too old: challenge again with ``stale=True`` (RFC 7616 §3.3).
    """

    OK = "ok"
    STALE = "stale"
    BAD_RESPONSE = "bad-response"
    BAD_NONCE = "bad-nonce"  # malformed, forged, or minted for another realm/secret
    REPLAY = "replay"  # nonce count not above what was seen for this nonce
    UNKNOWN_USER = "unknown-user"
    USED_NONCE = "used-nonce"  # a wrong answer already burnt this nonce: challenge afresh
    BAD_REALM = "bad-realm"
    BAD_ALGORITHM = "bad-algorithm"
    BAD_QOP = "bad-qop"
    BAD_URI = "bad-uri"


# Nonce layout: 8-byte issue time (signed, milliseconds) | 12 random bytes | 16-byte MAC,
# URL-safe base64 without padding: 36 bytes -> exactly 48 characters.
_NONCE_TIME = struct.Struct(">q")
_NONCE_RANDOM = 12
_NONCE_MAC = 16
_NONCE_RAW = _NONCE_TIME.size + _NONCE_RANDOM + _NONCE_MAC
_NONCE_TEXT = 48
# A nonce may be stamped slightly ahead of our clock (another node, a clock step back):
# tolerate this much before calling it stale.
_FUTURE_SKEW_MS = 5_000


@dataclass(slots=True)
class _NonceUse:
    expires_ms: int
    highest_nc: int
    seen: int  # bit i set: highest_nc - i was seen (only with a replay window)


class DigestServer:
    """Stateless-nonce digest server for one realm.

    Nonces carry their issue time and an HMAC over it, the realm and random bytes, keyed
    with ``secret``: any node or restart sharing the secret accepts them, and a forged or
    altered nonce fails the MAC (RFC 7616 §3.3 suggests exactly this kind of nonce; §5.4).
    Replays are caught by remembering the highest ``nc`` per nonce (§5.5) in a bounded
    LRU. After a restart that memory is empty, so an ``nc`` seen before the restart is
    accepted once more until its nonce expires; a short ``nonce_lifetime`` limits this.
    Responses without qop carry no ``nc`` and can be replayed within the nonce lifetime:
    that is the price of RFC 2069 compatibility (``allow_no_qop=False`` refuses them).

    ``replay_window`` > 0 also accepts a lower ``nc`` not seen yet within that distance
    of the highest (requests sharing a nonce may cross on UDP), like SRTP's replay list.

    Wrong answers burn nonces: after ``max_failures_per_nonce`` wrong answers (or unknown
    users) a nonce is refused with USED_NONCE *before* any hashing, so one nonce buys a
    guesser that many tries and no more (RFC 7616 §5.5 leaves failure handling to the
    server). The burnt set is bounded like the nc memory: beyond ``max_nonces`` the oldest
    entry goes, and every nonce issued at or before it is then treated as burnt, which at
    worst makes honest phones fetch a new nonce.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str | DigestAlgorithm] = ("SHA-256", "MD5"),
        qop: str = "auth",
        *,
        allow_no_qop: bool = True,
        max_nonces: int = 10_000,
        replay_window: int = 0,
        max_failures_per_nonce: int = 1,
    ) -> None:
        if len(secret) < 16:
            raise SipUsageError("nonce secret must be at least 16 bytes")
        if nonce_lifetime <= 0:
            raise SipUsageError("nonce lifetime must be positive")
        if not algorithms:
            raise SipUsageError("at least one digest algorithm is needed")
        if max_nonces < 1 or not 0 <= replay_window <= 64:
            raise SipUsageError("max_nonces must be >= 1 and replay_window in 0..64")
        if max_failures_per_nonce < 1:
            raise SipUsageError("max_failures_per_nonce must be >= 1")
        self.realm = realm
        self._secret = secret
        self._lifetime_ms = int(nonce_lifetime * 1000)
        # RFC 8760 §2.3: challenges go out most preferred first (MD5 last, for old phones).
        self.algorithms: tuple[DigestAlgorithm, ...] = tuple(
            dict.fromkeys(_to_algorithm(a) for a in algorithms)
        )
        self.qop: tuple[str, ...] = tuple(q.strip() for q in qop.split(",") if q.strip())
        for option in self.qop:
            if option not in ("auth", "auth-int"):
                raise SipUsageError(f"unsupported qop {option!r}")
        self.allow_no_qop = allow_no_qop
        self._max_nonces = max_nonces
        self._window = replay_window
        self._uses: OrderedDict[str, _NonceUse] = OrderedDict()
        # Issue time (ms) of the newest nonce evicted from ``_uses`` before it expired; an
        # unknown nonce issued at or before this may have been used already, so it is
        # answered STALE rather than trusted with a fresh nc history.
        self._evicted_floor_ms: int | None = None
        self._max_failures = max_failures_per_nonce
        # nonce → (issue time ms, wrong answers so far), oldest first; bounded by max_nonces.
        self._failed: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._burnt_floor_ms: int | None = None

    # -- nonces --------------------------------------------------------------------------

    def _mac(self, stamp_and_random: bytes) -> bytes:
        msg = b"limen-digest-nonce\x00" + _utf8(self.realm) + b"\x00" + stamp_and_random
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_NONCE_MAC]

    def new_nonce(self, now: float) -> str:
        """A fresh nonce stamped with ``now``."""
        body = _NONCE_TIME.pack(int(now * 1000)) + secrets.token_bytes(_NONCE_RANDOM)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we minted, or None if it is malformed or forged."""
        if len(nonce) != _NONCE_TEXT:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (UnicodeEncodeError, ValueError, binascii.Error):
            return None
        # b64decode skips characters outside the alphabet; demanding the canonical spelling
        # stops two strings from naming one nonce (each would get its own nc history).
        if len(raw) != _NONCE_RAW or base64.urlsafe_b64encode(raw).decode("ascii") != nonce:
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued_ms: int = _NONCE_TIME.unpack_from(body)[0]
        return issued_ms

    def challenges(
        self, now: float, *, stale: bool = False, opaque: str | None = None
    ) -> list[DigestChallenge]:
        """One challenge per algorithm, most preferred first (RFC 8760 §2.3), sharing one
        nonce; send each as its own WWW-Authenticate / Proxy-Authenticate header."""
        nonce = self.new_nonce(now)
        return [
            DigestChallenge(
                realm=self.realm,
                nonce=nonce,
                opaque=opaque,
                algorithm=alg.value,
                qop=self.qop,
                stale=stale,
            )
            for alg in self.algorithms
        ]

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        credentials: DigestCredentials,
        *,
        method: str,
        now: float,
        password: str | None = None,
        ha1: str | None = None,
        username: str | None = None,
        body: bytes = b"",
        expected_uri: str | None = None,
    ) -> VerifyResult:
        """Check credentials for a request with ``method`` (and ``body`` for auth-int).

        Give the user's ``password``, or ``ha1`` = H(username:realm:password) computed with
        the hash of ``credentials.algorithm`` (without ``-sess``), or neither for an
        unknown user (same work is done, UNKNOWN_USER returned). With ``userhash=true``
        credentials, ``username`` must be the plain username the caller resolved from the
        hash (see :func:`compute_userhash`). ``expected_uri`` is the Request-URI, compared
        exactly with the ``uri`` parameter (RFC 7616 §3.4.6 / RFC 3261 §22.4).
        """
        cr = credentials
        if cr.realm != self.realm:
            return VerifyResult.BAD_REALM
        alg = DigestAlgorithm.from_name(cr.algorithm)
        if alg is None or alg not in self.algorithms:
            return VerifyResult.BAD_ALGORITHM
        if cr.qop is None:
            # RFC 3261 §22.4: RFC 2069 clients send no qop; accepting them is required.
            if not self.allow_no_qop:
                return VerifyResult.BAD_QOP
        elif cr.qop.lower() not in self.qop or cr.nc is None or cr.cnonce is None:
            return VerifyResult.BAD_QOP
        if alg.is_session and cr.cnonce is None:
            return VerifyResult.BAD_RESPONSE
        if expected_uri is not None and cr.uri != expected_uri:
            return VerifyResult.BAD_URI
        issued_ms = self._nonce_issued_ms(cr.nonce)
        if issued_ms is None:
            return VerifyResult.BAD_NONCE
        if self._burnt(cr.nonce, issued_ms):
            return VerifyResult.USED_NONCE

        known_user = password is not None or ha1 is not None
        plain_username = cr.username
        if cr.userhash:
            if known_user and username is None:
                raise SipUsageError("userhash credentials need the resolved plain username")
            plain_username = username if username is not None else cr.username
        if ha1 is not None:
            if len(ha1) != hashlib.new(alg.hashlib_name).digest_size * 2:
                raise SipUsageError(f"ha1 does not fit algorithm {alg.value}")
            base_ha1 = ha1.lower()
        else:
            # Unknown user: hash a random password so the work (and time) matches.
            secret_text = password if password is not None else secrets.token_hex(16)
            base_ha1 = _h(alg, f"{plain_username}:{self.realm}:{secret_text}")
        effective_ha1 = base_ha1
        if alg.is_session:
            effective_ha1 = compute_session_ha1(
                base_ha1, alg, nonce=cr.nonce, cnonce=cr.cnonce or ""
            )
        expected = compute_response(
            effective_ha1,
            algorithm=alg,
            nonce=cr.nonce,
            method=method,
            uri=cr.uri,
            qop=cr.qop,
            nc=cr.nc,
            cnonce=cr.cnonce,
            body=body,
        )
        # Constant time, on bytes: compare_digest refuses non-ASCII str (RFC 7616 §5.5 spirit).
        matches = hmac.compare_digest(_utf8(expected), _utf8(cr.response.lower()))
        if not known_user or not matches:
            self._record_failure(cr.nonce, issued_ms, int(now * 1000))
            return VerifyResult.UNKNOWN_USER if not known_user else VerifyResult.BAD_RESPONSE

        # The client knows the password; now judge freshness (RFC 7616 §3.3: stale=true only
        # for a valid digest with an invalid nonce).
        now_ms = int(now * 1000)
        if now_ms - issued_ms > self._lifetime_ms or issued_ms - now_ms > _FUTURE_SKEW_MS:
            self._uses.pop(cr.nonce, None)
            return VerifyResult.STALE
        if cr.nc is None:
            return VerifyResult.OK
        return self._count(cr.nonce, _parse_nc(cr.nc), issued_ms, now_ms)

    def _count(self, nonce: str, nc: int, issued_ms: int, now_ms: int) -> VerifyResult:
        """Record ``nc`` for ``nonce``; REPLAY if it was seen or is too old (RFC 7616 §5.5)."""
        use = self._uses.get(nonce)
        if use is None:
            if self._evicted_floor_ms is not None and issued_ms <= self._evicted_floor_ms:
                return VerifyResult.STALE
            self._uses[nonce] = _NonceUse(issued_ms + self._lifetime_ms, nc, 1)
            self._prune(now_ms)
            return VerifyResult.OK
        self._uses.move_to_end(nonce)
        if nc > use.highest_nc:
            shift = nc - use.highest_nc
            use.seen = ((use.seen << shift) | 1) & ((1 << max(self._window, 1)) - 1)
            use.highest_nc = nc
            return VerifyResult.OK
        distance = use.highest_nc - nc
        if distance >= self._window or use.seen & (1 << distance):
            return VerifyResult.REPLAY
        use.seen |= 1 << distance
        return VerifyResult.OK

    def _prune(self, now_ms: int) -> None:
        """Drop expired nonces from the least recently used end, then evict beyond the cap.

        Only the LRU end is swept, so this stays O(1) amortised; an expired entry deeper in
        goes when the cap reaches it, and evicting an expired entry costs nothing.
        """
        while self._uses:
            nonce, use = next(iter(self._uses.items()))
            if use.expires_ms >= now_ms:
                break
            del self._uses[nonce]
        while len(self._uses) > self._max_nonces:
            _nonce, use = self._uses.popitem(last=False)
            if use.expires_ms < now_ms:
                continue
            issued_ms = use.expires_ms - self._lifetime_ms
            if self._evicted_floor_ms is None or issued_ms > self._evicted_floor_ms:
                self._evicted_floor_ms = issued_ms

    def _burnt(self, nonce: str, issued_ms: int) -> bool:
        entry = self._failed.get(nonce)
        if entry is not None:
            return entry[1] >= self._max_failures
        return self._burnt_floor_ms is not None and issued_ms <= self._burnt_floor_ms

    def _record_failure(self, nonce: str, issued_ms: int, now_ms: int) -> None:
        entry = self._failed.get(nonce)
        self._failed[nonce] = (issued_ms, 1 if entry is None else entry[1] + 1)
        failed = self._failed
        while failed:  # expired entries leave from the old end (their nonces are stale)
            first = next(iter(failed.values()))
            if now_ms - first[0] <= self._lifetime_ms:
                break
            failed.popitem(last=False)
        while len(failed) > self._max_nonces:
            _nonce, (old_issued, _count) = failed.popitem(last=False)
            if self._burnt_floor_ms is None or old_issued > self._burnt_floor_ms:
                self._burnt_floor_ms = old_issued

    @property
    def failed_nonces(self) -> int:
        """How many nonces have wrong answers recorded (for stats and tests)."""
        return len(self._failed)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces have an nc history (for stats and tests)."""
        return len(self._uses)
