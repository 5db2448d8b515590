"""Digest challenge and credentials values: grammar, parsing and formatting.

RFC 7616 §3.3 (WWW-Authenticate / Proxy-Authenticate), §3.4 (Authorization /
Proxy-Authorization), §3.4.4 / RFC 8187 (``username*``), RFC 7235 §2.1 (auth-param), RFC 3261
§25.1 (token, quoted-string). Parsers raise :class:`~limen.sip.errors.SipParseError` and
nothing else on network input; formatters raise :class:`~limen.sip.errors.SipUsageError` on
values our own code built wrong.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from limen.sip.digest.hashing import DigestAlgorithm
from limen.sip.errors import SipParseError, SipUsageError
from limen.sip.grammar import MAX_PARAMS

__all__ = [
    "DigestChallenge",
    "DigestCredentials",
    "format_challenge",
    "format_credentials",
    "parse_challenge",
    "parse_credentials",
]


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
