"""Best-effort error responses to requests that failed to parse (RFC 3261 §8.2.6, RFC 4475).

When :func:`limen.sip.parse_message` refuses a request, the sender still deserves an
answer (400 Bad Request, 505 Version Not Supported, 513 Message Too Large) if one can be
built: RFC 4475 expects it for most of its invalid messages. This module builds such a
response from the raw bytes alone, without trusting the header grammar: it copies the
raw Via, From, To, Call-ID and CSeq lines (any spelling, compact forms included, folded
lines kept whole) the way §8.2.6.2 copies them from a parsed request.

Rules (each one keeps us from making things worse):

- Only something whose start line looks like a request gets an answer; a response, or
  anything unrecognisable (a STUN packet, noise), gets ``None``: nothing is sent.
- ACK never gets a response (RFC 3261 §17.2.1 / §8.2.6).
- At least one Via and the CSeq must be present: the sender matches the response to its
  client transaction with the top Via's branch and the CSeq method (§17.1.3). From, To
  and Call-ID are copied when present and omitted when not.

  Deviation, on purpose: §8.2.6.2 would have all five copied. RFC 4475 §3.3.1 (insuf.dat:
  no From, To or Call-ID) still wants "ideally, 400 Bad Request", and a response that the
  sender can match is more useful than silence, so we answer without the missing ones.
- The To header gets ``to_tag`` (§8.2.6.2: a UAS adds a tag to its To) unless the raw line
  already carries a ``tag`` parameter.

Stdlib only; no I/O. The transport layer decides where the bytes go (back to the source).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# A request start line, liberally: token method, something, SIP version. Extra or trailing
# whitespace and a broken Request-URI still count (RFC 4475 §3.1.2.7-§3.1.2.10 want 400).
# Matched in two steps (method, then the last word) rather than with a lazy ``.*?``
# followed by a whitespace run: that form retried the run at every position, quadratic
# in the length of a line of spaces. Possessive runs keep the rest linear.
_METHOD_RE: Final = re.compile(r"([!%'*+\-.0-9A-Z_`a-z~]++)[ \t]++(?=\S)")
_VERSION_WORD_RE: Final = re.compile(r"SIP/[0-9]++\.[0-9]++\Z", re.IGNORECASE)
_HEADER_NAME_RE: Final = re.compile(r"([!%'*+\-.0-9A-Z_`a-z~]++)[ \t]*+:")
_TAG_PARAM_RE: Final = re.compile(r";[ \t]*+tag[ \t]*+=", re.IGNORECASE)
_COMPACT: Final[dict[str, str]] = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
_COPIED: Final = ("via", "from", "to", "call-id", "cseq")
# Header sections larger than this are not searched (the transport's size limits apply
# before us; this only bounds our own work on garbage).
_MAX_SCAN: Final = 256 * 1024


def looks_like_request(data: bytes) -> bool:
    """True when the first non-empty line has the shape of a SIP request line."""
    return _request_method(_start_line(data)) is not None


def error_response(
    data: bytes,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes | None:
    """A minimal ``status`` response to the unparseable request ``data``, or None.

    ``headers`` are appended as given (for example a Server header); the caller makes sure
    they hold no CR or LF.
    """
    if not 300 <= status <= 699 or "\r" in reason or "\n" in reason:
        raise ValueError("error_response builds final non-2xx responses only")
    text = data[:_MAX_SCAN].decode("utf-8", "surrogateescape")
    lines = _head_lines(text)
    if not lines:
        return None
    method = _request_method(lines[0])
    if method is None or method.upper() == "ACK":
        return None
    copied = _copied_fields(lines[1:])
    if not copied.get("via") or not copied.get("cseq"):
        return None
    out = [f"SIP/2.0 {status} {reason}"]
    for key in _COPIED:
        for raw in copied.get(key, ()):
            if key == "to" and to_tag and _TAG_PARAM_RE.search(raw) is None:
                raw = f"{raw};tag={to_tag}"
            out.append(raw)
    for name, value in headers:
        out.append(f"{name}: {value}")
    out.append("Content-Length: 0")
    out.append("")
    out.append("")
    return "\r\n".join(out).encode("utf-8", "surrogateescape")


def _start_line(data: bytes) -> str:
    lines = _head_lines(data[:1024].decode("utf-8", "surrogateescape"))
    return lines[0] if lines else ""


def _request_method(line: str) -> str | None:
    if line[:4].upper() == "SIP/":
        return None
    m = _METHOD_RE.match(line)
    if m is None:
        return None
    rest = line[m.end() :].rstrip(" \t")
    # The version is the last blank-separated word, after at least one other character.
    cut = max(rest.rfind(" "), rest.rfind("\t"))
    if cut <= 0 or _VERSION_WORD_RE.match(rest, cut + 1) is None:
        return None
    return m.group(1)


def _head_lines(text: str) -> list[str]:
    """The header section's lines (start line first), CRLF or bare LF; leading CRLFs
    skipped (RFC 3261 §7.5); stops at the first empty line or the end of the input."""
    lines: list[str] = []
    started = False
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            if started:
                break
            continue
        started = True
        lines.append(line)
    return lines


def _copied_fields(lines: list[str]) -> dict[str, list[str]]:
    """Raw lines of the headers we copy, folded continuations joined with CRLF SP.

    Via may repeat (all copied, in order); of the single-value headers the first wins.
    """
    fields: dict[str, list[list[str]]] = {}
    current: list[str] | None = None  # the lines of the field being continued by folding
    for line in lines:
        if line[0] in " \t":
            # Collected, joined once at the end: joining as we go is quadratic in the
            # number of continuation lines.
            if current is not None:
                current.append(line)
            continue
        current = None
        m = _HEADER_NAME_RE.match(line)
        if m is None:
            continue
        name = m.group(1).lower()
        key = _COMPACT.get(name, name)
        if key not in _COPIED or "\x00" in line:
            continue
        existing = fields.setdefault(key, [])
        if key != "via" and existing:
            continue
        current = [line]
        existing.append(current)
    return {key: ["\r\n".join(parts) for parts in values] for key, values in fields.items()}
