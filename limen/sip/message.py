"""SIP messages: parse, inspect, edit, write (RFC 3261 §7, §8.1.1, §8.2.6, §18.3, §20).

Design (after kamailio's parser and h11): a parsed message keeps the bytes it came from.
Header lines are split once at parse time; typed views are built on first access and
cached. Edits replace whole header fields; fields nobody touched are written back byte for
byte, so unknown headers, their spelling and their order survive. An unmodified message
serialises to exactly its input (up to the end of its body).

``parse_message`` validates what every layer above relies on (the start line, the
mandatory headers of RFC 3261 §8.1.1 and their syntax, single-value headers appearing
once, framing) and raises :class:`SipParseError` otherwise; it never raises anything else.
Decisions that need context (416, 420, 483, 501 ...) belong to ``limen.sip.validate``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

from limen.sip.digest.parse import (
    DigestChallenge,
    DigestCredentials,
    parse_challenge,
    parse_credentials,
)
from limen.sip.errors import SipParseError, SipUsageError
from limen.sip.grammar import MAX_LIST_ITEMS, TOKEN_FULL_RE, split_list
from limen.sip.headers import (
    LIST_HEADERS,
    SINGLE_HEADERS,
    ContentType,
    CSeq,
    Event,
    NameAddr,
    RAck,
    Reason,
    Replaces,
    RetryAfter,
    SessionExpires,
    SubscriptionState,
    Via,
    canonical_name,
    header_key,
    parse_call_id,
    parse_content_length,
    parse_content_type,
    parse_cseq,
    parse_delta_seconds,
    parse_event,
    parse_max_forwards,
    parse_media_range,
    parse_name_addr,
    parse_rack,
    parse_reason,
    parse_replaces,
    parse_retry_after,
    parse_rseq,
    parse_session_expires,
    parse_subscription_state,
    parse_token,
    parse_via,
)
from limen.sip.uri import SipUri, Uri, parse_uri

SIP_VERSION: Final = "SIP/2.0"
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE)
_STATUS_RE = re.compile(r"[1-6][0-9][0-9]\Z")

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


def reason_phrase(status: int) -> str:
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


class HeaderField:
    """One header line as received (``raw`` set) or as written by us (``raw`` None).

    Treated as immutable once built: edits replace the field, so copies of a message
    can share fields safely.
    """

    __slots__ = ("key", "name", "raw", "value")

    def __init__(self, name: str, key: str, value: str, raw: str | None) -> None:
        self.name = name
        self.key = key
        self.value = value
        self.raw = raw

    def line(self) -> str:
        return self.raw if self.raw is not None else f"{self.name}: {self.value}"

    def __repr__(self) -> str:
        return f"HeaderField({self.name!r}, {self.value!r})"


# key -> (parser of one value, is a list header)
_TYPED: dict[str, tuple[Callable[[str], Any], bool]] = {
    "via": (parse_via, True),
    "from": (parse_name_addr, False),
    "to": (parse_name_addr, False),
    "call-id": (parse_call_id, False),
    "cseq": (parse_cseq, False),
    "max-forwards": (parse_max_forwards, False),
    "content-length": (parse_content_length, False),
    "content-type": (parse_content_type, False),
    "contact": (parse_name_addr, True),
    "route": (parse_name_addr, True),
    "record-route": (parse_name_addr, True),
    "path": (parse_name_addr, True),
    "service-route": (parse_name_addr, True),
    "p-asserted-identity": (parse_name_addr, True),
    "expires": (parse_delta_seconds, False),
    "min-expires": (parse_delta_seconds, False),
    "require": (parse_token, True),
    "proxy-require": (parse_token, True),
    "supported": (parse_token, True),
    "unsupported": (parse_token, True),
    "allow": (parse_token, True),
    "allow-events": (parse_token, True),
    "accept": (parse_media_range, True),
    "rseq": (parse_rseq, False),
    "rack": (parse_rack, False),
    "event": (parse_event, False),
    "subscription-state": (parse_subscription_state, False),
    "refer-to": (parse_name_addr, False),
    "referred-by": (parse_name_addr, False),
    "replaces": (parse_replaces, False),
    "session-expires": (parse_session_expires, False),
    "min-se": (parse_session_expires, False),
    "reason": (parse_reason, True),
    "retry-after": (parse_retry_after, False),
    "www-authenticate": (parse_challenge, False),
    "proxy-authenticate": (parse_challenge, False),
    "authorization": (parse_credentials, False),
    "proxy-authorization": (parse_credentials, False),
}
# Authentication headers may repeat (one per realm / algorithm) but are not comma lists.
_REPEATABLE_NON_LIST: Final = frozenset(
    {"www-authenticate", "proxy-authenticate", "authorization", "proxy-authorization"}
)


class Message:
    """What requests and responses share: header fields, body, typed views."""

    __slots__ = ("_body", "_cache", "_fields", "_raw")

    def __init__(self) -> None:
        self._fields: list[HeaderField] = []
        self._body: bytes = b""
        self._raw: bytes | None = None
        self._cache: dict[str, Any] = {}

    # -- raw access ----------------------------------------------------------------------
    @property
    def fields(self) -> tuple[HeaderField, ...]:
        return tuple(self._fields)

    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        raw = self._raw
        if raw is not None:
            return raw
        lines = [self.start_line()]
        lines.extend(f.line() for f in self._fields)
        lines.append("")
        lines.append("")
        raw = "\r\n".join(lines).encode("utf-8", "surrogateescape") + self._body
        self._raw = raw
        return raw

    def __str__(self) -> str:
        return bytes(self).decode("utf-8", "replace")

    def has(self, name: str) -> bool:
        key = header_key(name)
        return any(f.key == key for f in self._fields)

    def get(self, name: str) -> str | None:
        """Value of the first field called ``name`` (any spelling, compact or long)."""
        key = header_key(name)
        for f in self._fields:
            if f.key == key:
                return f.value
        return None

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name``, one per header line."""
        key = header_key(name)
        return [f.value for f in self._fields if f.key == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list header, across lines and commas (RFC 3261 §7.3.1)."""
        key = header_key(name)
        out: list[str] = []
        for f in self._fields:
            if f.key == key:
                out.extend(split_list(f.value) if key in LIST_HEADERS else [f.value])
                if len(out) > MAX_LIST_ITEMS:
                    # Bounded across lines too, not only per line (limen.sip.grammar).
                    raise SipParseError(f"too many {canonical_name(key)} elements")
        return out

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(f.name, f.value) for f in self._fields]

    # -- editing -------------------------------------------------------------------------
    def _touch(self, key: str) -> None:
        self._raw = None
        self._cache.pop(key, None)

    def set(self, name: str, value: object) -> None:
        """Replace every ``name`` field by one with ``value``, where the first one was."""
        key = header_key(name)
        text = _header_value(value)
        new = HeaderField(canonical_name(name) if len(name) == 1 else name, key, text, None)
        for i, f in enumerate(self._fields):
            if f.key == key:
                self._fields[i] = new
                self._fields[i + 1 :] = [g for g in self._fields[i + 1 :] if g.key != key]
                break
        else:
            self._fields.append(new)
        self._touch(key)

    def add(self, name: str, value: object, *, first: bool = False) -> None:
        """Add a field at the end, or with ``first`` above the other fields of that name
        (at the very top when there are none: where a new Via or Route belongs)."""
        key = header_key(name)
        new = HeaderField(canonical_name(name), key, _header_value(value), None)
        if first:
            for i, f in enumerate(self._fields):
                if f.key == key:
                    self._fields.insert(i, new)
                    break
            else:
                self._fields.insert(0, new)
        else:
            self._fields.append(new)
        self._touch(key)

    def remove(self, name: str) -> int:
        """Remove every field called ``name``; returns how many there were."""
        key = header_key(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f.key != key]
        removed = before - len(self._fields)
        if removed:
            self._touch(key)
        return removed

    def pop_first(self, name: str) -> str | None:
        """Remove the first element of a list header (e.g. the top Via or Route)."""
        key = header_key(name)
        for i, f in enumerate(self._fields):
            if f.key == key:
                items = split_list(f.value)
                top = items[0]
                if len(items) == 1:
                    del self._fields[i]
                else:
                    self._fields[i] = HeaderField(f.name, key, ", ".join(items[1:]), None)
                self._touch(key)
                return top
        return None

    def replace_fields(self, fields: Iterable[tuple[str, object]]) -> None:
        """Replace all header fields (Content-Length is kept consistent with the body)."""
        self._fields = [
            HeaderField(canonical_name(n), header_key(n), _header_value(v), None) for n, v in fields
        ]
        self._cache.clear()
        self._raw = None
        self._sync_length()

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = bytes(value)
        self._raw = None
        self._sync_length()

    def _sync_length(self) -> None:
        length = str(len(self._body))
        if self.get("content-length") != length:
            self.set("Content-Length", length)

    def copy(self: MessageT) -> MessageT:
        clone = self._blank()
        clone._fields = list(self._fields)
        clone._body = self._body
        clone._raw = self._raw
        clone._cache = dict(self._cache)
        return clone

    def _blank(self: MessageT) -> MessageT:
        raise NotImplementedError

    # -- typed views ---------------------------------------------------------------------
    def typed(self, name: str) -> Any:
        """The typed value of a header: a list for list headers, else the first value or
        None. Raises SipParseError if the header is malformed."""
        cache = self._cache
        if name in cache:
            return cache[name]
        key = header_key(name)
        if key in cache:
            return cache[key]
        entry = _TYPED.get(key)
        if entry is None:
            raise SipUsageError(f"no typed view for header {name!r}")
        parser, is_list = entry
        result: Any
        if is_list:
            result = [parser(item) for item in self.values(key)]
        elif key in _REPEATABLE_NON_LIST:
            result = [parser(v) for v in self.get_all(key)]
        else:
            value = self.get(key)
            result = None if value is None else parser(value)
        cache[key] = result
        return result

    @property
    def via(self) -> list[Via]:
        result: list[Via] | None = self._cache.get("via")
        if result is None:
            result = self.typed("via")
        return result

    @property
    def top_via(self) -> Via:
        vias: list[Via] | None = self._cache.get("via")
        if vias is None:
            vias = self.via
        if not vias:
            raise SipParseError("missing Via")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        result: NameAddr | None = self._cache.get("from") or self.typed("from")
        if result is None:
            raise SipParseError("missing From")
        return result

    @property
    def to(self) -> NameAddr:
        result: NameAddr | None = self._cache.get("to") or self.typed("to")
        if result is None:
            raise SipParseError("missing To")
        return result

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def call_id(self) -> str:
        result: str | None = self._cache.get("call-id") or self.typed("call-id")
        if result is None:
            raise SipParseError("missing Call-ID")
        return result

    @property
    def cseq(self) -> CSeq:
        result: CSeq | None = self._cache.get("cseq") or self.typed("cseq")
        if result is None:
            raise SipParseError("missing CSeq")
        return result

    @property
    def max_forwards(self) -> int | None:
        result: int | None = self.typed("max-forwards")
        return result

    @property
    def contact_star(self) -> bool:
        """True for ``Contact: *`` (RFC 3261 §10.2.2, remove all bindings)."""
        value = self.get("contact")
        return value is not None and value.strip() == "*"

    @property
    def contacts(self) -> list[NameAddr]:
        if self.contact_star:
            return []
        result: list[NameAddr] = self.typed("contact")
        return result

    @property
    def routes(self) -> list[NameAddr]:
        result: list[NameAddr] = self.typed("route")
        return result

    @property
    def record_routes(self) -> list[NameAddr]:
        result: list[NameAddr] = self.typed("record-route")
        return result

    @property
    def content_type(self) -> ContentType | None:
        result: ContentType | None = self.typed("content-type")
        return result

    @property
    def expires(self) -> int | None:
        result: int | None = self.typed("expires")
        return result

    def _tokens(self, name: str) -> list[str]:
        result: list[str] = self.typed(name)
        return result

    @property
    def require(self) -> list[str]:
        return self._tokens("require")

    @property
    def proxy_require(self) -> list[str]:
        return self._tokens("proxy-require")

    @property
    def supported(self) -> list[str]:
        return self._tokens("supported")

    @property
    def unsupported(self) -> list[str]:
        return self._tokens("unsupported")

    @property
    def allow(self) -> list[str]:
        return self._tokens("allow")

    @property
    def accept(self) -> list[ContentType]:
        result: list[ContentType] = self.typed("accept")
        return result

    @property
    def www_authenticate(self) -> list[DigestChallenge]:
        result: list[DigestChallenge] = self.typed("www-authenticate")
        return result

    @property
    def proxy_authenticate(self) -> list[DigestChallenge]:
        result: list[DigestChallenge] = self.typed("proxy-authenticate")
        return result

    @property
    def authorization(self) -> list[DigestCredentials]:
        result: list[DigestCredentials] = self.typed("authorization")
        return result

    @property
    def proxy_authorization(self) -> list[DigestCredentials]:
        result: list[DigestCredentials] = self.typed("proxy-authorization")
        return result

    @property
    def rseq(self) -> int | None:
        result: int | None = self.typed("rseq")
        return result

    @property
    def rack(self) -> RAck | None:
        result: RAck | None = self.typed("rack")
        return result

    @property
    def event(self) -> Event | None:
        result: Event | None = self.typed("event")
        return result

    @property
    def subscription_state(self) -> SubscriptionState | None:
        result: SubscriptionState | None = self.typed("subscription-state")
        return result

    @property
    def refer_to(self) -> NameAddr | None:
        result: NameAddr | None = self.typed("refer-to")
        return result

    @property
    def referred_by(self) -> NameAddr | None:
        result: NameAddr | None = self.typed("referred-by")
        return result

    @property
    def replaces(self) -> Replaces | None:
        result: Replaces | None = self.typed("replaces")
        return result

    @property
    def session_expires(self) -> SessionExpires | None:
        result: SessionExpires | None = self.typed("session-expires")
        return result

    @property
    def min_se(self) -> SessionExpires | None:
        result: SessionExpires | None = self.typed("min-se")
        return result

    @property
    def reasons(self) -> list[Reason]:
        result: list[Reason] = self.typed("reason")
        return result

    @property
    def retry_after(self) -> RetryAfter | None:
        result: RetryAfter | None = self.typed("retry-after")
        return result


MessageT = TypeVar("MessageT", bound=Message)


def _header_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    # A value we write must not smuggle a new header line or end the header section.
    if "\r" in text or "\n" in text:
        raise SipUsageError("header value contains CR or LF")
    return text


class Request(Message):
    __slots__ = ("_uri_text", "method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: Uri | str,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__()
        self.method = method
        self.uri: Uri = parse_uri(uri) if isinstance(uri, str) else uri
        self._uri_text: str | None = None
        self.version = version
        self._fields = [
            HeaderField(canonical_name(n), header_key(n), _header_value(v), None)
            for n, v in headers
        ]
        self._body = bytes(body)
        self._sync_length()

    def _blank(self) -> Request:
        clone = Request.__new__(Request)
        Message.__init__(clone)
        clone.method = self.method
        clone.uri = self.uri
        clone._uri_text = self._uri_text
        clone.version = self.version
        return clone

    def set_uri(self, uri: Uri) -> None:
        self.uri = uri
        self._uri_text = None
        self._raw = None

    def start_line(self) -> str:
        uri_text = self._uri_text if self._uri_text is not None else str(self.uri)
        return f"{self.method} {uri_text} {self.version}"

    def create_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> Response:
        """A response per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq copied
        (To gets ``to_tag`` if it has none), then ``headers``.

        Record-Route is copied by the dialog layer for dialog-creating responses
        (§12.1.1), not here. 100 Trying copies Timestamp (§8.2.6.1).
        """
        fields: list[HeaderField] = [f for f in self._fields if f.key == "via"]
        for f in self._fields:
            if f.key in ("from", "call-id", "cseq"):
                fields.append(f)
            elif f.key == "to":
                if to_tag is not None and self.to.tag is None:
                    fields.append(HeaderField(f.name, "to", str(self.to.with_tag(to_tag)), None))
                else:
                    fields.append(f)
            elif f.key == "timestamp" and status == 100:
                fields.append(f)
        response = Response(status, reason)
        response._fields = fields
        for name, value in headers:
            response.add(name, value)
        response._body = bytes(body)
        response._sync_length()
        return response

    def retry(self, via: Via | str, *, seq: int | None = None) -> Request:
        """A copy of this outgoing request to send again as a new transaction: CSeq
        ``seq`` (default: one more than ours) and ``via`` in place of our top Via.

        RFC 3261 §8.1.3.5 / §22.2: a request retried after a 401/407 (or, here, a 488
        answered with another offer) is a new transaction: same Call-ID, From, To and
        Request-URI, a CSeq one higher, and a new branch, hence a fresh top Via. Inside a
        dialog the caller passes ``seq`` from the dialog's local sequence (§12.2.1.1).
        Everything else (Route, Contact, body, credentials) is kept; the caller edits
        the copy (credentials, body) before sending it.
        """
        cseq = self.cseq
        number = cseq.seq + 1 if seq is None else seq
        if not 0 <= number <= 0xFFFFFFFF:  # §8.1.1.5: a 32-bit unsigned integer
            raise SipUsageError(f"CSeq {number} out of range")
        retry = self.copy()
        retry.set("CSeq", CSeq(number, cseq.method))
        retry.pop_first("Via")
        retry.add("Via", via, first=True)
        return retry

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__()
        if not 100 <= status <= 699:
            raise SipUsageError(f"status {status} out of range")
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)
        if "\r" in self.reason or "\n" in self.reason:
            raise SipUsageError("reason phrase contains CR or LF")
        self.version = version
        self._fields = [
            HeaderField(canonical_name(n), header_key(n), _header_value(v), None)
            for n, v in headers
        ]
        self._body = bytes(body)
        self._sync_length()

    def _blank(self) -> Response:
        clone = Response.__new__(Response)
        Message.__init__(clone)
        clone.status = self.status
        clone.reason = self.reason
        clone.version = self.version
        return clone

    @property
    def status_class(self) -> int:
        return self.status // 100

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# --- parsing ----------------------------------------------------------------------------

# Standard methods (RFC 3261 and extensions): the start-line check skips the token regex.
KNOWN_METHOD_NAMES: Final = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "MESSAGE",
        "REFER",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
    }
)
_CORE_REQUIRED_SINGLE: Final = ("from", "to", "call-id", "cseq")


def parse_message(data: bytes | bytearray | memoryview) -> Request | Response:
    """Parse one complete SIP message (a datagram, or what the stream framer cut out).

    Octets after the body that Content-Length announces are ignored (RFC 3261 §18.3,
    RFC 4475 §3.1.1.8). Without Content-Length the body is the rest of the datagram.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    start = 0
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    while data.startswith(b"\r\n", start):
        start += 2
    first_nl = data.find(b"\n", start)
    if first_nl < 0:
        raise SipParseError("incomplete message: no end of start line")
    crlf = first_nl > start and data[first_nl - 1] == 0x0D
    # Bare-LF messages (RFC 5118's archive, some old UAs) are accepted; we answer in CRLF.
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    head_end = data.find(sep, start)
    if head_end < 0:
        raise SipParseError("incomplete message: no empty line after the headers")
    body_start = head_end + len(sep)
    try:
        head = data[start:head_end].decode("utf-8", "surrogateescape")
    except UnicodeDecodeError:  # pragma: no cover - surrogateescape never fails on decode
        raise SipParseError("undecodable header section") from None
    if crlf:
        lines = head.split("\r\n")
        # A bare CR or LF inside a header line is a smuggling attempt or a broken UA.
        if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
            raise SipParseError("bare CR or LF in header section")
    else:
        lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
        if any("\r" in line for line in lines):
            raise SipParseError("bare CR in header section")

    msg = _parse_start_line(lines[0])
    fields = _parse_fields(lines)
    msg._fields = fields

    # Single-value headers must not repeat (RFC 3261 §7.3.1; RFC 4475 §3.3.8, §3.3.9).
    singles: dict[str, str] = {}
    vias: list[str] = []
    for f in fields:
        key = f.key
        if key in SINGLE_HEADERS:
            if key in singles:
                raise SipParseError(f"more than one {canonical_name(key)} header")
            singles[key] = f.value
        elif key == "via":
            vias.append(f.value)
    if not vias:
        raise SipParseError("missing mandatory header Via")
    for key in _CORE_REQUIRED_SINGLE:
        if key not in singles:
            raise SipParseError(f"missing mandatory header {canonical_name(key)}")

    # Parse the headers every layer needs, so a malformed one is refused now (400)
    # rather than as an exception deep in a transaction; the results stay cached.
    cache = msg._cache
    via_items = [
        item for value in vias for item in (split_list(value) if "," in value else [value])
    ]
    if len(via_items) > MAX_LIST_ITEMS:
        raise SipParseError("too many Via elements")
    cache["via"] = [parse_via(item) for item in via_items]
    cache["from"] = parse_name_addr(singles["from"])
    cache["to"] = parse_name_addr(singles["to"])
    cache["call-id"] = parse_call_id(singles["call-id"])
    cseq = cache["cseq"] = parse_cseq(singles["cseq"])
    mf = singles.get("max-forwards")
    cache["max-forwards"] = None if mf is None else parse_max_forwards(mf)
    if isinstance(msg, Request) and cseq.method != msg.method:
        # RFC 3261 §8.1.1.5 / RFC 4475 §3.1.2.17.
        raise SipParseError("CSeq method does not match the request method")

    cl = singles.get("content-length")
    length = None if cl is None else parse_content_length(cl)
    cache["content-length"] = length
    if length is None:
        body_end = len(data)
    else:
        body_end = body_start + length
        if body_end > len(data):
            # RFC 4475 §3.1.2.2: on a datagram the body is missing; refuse.
            raise SipParseError("Content-Length larger than the message")
    msg._body = data[body_start:body_end]
    msg._raw = data[start:body_end] if crlf else None
    return msg


def _parse_start_line(line: str) -> Request | Response:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"unsupported SIP version {version[:16]!r}", status=505)
        code, sp, reason = rest.partition(" ")
        if not sp or _STATUS_RE.match(code) is None:
            raise SipParseError("malformed status line")
        response = Response.__new__(Response)
        Message.__init__(response)
        response.version = version
        response.status = int(code)
        response.reason = reason
        return response
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly two single spaces
    # (RFC 4475 §3.1.2.8-§3.1.2.10 refuse extra or trailing whitespace).
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        if len(parts) >= 3 and _VERSION_RE.match(parts[-1]) and parts[-1].upper() != SIP_VERSION:
            raise SipParseError("unsupported SIP version", status=505)
        raise SipParseError("malformed Request-Line")
    method, uri_text, version = parts
    if method not in KNOWN_METHOD_NAMES and TOKEN_FULL_RE.match(method) is None:
        raise SipParseError("malformed method")
    if version.upper() != SIP_VERSION:
        if _VERSION_RE.match(version):
            raise SipParseError(f"unsupported SIP version {version[:16]!r}", status=505)
        raise SipParseError("malformed Request-Line")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers is not None:
        # RFC 3261 §19.1.1 (table 1): headers are not allowed in a Request-URI
        # (RFC 4475 §3.1.2.11 lets us refuse rather than strip them).
        raise SipParseError("headers component in Request-URI")
    request = Request.__new__(Request)
    Message.__init__(request)
    request.method = method
    request.uri = uri
    request._uri_text = uri_text
    request.version = version
    return request


# Header names seen before, mapped to their lookup key: saves validating and
# canonicalising the same dozen names on every message. Bounded so a peer sending random
# names cannot grow it without limit.
_NAME_KEYS: dict[str, str] = {}
_NAME_KEYS_MAX = 2048


def _parse_fields(lines: list[str]) -> list[HeaderField]:
    fields: list[HeaderField] = []
    append = fields.append
    name_keys = _NAME_KEYS
    folded: dict[int, list[str]] | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = name_keys.get(name)
        if key is not None and colon:
            # Fast path: a header name seen before, written without odd spacing.
            append(HeaderField(name, key, value.strip(" \t"), line))
            continue
        if not line:
            raise SipParseError("empty header line")
        if line[0] in " \t":
            # Folding (RFC 3261 §7.3.1): the line continues the previous header. The
            # pieces are joined once at the end; joining line by line is quadratic.
            if not fields:
                raise SipParseError("continuation line before any header")
            if folded is None:
                folded = {}
            folded.setdefault(len(fields) - 1, []).append(line)
            continue
        if not colon:
            raise SipParseError("header line without a colon")
        stripped = name.rstrip(" \t")
        if TOKEN_FULL_RE.match(stripped) is None:
            raise SipParseError(f"malformed header name {stripped[:32]!r}")
        key = header_key(stripped)
        if len(name_keys) < _NAME_KEYS_MAX and stripped == name:
            name_keys[name] = key
        append(HeaderField(stripped, key, value.strip(" \t"), line))
    if folded is not None:
        for index, continuations in folded.items():
            prev = fields[index]
            pieces = [prev.value, *(cont.strip(" \t") for cont in continuations)]
            joined = " ".join(piece for piece in pieces if piece)
            raw = "\r\n".join([prev.raw or "", *continuations])
            fields[index] = HeaderField(prev.name, prev.key, joined, raw)
    return fields
