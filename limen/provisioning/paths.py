"""Request targets of the provisioning port: ``/<hash>/<path>``, checked before anything
is looked up or forwarded (sans-IO: bytes in, a :class:`HashTarget` or a
:class:`Refusal` out).

Only the origin form (RFC 9112 §3.2.1) is accepted; the absolute form
(``GET https://pbx/...``), the authority form and ``*`` are refused with 400, so Limen can
never be used as an open proxy. Every path segment is percent-decoded once, strictly, and
refused (400) when it could walk out of the hash folder on *any* server behind us:

- ``.`` / ``..`` segments, also encoded (``%2e%2e``), followed by a path parameter
  (``..;x``, which Tomcat reads as ``..``) or padded with dots and spaces (``.. ``, which
  Windows reads as ``..``);
- an encoded slash or backslash (``%2f``, ``%5c``), a raw backslash;
- an encoded percent sign (``%252e``: a second decoding would make a dot) — double
  encoding is never legitimate in a phone's request;
- malformed escapes (``%zz``), control characters, bytes that are not UTF-8 once decoded
  (``%c0%ae``, the overlong dot);
- empty segments (``//``), except a final slash.

The first segment must look like a provisioning hash (8-64 letters or digits, no escapes),
else the answer is 404 like any unknown hash. The path is forwarded exactly as received
once it has passed these checks (no re-encoding, so the PBX sees what the phone sent).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

HASH_RE = re.compile(rb"^[A-Za-z0-9]{8,64}$")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAC_FILE = re.compile(r"^([0-9A-Fa-f]{12})(?=[._-]|$)")
_MAC_AGENT = re.compile(r"MAC:\s*([0-9A-Fa-f]{2}(?:[-:]?[0-9A-Fa-f]{2}){5})")


class Refusal(Exception):
    """A request refused before any lookup or forwarding: HTTP ``status`` and a short
    ``reason`` for the access log (never echoed with request data)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HashTarget:
    """A checked ``/<hash>/<path>`` target."""

    hash: str
    # Decoded segments after the hash (may end with "" for a trailing slash).
    segments: tuple[str, ...]
    # The target exactly as received (path and query), safe to forward.
    raw: bytes

    @property
    def filename(self) -> str:
        """The last decoded segment ('' for the hash folder itself)."""
        return self.segments[-1] if self.segments else ""

    @property
    def redacted_path(self) -> str:
        """The path for logs, with the hash (a secret) replaced and no query string."""
        return "/{hash}" + "".join("/" + s for s in self.segments)


def _decode_segment(raw: bytes) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # '%'
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise Refusal(400, "malformed percent-encoding")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    if any(b < 0x20 or b == 0x7F for b in out):
        raise Refusal(400, "control character in path")
    if b"/" in out or b"\\" in out:
        raise Refusal(400, "encoded slash or backslash in path")
    if b"%" in out:
        raise Refusal(400, "double percent-encoding in path")
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "path is not UTF-8 once decoded") from None
    # Unicode look-alikes (U+2024 ONE DOT LEADER, U+FF0E FULLWIDTH FULL STOP, U+FF0F
    # FULLWIDTH SOLIDUS ...) become '.' and '/' under NFKC, and a server further on may
    # apply it. The checks below run on the normalised text, and a segment that NFKC would
    # change is refused outright: phones ask for plain ASCII file names.
    normal = unicodedata.normalize("NFKC", text)
    if "/" in normal or "\\" in normal:
        raise Refusal(400, "look-alike slash or backslash in path")
    if normal != text:
        bare_normal = normal.split(";", 1)[0]
        if bare_normal and bare_normal.strip(" .") == "":
            raise Refusal(400, "path traversal")
        raise Refusal(400, "path not in Unicode normal form (NFKC)")
    if any(0x80 <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text):
        raise Refusal(400, "control character in path")
    bare = text.split(";", 1)[0]
    if text and bare.strip(" .") == "":
        raise Refusal(400, "path traversal")
    return text


def parse_target(target: bytes) -> HashTarget:
    """Check a request target; raise :class:`Refusal` (400 or 404) when it is refused."""
    if not target.startswith(b"/"):
        raise Refusal(400, "not an origin-form target (absolute URL or authority)")
    path, question, _query = target.partition(b"?")
    if question:
        # The PBX needs the file's path only; a query string could steer a config server
        # (or a cache in front of it) to something else.
        raise Refusal(400, "query string")
    if b"#" in target:
        raise Refusal(400, "fragment in target")
    if b"\\" in path:
        raise Refusal(400, "backslash in path")
    raw_segments = path[1:].split(b"/")
    decoded = [_decode_segment(s) for s in raw_segments]
    for index, segment in enumerate(decoded):
        if segment == "" and index != len(decoded) - 1:
            raise Refusal(400, "empty path segment")
    if not HASH_RE.match(raw_segments[0]):
        raise Refusal(404, "unknown hash")
    return HashTarget(hash=decoded[0].lower(), segments=tuple(decoded[1:]), raw=target)


def mac_from_filename(filename: str) -> str | None:
    """``00085D4330B8.cfg`` / ``00085d4330b8_local.cfg`` → ``00085D4330B8``."""
    found = _MAC_FILE.match(filename)
    return found.group(1).upper() if found else None


def mac_from_user_agent(agent: str) -> str | None:
    """Mitel/Aastra phones announce themselves as ``... MAC:00-08-5D-43-30-B8 V:...``."""
    found = _MAC_AGENT.search(agent)
    return re.sub(r"[-:]", "", found.group(1)).upper() if found else None
