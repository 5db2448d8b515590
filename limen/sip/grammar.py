"""Lexical pieces of the SIP grammar (RFC 3261 §25.1) shared by the header parsers.

Header values reach these functions already unfolded (RFC 3261 §7.3.1: a line that
starts with whitespace continues the previous one), so "LWS" here is just spaces and tabs.
Every scanner works on ``(text, pos)`` and returns the new position, raising
:class:`SipParseError` with status 400 on malformed input and nothing else.

Every pattern here and in the header and URI modules uses possessive quantifiers (``*+``,
``++``, ``?+``): each run is delimited by characters it cannot contain, so backtracking
into it could never turn a failure into a match, and forbidding it keeps every match
linear in the length of the input (issue 9: a greedy nested pattern froze the event loop).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from limen.sip.errors import SipParseError

# What one header value may hold. Real UAs send a handful of each (a Contact has fewer
# than 20 parameters, a Route set a few entries); the bounds keep a peer that fills 64 KB
# with ";a" or "a," from making us build tens of thousands of objects for one message
# (issue 9: every parse costs bounded time). Past them the message is refused with 400.
MAX_PARAMS: Final = 64
MAX_LIST_ITEMS: Final = 128

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]++")
TOKEN_FULL_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]++\Z")
_LWS_RE = re.compile(r"[ \t]*+")
# A generic parameter value (gen-value = token / host / quoted-string, RFC 3261 §7.3.1);
# hosts bring ':' '[' ']' (IPv6 references in received=, maddr=). Some UAs put '/' or
# '@' in unquoted values; we accept them rather than fail the whole message.
_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]/@&=$]++")
# Quoted string body: qdtext or quoted-pair (RFC 3261 §25.1). The two alternatives start
# with different characters, so the possessive form loses no match; it keeps an
# unterminated quote from being retried at every shorter length.
_QUOTED_RE = re.compile(r'"((?:[^"\\]++|\\.)*+)"', re.DOTALL)


def is_token(text: str) -> bool:
    return TOKEN_FULL_RE.match(text) is not None


def skip_lws(text: str, pos: int) -> int:
    m = _LWS_RE.match(text, pos)
    return m.end() if m else pos


def read_token(text: str, pos: int, what: str = "token") -> tuple[str, int]:
    m = TOKEN_RE.match(text, pos)
    if m is None:
        raise SipParseError(f"expected {what} at offset {pos}")
    return m.group(), m.end()


def read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``pos`` (on the opening quote).

    Returns the raw form *with* its quotes, so that re-serialising keeps it byte-exact.
    """
    m = _QUOTED_RE.match(text, pos)
    if m is None:
        raise SipParseError("unterminated quoted string")
    return m.group(), m.end()


def unquote(quoted: str) -> str:
    """The content of a quoted-string with quoted-pairs resolved (RFC 3261 §25.1)."""
    if len(quoted) >= 2 and quoted[0] == '"' and quoted[-1] == '"':
        body = quoted[1:-1]
        if "\\" not in body:
            return body
        out: list[str] = []
        it = iter(body)
        for ch in it:
            if ch == "\\":
                out.append(next(it, ""))
            else:
                out.append(ch)
        return "".join(out)
    return quoted


def quote(value: str) -> str:
    """Make a quoted-string of ``value``, escaping ``"`` and ``\\``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Params:
    """Ordered ``;name=value`` parameters with case-insensitive names (RFC 3261 §7.3.1).

    Values keep their raw form (quoted strings keep their quotes); ``None`` marks a
    parameter without ``=value``. Immutable: the ``with_``/``without`` methods return
    new objects, which keeps the parsed views that share them safe.
    """

    __slots__ = ("_items",)

    def __init__(self, items: tuple[tuple[str, str | None], ...] = ()) -> None:
        self._items = items

    @property
    def items(self) -> tuple[tuple[str, str | None], ...]:
        return self._items

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self._items:
            if k.lower() == lname:
                return v
        return default

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Params) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Params({self._items!r})"

    def with_(self, name: str, value: str | None = None) -> Params:
        """Set ``name`` (replacing an existing one in place, else appending)."""
        lname = name.lower()
        items = list(self._items)
        for i, (k, _) in enumerate(items):
            if k.lower() == lname:
                items[i] = (k, value)
                return Params(tuple(items))
        items.append((name, value))
        return Params(tuple(items))

    def without(self, name: str) -> Params:
        lname = name.lower()
        return Params(tuple((k, v) for k, v in self._items if k.lower() != lname))

    def __str__(self) -> str:
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self._items)


EMPTY_PARAMS = Params()


# Fast path: parameters written the usual way (no LWS, no quoted values), to the end.
_SIMPLE_PARAMS_RE = re.compile(
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]/@&=$]++)?+)*+\Z"
)


def read_params(text: str, pos: int, stop: str = ",") -> tuple[Params, int]:
    """Read ``*( SEMI generic-param )`` from ``pos``, allowing LWS around ``;`` and ``=``.

    Stops at the end, or (after optional LWS) at any character of ``stop`` that is not
    ``;``. An empty parameter (``;;``) is an error: RFC 4475 §3.1.2.1.
    """
    if pos == len(text):
        return EMPTY_PARAMS, pos
    if _SIMPLE_PARAMS_RE.match(text, pos) is not None:
        simple: list[tuple[str, str | None]] = []
        parts = text[pos + 1 :].split(";")
        if len(parts) > MAX_PARAMS:
            raise SipParseError("too many parameters")
        for part in parts:
            pname, eq, pvalue = part.partition("=")
            simple.append((pname, pvalue if eq else None))
        return Params(tuple(simple)), len(text)
    items: list[tuple[str, str | None]] = []
    n = len(text)
    while True:
        pos = skip_lws(text, pos)
        if pos >= n or text[pos] != ";":
            break
        pos = skip_lws(text, pos + 1)
        m = TOKEN_RE.match(text, pos)
        if m is None:
            raise SipParseError("empty or malformed parameter")
        name = m.group()
        pos = skip_lws(text, m.end())
        value: str | None = None
        if pos < n and text[pos] == "=":
            pos = skip_lws(text, pos + 1)
            if pos < n and text[pos] == '"':
                value, pos = read_quoted(text, pos)
            else:
                mv = _PARAM_VALUE_RE.match(text, pos)
                if mv is None:
                    raise SipParseError(f"parameter {name!r} has an empty value")
                value, pos = mv.group(), mv.end()
        items.append((name, value))
        if len(items) > MAX_PARAMS:
            raise SipParseError("too many parameters")
    if pos < n and text[pos] not in stop:
        raise SipParseError(f"unexpected {text[pos]!r} after parameters")
    return Params(tuple(items)), pos


# split_list's scanner. One list element's worth of text, up to a top-level comma: plain
# characters, complete quoted strings, and complete <...> sections (which may hold quoted
# strings and commas of their own). Every alternative starts with a different character
# and every run is possessive, so the scan is linear and runs in C; Python only sees the
# commas, which MAX_LIST_ITEMS bounds.
_QUOTED = r'"(?:[^"\\]++|\\.)*+"'
_LIST_ELEMENT_RE = re.compile(rf'(?:[^",<]++|{_QUOTED}|<(?:[^">]++|{_QUOTED})*+>)*+', re.DOTALL)
# The inside of an unclosed '<': the rest of the value is one element, quotes still count.
_ANGLE_TAIL_RE = re.compile(rf'(?:[^"]++|{_QUOTED})*+\Z', re.DOTALL)


def split_list(value: str, allow_empty: bool = False) -> list[str]:
    """Split a comma-separated header value at top level (outside quotes and ``<>``).

    RFC 3261 §7.3.1 allows several values of a list header on one line. Empty items are
    an error unless ``allow_empty`` (RFC 4475 §3.1.2.1 shows ``,,`` must be refused where
    an element is required). More than :data:`MAX_LIST_ITEMS` elements are refused.
    """
    if "," not in value:
        item = value.strip()
        if not item and not allow_empty:
            raise SipParseError("empty header value")
        return [item] if item else []
    items: list[str] = []
    start = 0
    n = len(value)
    element = _LIST_ELEMENT_RE.match
    while True:
        m = element(value, start)
        i = start if m is None else m.end()  # the pattern matches the empty string
        if i >= n:
            break
        ch = value[i]
        if ch == ",":
            items.append(value[start:i].strip())
            if len(items) >= MAX_LIST_ITEMS:
                raise SipParseError("too many elements in header list")
            start = i + 1
            continue
        if ch == "<" and _ANGLE_TAIL_RE.match(value, i + 1) is not None:
            break  # unclosed '<': the rest is one element (its parser will refuse it)
        raise SipParseError("unterminated quoted string")
    items.append(value[start:].strip())
    if not allow_empty and any(not item for item in items):
        raise SipParseError("empty element in header list")
    return [item for item in items if item]
