"""Typed views of SIP header values (RFC 3261 §20 and the extension RFCs named per class).

Each ``parse_*`` function takes one header value (unfolded, and for list headers one
element of the comma-separated list) and returns a frozen dataclass whose ``str()`` is a
valid header value. Malformed input raises :class:`SipParseError` (400), nothing else.

Also here: header-name canonicalisation, including the compact forms of RFC 3261 §7.3.3
and of the extensions that registered one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from limen.sip.errors import SipParseError
from limen.sip.grammar import (
    EMPTY_PARAMS,
    TOKEN_RE,
    Params,
    quote,
    read_params,
    read_quoted,
    read_token,
    skip_lws,
    unquote,
)
from limen.sip.uri import SipUri, Uri, parse_uri

# --- header names ---------------------------------------------------------------------

# Compact forms: RFC 3261 §7.3.3 (i m f t v l c k s e), RFC 6665 (o u), RFC 3515 (r),
# RFC 3892 (b), RFC 4028 (x), RFC 8224 (y), RFC 3841 (a j d), RFC 4474 (n).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "n": "identity-info",
}

# Spelling used when *we* write a header (received headers keep their own spelling).
_CANONICAL_SPELLING: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "rseq": "RSeq",
    "rack": "RAck",
    "mime-version": "MIME-Version",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "min-se": "Min-SE",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1): several values may
# share one line. Authorization-family headers are *not* lists: commas separate params.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "allow",
        "allow-events",
        "require",
        "proxy-require",
        "supported",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "alert-info",
        "call-info",
        "error-info",
        "in-reply-to",
        "reason",
        "warning",
        "p-asserted-identity",
        "p-preferred-identity",
        "accept-contact",
        "reject-contact",
        "request-disposition",
        "security-client",
        "security-server",
        "security-verify",
    }
)

# Headers that must appear at most once (RFC 3261 §7.3.1: only list headers may repeat).
SINGLE_HEADERS: frozenset[str] = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length"}
)


# Names seen before → key / spelling. Bounded: a peer inventing names cannot grow them.
_KEYS: dict[str, str] = {}
_SPELLINGS: dict[str, str] = {}
_CACHE_MAX = 2048


def header_key(name: str) -> str:
    """Canonical lookup key of a header name: lower-case long form."""
    key = _KEYS.get(name)
    if key is not None:
        return key
    key = name.lower()
    if len(key) == 1:
        key = COMPACT_FORMS.get(key, key)
    if len(_KEYS) < _CACHE_MAX:
        _KEYS[name] = key
    return key


def canonical_name(name: str) -> str:
    """The spelling we write for a header: ``call-id`` → ``Call-ID``, ``v`` → ``Via``."""
    cached = _SPELLINGS.get(name)
    if cached is not None:
        return cached
    key = header_key(name)
    spelled = _CANONICAL_SPELLING.get(key)
    if spelled is None:
        spelled = "-".join(part[:1].upper() + part[1:] for part in key.split("-"))
    if len(_SPELLINGS) < _CACHE_MAX:
        _SPELLINGS[name] = spelled
    return spelled


# --- name-addr / addr-spec (From, To, Contact, Route, Record-Route, Refer-To ...) --------

# Possessive quantifiers throughout this module (Python 3.11+): every run below is bounded
# by characters its neighbours cannot contain, so giving characters back could never make a
# match succeed, and forbidding it keeps each match linear in the header's length. The
# plain greedy ``(?:token+ LWS*)+`` that stood here backtracked exponentially on a long
# run of letters without ``<`` (issue 9, finding 1).
_DISPLAY_TOKENS_RE = re.compile(r"(?:[A-Za-z0-9\-.!%*_+`'~]++[ \t]*+)++")
# addr-spec: the URI ends at the first ';' or whitespace (RFC 3261 §20.10).
_ADDR_SPEC_RE = re.compile(r"[^;\s]++")


class NameAddr(NamedTuple):
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 §20.10).

    ``display_name`` is kept as written (a quoted-string keeps its quotes). Params are
    *header* parameters (tag, expires, q...), distinct from the URI's own parameters:
    in the addr-spec form every ``;`` after the URI starts a header parameter
    (RFC 3261 §20.10, RFC 4475 §3.3.12).
    """

    uri: Uri
    display_name: str | None = None
    params: Params = EMPTY_PARAMS

    @property
    def display(self) -> str | None:
        return None if self.display_name is None else unquote(self.display_name)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        return None if value is None else parse_delta_seconds(value)

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise SipParseError("malformed q parameter") from None
        if not 0.0 <= q <= 1.0:
            raise SipParseError("q parameter out of range")
        return q

    @property
    def sip_uri(self) -> SipUri:
        """The URI as a SIP URI; raises 416-mapped SipParseError for other schemes."""
        if isinstance(self.uri, SipUri):
            return self.uri
        raise SipParseError(f"{self.uri.scheme} URI where a SIP URI is required", status=416)

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display_name, self.params.with_("tag", tag))

    def with_uri(self, uri: Uri) -> NameAddr:
        return NameAddr(uri, self.display_name, self.params)

    def with_params(self, params: Params) -> NameAddr:
        return NameAddr(self.uri, self.display_name, params)

    def __str__(self) -> str:
        # Always write the name-addr form: it is unambiguous whatever the URI holds.
        if self.display_name is not None:
            return f"{self.display_name} <{self.uri}>{self.params}"
        return f"<{self.uri}>{self.params}"


# Usual shapes: `"Display" <uri>;params`, `Display <uri>;params`, `<uri>;params`.
_FAST_NAME_ADDR_RE = re.compile(
    r'[ \t]*+(?:("(?:[^"\\]++|\\.)*+")[ \t]*+|((?:[A-Za-z0-9\-.!%*_+`\'~]++[ \t]*+)++))?+'
    r'<([^<>\s"]++)>(.*+)\Z'
)


def parse_name_addr(text: str) -> NameAddr:
    fast = _FAST_NAME_ADDR_RE.match(text)
    if fast is not None:
        quoted, tokens, uri_text, rest = fast.groups()
        params, end = read_params(rest, 0, stop="")
        if end < len(rest):
            raise SipParseError("trailing characters after address")
        shown = quoted if quoted is not None else (tokens.rstrip(" \t") if tokens else None)
        return NameAddr(parse_uri(uri_text), shown, params)
    pos = skip_lws(text, 0)
    n = len(text)
    if pos >= n:
        raise SipParseError("empty address")
    display: str | None = None
    ch = text[pos]
    if ch == '"':
        display, pos = read_quoted(text, pos)
        pos = skip_lws(text, pos)
        if pos >= n or text[pos] != "<":
            raise SipParseError("quoted display name not followed by <URI>")
    elif ch != "<":
        m = _DISPLAY_TOKENS_RE.match(text, pos)
        if m is not None and m.end() < n and text[m.end()] == "<":
            # Display name of tokens; RFC 4475 §3.1.1.6 shows "caller<sip:...>" (no LWS
            # before '<') must be accepted although the ABNF asks for LWS.
            display = m.group().rstrip(" \t")
            pos = m.end()
    if pos < n and text[pos] == "<":
        end = text.find(">", pos + 1)
        if end < 0:
            raise SipParseError("unterminated <URI>")
        uri = parse_uri(text[pos + 1 : end])
        pos = end + 1
    else:
        # addr-spec: the URI ends at the first ';' (or whitespace); a URI that needs
        # '?' or ',' must be enclosed in <> (RFC 3261 §20.10; RFC 4475 §3.1.2.13).
        m = _ADDR_SPEC_RE.match(text, pos)
        if m is None:
            raise SipParseError("missing URI")
        uri_text = m.group()
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("URI with headers or commas must be enclosed in <>")
        uri = parse_uri(uri_text)
        pos = m.end()
    params, pos = read_params(text, pos, stop="")
    if pos < n:
        raise SipParseError("trailing characters after address")
    return NameAddr(uri, display, params)


# --- Via (RFC 3261 §20.42, RFC 3581 rport) ----------------------------------------------

_SLASH_RE = re.compile(r"[ \t]*+/[ \t]*+")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]++(?:%[A-Za-z0-9_.~\-]++)?+\]|[A-Za-z0-9\-._]++")
_PORT_RE = re.compile(r"[ \t]*+:[ \t]*+([0-9]{1,5}+)")

MAGIC_COOKIE = "z9hG4bK"


class Via(NamedTuple):
    transport: str  # upper-case: UDP, TCP, TLS, SCTP, WS, WSS, or unknown tokens
    host: str
    port: int | None = None
    params: Params = EMPTY_PARAMS
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries RFC 3261's magic cookie (§17.1.3, §8.1.1.7) and
        something after it: a bare cookie identifies nothing (RFC 4475 §3.2.1)."""
        branch = self.branch
        return branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server (RFC 3581 §4); None if absent or empty."""
        value = self.params.get("rport")
        if not value:
            return None
        if not value.isdigit() or int(value) > 65535:
            raise SipParseError("malformed rport")
        return int(value)

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, params: Params) -> Via:
        return Via(self.transport, self.host, self.port, params, self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{self.params}"


_FAST_VIA_RE = re.compile(
    r"SIP/2\.0/([A-Za-z]++) (\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9\-._]++)(?::([0-9]{1,5}+))?+(;.*+)?+\Z"
)


def parse_via(text: str) -> Via:
    fast = _FAST_VIA_RE.match(text)
    if fast is not None:
        transport, host, port_text, param_text = fast.groups()
        fast_port = int(port_text) if port_text is not None else None
        if fast_port is not None and fast_port > 65535:
            raise SipParseError("Via port out of range")
        fast_params = EMPTY_PARAMS
        if param_text:
            fast_params, end = read_params(param_text, 0, stop="")
            if end < len(param_text):
                raise SipParseError("trailing characters in Via")
        return Via(transport.upper(), host, fast_port, fast_params)
    pos = skip_lws(text, 0)
    name, pos = read_token(text, pos, "protocol name")
    m = _SLASH_RE.match(text, pos)
    if m is None:
        raise SipParseError("malformed Via sent-protocol")
    version, pos = read_token(text, m.end(), "protocol version")
    m = _SLASH_RE.match(text, pos)
    if m is None:
        raise SipParseError("malformed Via sent-protocol")
    transport, pos = read_token(text, m.end(), "transport")
    after = skip_lws(text, pos)
    if after == pos:
        raise SipParseError("missing space before Via sent-by")
    mh = _HOST_RE.match(text, after)
    if mh is None:
        raise SipParseError("malformed Via sent-by host")
    host = mh.group()
    pos = mh.end()
    port: int | None = None
    mp = _PORT_RE.match(text, pos)
    if mp is not None:
        port = int(mp.group(1))
        if port > 65535:
            raise SipParseError("Via port out of range")
        pos = mp.end()
    params, pos = read_params(text, pos, stop="")
    if pos < len(text):
        raise SipParseError("trailing characters in Via")
    protocol = f"{name.upper()}/{version}"
    return Via(transport.upper(), host, port, params, protocol)


# --- scalars ----------------------------------------------------------------------------

MAX_UINT32 = 2**32 - 1
_DIGITS_RE = re.compile(r"[0-9]++")


def parse_delta_seconds(text: str) -> int:
    """delta-seconds (RFC 3261 §25.1). Overlarge values are clamped to 2**32-1, which
    RFC 4475 §3.1.2.4 allows (only CSeq overflow is fatal)."""
    value = text.strip()
    if not value.isascii() or not value.isdigit():
        raise SipParseError(f"malformed delta-seconds {value[:32]!r}")
    if len(value) > 10:
        return MAX_UINT32
    return min(int(value), MAX_UINT32)


def parse_uint32(text: str, what: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 10 or int(value) > MAX_UINT32:
        raise SipParseError(f"malformed or overlarge {what}")
    return int(value)


class CSeq(NamedTuple):
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    # RFC 3261 §20.16: the number is a 32-bit unsigned integer; §8.1.1.5 / RFC 4475
    # §3.1.2.4: a larger value makes the request invalid (400).
    parts = text.split()
    if len(parts) != 2 or "\n" in text or "\r" in text:
        raise SipParseError("malformed CSeq")
    digits, method = parts
    if not digits.isascii() or not digits.isdigit():
        raise SipParseError("malformed CSeq number")
    if len(digits) > 10 or int(digits) > MAX_UINT32:
        raise SipParseError("CSeq number larger than 2**32-1")
    if TOKEN_RE.fullmatch(method) is None:
        raise SipParseError("malformed CSeq method")
    return CSeq(int(digits), method)


_SPACE_RE = re.compile(r"\s")


def parse_call_id(text: str) -> str:
    value = text.strip()
    # callid = word ["@" word]; word allows most printable characters (RFC 4475 §3.1.1.2).
    if not value or _SPACE_RE.search(value):
        raise SipParseError("malformed Call-ID")
    return value


def parse_max_forwards(text: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit():
        raise SipParseError("malformed Max-Forwards")
    # Overlarge values are tolerated (RFC 4475 §3.1.2.4); 255 is the useful ceiling.
    return min(int(value[-12:]) if len(value) > 12 else int(value), MAX_UINT32)


def parse_content_length(text: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit():
        # Negative or non-numeric: RFC 4475 §3.1.2.3.
        raise SipParseError("malformed Content-Length")
    if len(value) > 10:
        raise SipParseError("Content-Length too large")
    return int(value)


def parse_token(text: str) -> str:
    value = text.strip()
    if TOKEN_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed token {value[:32]!r}")
    return value


# --- media types --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContentType:
    type: str
    subtype: str
    params: Params = field(default=EMPTY_PARAMS)

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}".lower()

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{self.params}"


def parse_content_type(text: str) -> ContentType:
    pos = skip_lws(text, 0)
    mtype, pos = read_token(text, pos, "media type")
    m = _SLASH_RE.match(text, pos)
    if m is None:
        raise SipParseError("malformed media type")
    subtype, pos = read_token(text, m.end(), "media subtype")
    params, pos = read_params(text, pos, stop="")
    if pos < len(text):
        raise SipParseError("trailing characters in media type")
    return ContentType(mtype, subtype, params)


# --- token + params shapes: Event, Subscription-State, Session-Expires, Reason ... --------


@dataclass(frozen=True, slots=True)
class TokenParams:
    """A token (or delta-seconds) followed by parameters."""

    value: str
    params: Params = field(default=EMPTY_PARAMS)

    def __str__(self) -> str:
        return f"{self.value}{self.params}"


def parse_token_params(text: str) -> TokenParams:
    pos = skip_lws(text, 0)
    value, pos = read_token(text, pos)
    params, pos = read_params(text, pos, stop="")
    if pos < len(text):
        raise SipParseError("trailing characters after parameters")
    return TokenParams(value, params)


@dataclass(frozen=True, slots=True)
class Event:
    """RFC 6665 §8.2.1 Event: package (with template, e.g. ``presence.winfo``) and id."""

    package: str
    params: Params = field(default=EMPTY_PARAMS)

    @property
    def id(self) -> str | None:
        return self.params.get("id")

    def __str__(self) -> str:
        return f"{self.package}{self.params}"


def parse_event(text: str) -> Event:
    tp = parse_token_params(text)
    return Event(tp.value, tp.params)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """RFC 6665 §8.2.3: active / pending / terminated, with expires, reason, retry-after."""

    state: str
    params: Params = field(default=EMPTY_PARAMS)

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        return None if value is None else parse_delta_seconds(value)

    @property
    def reason(self) -> str | None:
        return self.params.get("reason")

    @property
    def retry_after(self) -> int | None:
        value = self.params.get("retry-after")
        return None if value is None else parse_delta_seconds(value)

    def __str__(self) -> str:
        return f"{self.state}{self.params}"


def parse_subscription_state(text: str) -> SubscriptionState:
    tp = parse_token_params(text)
    return SubscriptionState(tp.value.lower(), tp.params)


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """RFC 4028 §4: Session-Expires / Min-SE delta and refresher (uac / uas)."""

    delta: int
    params: Params = field(default=EMPTY_PARAMS)

    @property
    def refresher(self) -> str | None:
        value = self.params.get("refresher")
        return value.lower() if value else None

    def __str__(self) -> str:
        return f"{self.delta}{self.params}"


def parse_session_expires(text: str) -> SessionExpires:
    pos = skip_lws(text, 0)
    m = _DIGITS_RE.match(text, pos)
    if m is None:
        raise SipParseError("malformed Session-Expires")
    params, pos = read_params(text, m.end(), stop="")
    if pos < len(text):
        raise SipParseError("trailing characters in Session-Expires")
    return SessionExpires(parse_delta_seconds(m.group()), params)


@dataclass(frozen=True, slots=True)
class Reason:
    """RFC 3326 Reason: protocol (SIP, Q.850 ...), cause and text."""

    protocol: str
    params: Params = field(default=EMPTY_PARAMS)

    @property
    def cause(self) -> int | None:
        value = self.params.get("cause")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def text(self) -> str | None:
        value = self.params.get("text")
        return None if value is None else unquote(value)

    def __str__(self) -> str:
        return f"{self.protocol}{self.params}"


def parse_reason(text: str) -> Reason:
    tp = parse_token_params(text)
    return Reason(tp.value, tp.params)


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """RFC 3261 §20.33: delta-seconds, optional comment, params (duration)."""

    delta: int
    comment: str | None = None
    params: Params = field(default=EMPTY_PARAMS)

    def __str__(self) -> str:
        comment = f" ({self.comment})" if self.comment is not None else ""
        return f"{self.delta}{comment}{self.params}"


# RFC 3261 §20.33: delta-seconds [ comment ] *( SEMI retry-param ).
_RETRY_AFTER_RE = re.compile(r"[ \t]*+([0-9]++)[ \t]*+(?:\(([^)]*+)\))?+")


def parse_retry_after(text: str) -> RetryAfter:
    m = _RETRY_AFTER_RE.match(text)
    if m is None:
        raise SipParseError("malformed Retry-After")
    params, pos = read_params(text, m.end(), stop="")
    if pos < len(text):
        raise SipParseError("trailing characters in Retry-After")
    return RetryAfter(parse_delta_seconds(m.group(1)), m.group(2), params)


# --- RFC 3262 reliable provisional responses ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RAck:
    rseq: int
    cseq: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


# RFC 3262 §7.2: response-num LWS CSeq-num LWS Method.
_RACK_RE = re.compile(r"[ \t]*+([0-9]++)[ \t]++([0-9]++)[ \t]++([^ \t]++)[ \t]*+\Z")


def parse_rack(text: str) -> RAck:
    m = _RACK_RE.match(text)
    if m is None:
        raise SipParseError("malformed RAck")
    method = m.group(3)
    if TOKEN_RE.fullmatch(method) is None:
        raise SipParseError("malformed RAck method")
    return RAck(parse_uint32(m.group(1), "RAck"), parse_uint32(m.group(2), "RAck"), method)


def parse_rseq(text: str) -> int:
    value = parse_uint32(text, "RSeq")
    if value == 0:
        raise SipParseError("RSeq must be at least 1")
    return value


# --- RFC 3891 Replaces ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replaces:
    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False
    params: Params = field(default=EMPTY_PARAMS)

    def __str__(self) -> str:
        return f"{self.call_id}{self.params}"


def parse_replaces(text: str) -> Replaces:
    value = text.strip()
    semi = value.find(";")
    if semi <= 0:
        raise SipParseError("malformed Replaces")
    call_id = parse_call_id(value[:semi])
    params, pos = read_params(value, semi, stop="")
    if pos < len(value):
        raise SipParseError("trailing characters in Replaces")
    to_tag = params.get("to-tag")
    from_tag = params.get("from-tag")
    if to_tag is None or from_tag is None:
        raise SipParseError("Replaces lacks to-tag or from-tag")
    return Replaces(call_id, to_tag, from_tag, "early-only" in params, params)


# --- media ranges (Accept) ------------------------------------------------------------------


def parse_media_range(text: str) -> ContentType:
    value = text.strip()
    if value.startswith("*/*"):
        params, pos = read_params(value, 3, stop="")
        if pos < len(value):
            raise SipParseError("trailing characters in Accept")
        return ContentType("*", "*", params)
    return parse_content_type(value)


def quote_display(name: str) -> str:
    """Display name as a quoted-string (always quoted: safe for any characters)."""
    return quote(name)
