"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118 for IPv6 references).

Components keep the form they were written in (escapes in the user part are not
undone, parameter values keep their case), so ``str(parse_uri(s)) == s`` for every URI
we accept. Unescaped views are properties. URIs of other schemes are kept opaque
(:class:`AbsoluteUri`); whether they are acceptable is a decision of the layer above
(416 Unsupported URI Scheme, RFC 3261 §8.2.2.1).
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote as _pct_unquote

from limen.sip.errors import SipParseError
from limen.sip.grammar import EMPTY_PARAMS, MAX_PARAMS, Params

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*+")
# Characters never valid anywhere in a URI written inside a SIP message.
_FORBIDDEN_RE = re.compile(r'[\s<>"\x00-\x1f\x7f]')
# hostname / IPv4address (RFC 3261 §25.1). '_' is not in the ABNF but is common in the
# wild (internal DNS names); accepting it costs nothing.
_HOST_RE = re.compile(r"[A-Za-z0-9\-._]++")
# Inside [ ]: hex digits, ':' and '.' (IPv4-mapped tails). Deliberately loose: RFC 5118
# §4.10 asks us to tolerate the "three colons" form an ABNF bug once allowed.
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]++(?:%[A-Za-z0-9_.~\-]++)?+\]")
_PORT_RE = re.compile(r"[0-9]{1,5}+")
_URI_PARAM_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]++")


def _split_uri_params(text: str) -> Params:
    """Parse ``;name[=value]`` URI parameters (no LWS, no quoting inside a URI)."""
    if not text:
        return EMPTY_PARAMS
    items: list[tuple[str, str | None]] = []
    parts = text.split(";")[1:]
    if len(parts) > MAX_PARAMS:
        raise SipParseError("too many URI parameters")
    for part in parts:
        name, eq, value = part.partition("=")
        if not name or _URI_PARAM_RE.fullmatch(name) is None:
            raise SipParseError("empty or malformed URI parameter")
        if eq:
            if not value or _URI_PARAM_RE.fullmatch(value) is None:
                raise SipParseError(f"malformed value of URI parameter {name!r}")
            items.append((name, value))
        else:
            items.append((name, None))
    return Params(tuple(items))


class SipUri(NamedTuple):
    """``sip:`` or ``sips:`` URI. ``host`` keeps IPv6 brackets; ``port`` is None if absent."""

    host: str
    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = EMPTY_PARAMS
    headers: str | None = None  # the raw text after '?', escaped as written

    @property
    def secure(self) -> bool:
        return self.scheme.lower() == "sips"

    @property
    def user_unescaped(self) -> str | None:
        # %HEX is undone once, never recursively (RFC 4475 §3.1.1.3).
        return None if self.user is None else _pct_unquote(self.user, errors="surrogateescape")

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def aor(self) -> str:
        """Address of record key: scheme, unescaped user and lower-cased host, no port."""
        user = self.user_unescaped
        scheme = "sips" if self.secure else "sip"
        return (
            f"{scheme}:{user}@{self.host_lower}"
            if user is not None
            else f"{scheme}:{self.host_lower}"
        )

    def with_params(self, params: Params) -> SipUri:
        return SipUri(
            self.host, self.scheme, self.user, self.password, self.port, params, self.headers
        )

    def with_host(self, host: str, port: int | None) -> SipUri:
        return SipUri(host, self.scheme, self.user, self.password, port, self.params, self.headers)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.params:
            parts.append(str(self.params))
        if self.headers is not None:
            parts.append("?")
            parts.append(self.headers)
        return "".join(parts)


class TelUri(NamedTuple):
    """``tel:`` URI (RFC 3966): the number as written, and its parameters."""

    number: str
    params: Params = EMPTY_PARAMS
    scheme: str = "tel"

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def __str__(self) -> str:
        return f"{self.scheme}:{self.number}{self.params}"


class AbsoluteUri(NamedTuple):
    """A URI of a scheme we do not interpret (``mailto:``, ``im:``, ``http:``...)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def _parse_sip(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        if not userinfo:
            raise SipParseError("empty user part in SIP URI")
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
        if not user:
            raise SipParseError("empty user part in SIP URI")
    if rest.startswith("["):
        m = _IPV6_RE.match(rest)
        if m is None:
            raise SipParseError("malformed IPv6 reference in SIP URI")
    else:
        m = _HOST_RE.match(rest)
        if m is None:
            raise SipParseError("missing host in SIP URI")
    host = m.group()
    pos = m.end()
    port: int | None = None
    if pos < len(rest) and rest[pos] == ":":
        mp = _PORT_RE.match(rest, pos + 1)
        if mp is None or (mp.end() < len(rest) and rest[mp.end()] not in ";?"):
            raise SipParseError("malformed port in SIP URI")
        port = int(mp.group())
        if port > 65535:
            raise SipParseError("port out of range in SIP URI")
        pos = mp.end()
    headers: str | None = None
    q = rest.find("?", pos)
    if q >= 0:
        headers = rest[q + 1 :]
        param_text = rest[pos:q]
    else:
        param_text = rest[pos:]
    if param_text and param_text[0] != ";":
        raise SipParseError(f"unexpected {param_text[0]!r} after host in SIP URI")
    params = _split_uri_params(param_text)
    return SipUri(host, scheme, user, password, port, params, headers)


# The usual shape of a SIP URI (no password, no headers, plain host), matched in one go.
# Possessive runs: each is delimited by a character outside its class ('@', ':', ';',
# '='), so the match stays linear whatever the input (see limen.sip.grammar).
_FAST_SIP_RE = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()%&=+$,]++)@)?+([A-Za-z0-9\-._]++|\[[0-9A-Fa-f:.]++\])"
    r"(?::([0-9]{1,5}+))?+"
    r"((?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]++(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]++)?+)*+)\Z",
    re.IGNORECASE,
)


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI as found in a Request-URI or inside ``<...>``."""
    fast = _FAST_SIP_RE.match(text)
    if fast is not None:
        scheme, user, host, port_text, param_text = fast.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise SipParseError("port out of range in SIP URI")
        if param_text:
            # The pattern above already checked every name and value.
            items: list[tuple[str, str | None]] = []
            parts = param_text[1:].split(";")
            if len(parts) > MAX_PARAMS:
                raise SipParseError("too many URI parameters")
            for part in parts:
                name, eq, value = part.partition("=")
                items.append((name, value if eq else None))
            return SipUri(host, scheme, user, None, port, Params(tuple(items)), None)
        return SipUri(host, scheme, user, None, port, EMPTY_PARAMS, None)
    m = _SCHEME_RE.match(text)
    if m is None or m.end() >= len(text) or text[m.end()] != ":":
        raise SipParseError(f"not a URI: {text[:64]!r}")
    scheme = m.group()
    rest = text[m.end() + 1 :]
    if not rest:
        raise SipParseError("empty URI after scheme")
    if _FORBIDDEN_RE.search(rest):
        raise SipParseError("whitespace or delimiter inside URI")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if lscheme == "tel":
        number, semi, tel_params = rest.partition(";")
        if not number:
            raise SipParseError("empty tel URI")
        return TelUri(number, _split_uri_params(semi + tel_params), scheme)
    return AbsoluteUri(scheme, rest)
