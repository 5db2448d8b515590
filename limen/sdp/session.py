"""SDP session descriptions: parse, inspect, edit, write (RFC 8866 §5, §6, §9).

Design (like ``limen.sip.message``): a parsed description keeps every line as it came, in
order, split into the session section and one section per ``m=`` line. Typed views
(:class:`~limen.sdp.fields.Origin`, :class:`~limen.sdp.fields.Connection`, codecs, crypto
...) are computed from the lines when asked for; edits replace, insert or remove whole lines.
Lines nobody touched are written back byte for byte, so unknown attributes (ICE candidates,
DTLS fingerprints, vendor lines) and their order survive, and an unmodified description
serialises to exactly its input when that input was well formed (CR LF line ends, no empty
lines).

Reading is lenient where real devices are sloppy and strict where the relay depends on it:

- LF-only line ends and empty lines are accepted (RFC 8866 §5 asks for CR LF; many stacks
  send LF). Output always uses CR LF.
- The first line must be ``v=0`` and the session section needs exactly one valid ``o=``
  (we must increment its version, RFC 3264 §8). Every ``c=`` and ``m=`` line must parse,
  since addresses and ports are what the relay rewrites. A bad line raises
  :class:`~limen.sdp.errors.SdpParseError`; ``parse_sdp`` raises nothing else.
- ``b=`` and ``a=`` lines whose value does not parse are kept but ignored by the typed
  accessors (a malformed ``a=crypto`` line just cannot be chosen, RFC 4568 §7.1.1).
- Bytes are decoded as UTF-8 with ``surrogateescape`` so that any octets (a Latin-1 ``s=``
  from an old phone) round-trip unchanged. NUL and bare CR are refused (RFC 8866 §5).
- Attribute names are compared case-insensitively; their values as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from limen.sdp.attributes import (
    DIRECTION_NAMES,
    Direction,
    Fmtp,
    RtcpAttribute,
    RtpMap,
    SsrcAttribute,
    parse_ptime,
)
from limen.sdp.codecs import STATIC_PAYLOAD_TYPES, Codec, select_codecs
from limen.sdp.errors import SdpParseError
from limen.sdp.fields import Bandwidth, Connection, MediaLine, Origin
from limen.sdp.sdes import CryptoAttribute

CRLF: Final = "\r\n"

# RTP profiles and their secure twins (RFC 3551, RFC 3711 §12, RFC 4585 §4, RFC 5124 §6).
_SECURE_PROTO: Final = {
    "RTP/AVP": "RTP/SAVP",
    "RTP/AVPF": "RTP/SAVPF",
    # DTLS-SRTP profiles (RFC 5764 §8) become their SDES equivalent: we do not do DTLS.
    "UDP/TLS/RTP/SAVP": "RTP/SAVP",
    "UDP/TLS/RTP/SAVPF": "RTP/SAVPF",
}
_PLAIN_PROTO: Final = {
    "RTP/SAVP": "RTP/AVP",
    "RTP/SAVPF": "RTP/AVPF",
    "UDP/TLS/RTP/SAVP": "RTP/AVP",
    "UDP/TLS/RTP/SAVPF": "RTP/AVPF",
}
RTP_PROTOS: Final = frozenset(_SECURE_PROTO) | frozenset(_PLAIN_PROTO)
SECURE_PROTOS: Final = frozenset(_PLAIN_PROTO)

# Line order inside a section (RFC 8866 §5): new lines go before the first line of a type
# that must follow them.
_SESSION_AFTER_C: Final = "btrzka"
_MEDIA_AFTER_C: Final = "bka"
_SESSION_AFTER_B: Final = "trzka"
_MEDIA_AFTER_B: Final = "ka"
_PAYLOAD_ATTRIBUTES: Final = ("rtpmap", "fmtp", "rtcp-fb")
# RFC 8839 §5 (ICE) and RFC 8842 / RFC 8122 / RFC 4145 (DTLS-SRTP) attributes: meaningless
# once the relay terminates the media path, as rtpengine's ICE=remove / DTLS=off do.
ICE_ATTRIBUTES: Final = (
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
)
DTLS_ATTRIBUTES: Final = ("fingerprint", "setup", "tls-id")


def secure_proto(proto: str) -> str:
    """RTP/AVP → RTP/SAVP, RTP/AVPF → RTP/SAVPF; other protocols unchanged."""
    return _SECURE_PROTO.get(proto.upper(), proto)


def plain_proto(proto: str) -> str:
    """RTP/SAVP → RTP/AVP, RTP/SAVPF → RTP/AVPF; other protocols unchanged."""
    return _PLAIN_PROTO.get(proto.upper(), proto)


@dataclass(frozen=True, slots=True)
class SdpLine:
    """One ``<type>=<value>`` line, value as written (without the line end)."""

    type: str
    value: str

    @classmethod
    def attribute(cls, name: str, value: str | None = None) -> SdpLine:
        return cls("a", name if value is None else f"{name}:{value}")

    @property
    def attribute_name(self) -> str:
        """For ``a=`` lines: the name, lower-cased (``a=RTPMAP:0 ...`` → ``rtpmap``)."""
        return self.value.partition(":")[0].lower()

    @property
    def attribute_value(self) -> str:
        """For ``a=`` lines: the text after the first colon ("" for property attributes)."""
        return self.value.partition(":")[2]

    def __str__(self) -> str:
        return f"{self.type}={self.value}"


_T = TypeVar("_T")


def _try_parse(parse: Callable[[str], _T], values: Iterable[str]) -> Iterator[_T]:
    for value in values:
        try:
            yield parse(value)
        except SdpParseError:
            continue


class _Section:
    """Lines of one section and the attribute helpers both section kinds share."""

    __slots__ = ("lines",)
    _AFTER_C: str = ""
    _AFTER_B: str = ""

    def __init__(self, lines: Iterable[SdpLine]) -> None:
        self.lines: list[SdpLine] = list(lines)

    # -- generic line helpers ------------------------------------------------------------

    def _values(self, line_type: str) -> list[str]:
        return [line.value for line in self.lines if line.type == line_type]

    def _insert(self, line: SdpLine, before: str) -> None:
        for index, existing in enumerate(self.lines):
            if existing.type in before and index > 0:
                self.lines.insert(index, line)
                return
        self.lines.append(line)

    def _replace_all(self, match: Callable[[SdpLine], bool], new: Sequence[SdpLine]) -> bool:
        """Put ``new`` where the first matching line was and drop the other matches.

        Returns False (and changes nothing) if no line matched.
        """
        first = next((i for i, line in enumerate(self.lines) if match(line)), None)
        if first is None:
            return False
        kept = [line for line in self.lines[first:] if not match(line)]
        self.lines[first:] = [*new, *kept]
        return True

    # -- attributes ----------------------------------------------------------------------

    def attribute_lines(self, name: str | None = None) -> list[SdpLine]:
        """The ``a=`` lines, all or those named ``name`` (case-insensitive)."""
        key = None if name is None else name.lower()
        return [
            line
            for line in self.lines
            if line.type == "a" and (key is None or line.attribute_name == key)
        ]

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=<name>[:value]`` line ("" for property attributes)."""
        return [line.attribute_value for line in self.attribute_lines(name)]

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=<name>`` line, "" if it has none, None if absent."""
        values = self.attribute_values(name)
        return values[0] if values else None

    def has_attribute(self, name: str) -> bool:
        return bool(self.attribute_lines(name))

    def add_attribute(self, name: str, value: str | None = None) -> None:
        """Append ``a=<name>[:<value>]`` at the end of the section."""
        self.lines.append(SdpLine.attribute(name, value))

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Make ``a=<name>[:<value>]`` the only such line (in place of the first one)."""
        self.set_attribute_lines(name, [SdpLine.attribute(name, value)])

    def set_attribute_lines(self, name: str, lines: Sequence[SdpLine]) -> None:
        """Replace every ``a=<name>`` line by ``lines`` (where the first was, else at the end)."""
        key = name.lower()
        if not self._replace_all(lambda ln: ln.type == "a" and ln.attribute_name == key, lines):
            self.lines.extend(lines)

    def remove_attributes(self, name: str, predicate: Callable[[str], bool] | None = None) -> int:
        """Remove ``a=<name>`` lines (those whose value satisfies ``predicate``, if given).

        Returns how many were removed.
        """
        key = name.lower()
        before = len(self.lines)
        self.lines = [
            line
            for line in self.lines
            if not (
                line.type == "a"
                and line.attribute_name == key
                and (predicate is None or predicate(line.attribute_value))
            )
        ]
        return before - len(self.lines)

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written in this section, if any (the first one)."""
        for line in self.lines:
            if line.type == "a" and line.value.lower() in DIRECTION_NAMES:
                return Direction(line.value.lower())
        return None

    @direction.setter
    def direction(self, direction: Direction | None) -> None:
        new = [] if direction is None else [SdpLine("a", direction.value)]
        found = self._replace_all(
            lambda ln: ln.type == "a" and ln.value.lower() in DIRECTION_NAMES, new
        )
        if not found:
            self.lines.extend(new)

    # -- bandwidth -----------------------------------------------------------------------

    @property
    def bandwidths(self) -> list[Bandwidth]:
        """The ``b=`` lines that parse (RFC 8866 §5.8)."""
        return list(_try_parse(Bandwidth.parse, self._values("b")))

    def set_bandwidth(self, bwtype: str, value: int | None) -> None:
        """Set (or with None remove) the ``b=<bwtype>:`` line."""
        key = bwtype.upper()
        new = [] if value is None else [SdpLine("b", str(Bandwidth(bwtype, value)))]

        def match(line: SdpLine) -> bool:
            return line.type == "b" and line.value.partition(":")[0].upper() == key

        if not self._replace_all(match, new):
            for line in new:
                self._insert(line, self._AFTER_B)

    # -- output --------------------------------------------------------------------------

    def _write(self, out: list[str]) -> None:
        for line in self.lines:
            out.append(f"{line.type}={line.value}{CRLF}")


class MediaDescription(_Section):
    """One ``m=`` section (RFC 8866 §5.14): its first line is always the ``m=`` line."""

    __slots__ = ()
    _AFTER_C = _MEDIA_AFTER_C
    _AFTER_B = _MEDIA_AFTER_B

    @classmethod
    def create(
        cls, media: str, port: int, proto: str, formats: Iterable[str | int]
    ) -> MediaDescription:
        return cls([SdpLine("m", str(MediaLine(media, port, proto, tuple(map(str, formats)))))])

    def copy(self) -> MediaDescription:
        return MediaDescription(self.lines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MediaDescription) and self.lines == other.lines

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<MediaDescription {self.lines[0].value!r}>"

    # -- m= line -------------------------------------------------------------------------

    @property
    def media_line(self) -> MediaLine:
        return MediaLine.parse(self.lines[0].value)

    @media_line.setter
    def media_line(self, value: MediaLine) -> None:
        self.lines[0] = SdpLine("m", str(value))

    @property
    def kind(self) -> str:
        """The media type: ``audio``, ``video``, ``image`` (T.38) ..."""
        return self.media_line.media

    @property
    def port(self) -> int:
        return self.media_line.port

    @port.setter
    def port(self, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        self.media_line = replace(self.media_line, port=port)

    @property
    def proto(self) -> str:
        return self.media_line.proto

    @proto.setter
    def proto(self, proto: str) -> None:
        self.media_line = replace(self.media_line, proto=proto)

    @property
    def formats(self) -> tuple[str, ...]:
        return self.media_line.formats

    @formats.setter
    def formats(self, formats: Sequence[str | int]) -> None:
        self.media_line = replace(self.media_line, formats=tuple(map(str, formats)))

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is rejected or disabled (RFC 3264 §6, §8.2)."""
        return self.media_line.port == 0

    @property
    def is_rtp(self) -> bool:
        return self.media_line.proto.upper() in RTP_PROTOS

    @property
    def secure(self) -> bool:
        """Whether the protocol is an SRTP profile (RTP/SAVP, RTP/SAVPF or DTLS's)."""
        return self.media_line.proto.upper() in SECURE_PROTOS

    def set_secure(self, secure: bool) -> None:
        """Switch RTP/AVP ⇄ RTP/SAVP and RTP/AVPF ⇄ RTP/SAVPF (crypto lines are separate)."""
        proto = self.media_line.proto
        self.proto = secure_proto(proto) if secure else plain_proto(proto)

    # -- connection ----------------------------------------------------------------------

    @property
    def connection(self) -> Connection | None:
        """The first media-level ``c=`` (several only occur with multicast layering)."""
        for value in self._values("c"):
            return Connection.parse(value)
        return None

    @connection.setter
    def connection(self, connection: Connection | None) -> None:
        new = [] if connection is None else [SdpLine("c", str(connection))]
        if not self._replace_all(lambda ln: ln.type == "c", new):
            for line in new:
                self._insert(line, self._AFTER_C)

    # -- codecs --------------------------------------------------------------------------

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` by payload type (the first wins if a type is mapped twice)."""
        maps: dict[int, RtpMap] = {}
        for rtpmap in _try_parse(RtpMap.parse, self.attribute_values("rtpmap")):
            maps.setdefault(rtpmap.payload_type, rtpmap)
        return maps

    @property
    def fmtps(self) -> dict[str, str]:
        """``a=fmtp`` parameters by format."""
        params: dict[str, str] = {}
        for fmtp in _try_parse(Fmtp.parse, self.attribute_values("fmtp")):
            params.setdefault(fmtp.format, fmtp.parameters)
        return params

    @property
    def codecs(self) -> list[Codec]:
        """The ``m=`` formats resolved through rtpmap or RFC 3551's static table, in order.

        A dynamic type without ``a=rtpmap`` cannot be identified and is left out.
        """
        maps, params = self.rtpmaps, self.fmtps
        codecs: list[Codec] = []
        for fmt in self.media_line.formats:
            if not (fmt.isascii() and fmt.isdigit() and len(fmt) <= 3):
                continue
            pt = int(fmt)
            rtpmap = maps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if rtpmap is not None:
                codecs.append(
                    Codec(pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels, params.get(fmt))
                )
        return codecs

    def codec(self, payload_type: int) -> Codec | None:
        return next((c for c in self.codecs if c.payload_type == payload_type), None)

    @property
    def clock_rates(self) -> dict[int, int]:
        """RTP clock rate by payload type (for jitter, RFC 3550 A.8)."""
        return {codec.payload_type: codec.clock_rate for codec in self.codecs}

    def remove_formats(self, formats: Iterable[str | int]) -> None:
        """Drop formats from the ``m=`` line with their rtpmap, fmtp and rtcp-fb lines."""
        drop = {str(fmt) for fmt in formats}
        self.formats = [fmt for fmt in self.media_line.formats if fmt not in drop]
        for name in _PAYLOAD_ATTRIBUTES:
            self.remove_attributes(name, lambda value: value.split(" ", 1)[0] in drop)

    def filter_codecs(
        self,
        keep: Sequence[str] | None,
        *,
        telephone_event: bool = True,
        comfort_noise: bool = True,
        reorder: bool = False,
    ) -> tuple[str, ...]:
        """Keep only the codecs named in ``keep`` (``"PCMA"``, ``"G722/8000"`` ...; None: all).

        ``telephone-event`` (RFC 4733) and ``CN`` (RFC 3389) stay when asked, whatever
        ``keep`` says. With ``reorder`` the kept codecs follow the order of ``keep``
        (DTMF/CN last). Returns the remaining formats. If no codec of ``keep`` is offered,
        nothing is changed and ``()`` is returned: the caller answers 488 (RFC 3264 §6).
        """
        selected = select_codecs(
            self.codecs,
            keep,
            telephone_event=telephone_event,
            comfort_noise=comfort_noise,
            reorder=reorder,
        )
        if not selected:
            return ()
        kept = [str(c.payload_type) for c in selected]
        self.remove_formats(fmt for fmt in self.media_line.formats if fmt not in kept)
        self.formats = kept
        return tuple(kept)

    def reorder_codecs(self, order: Sequence[str]) -> None:
        """Move the codecs named in ``order`` to the front, in that order; others follow."""
        by_pt = {str(c.payload_type): c for c in self.codecs}

        def rank(fmt: str | int) -> int:
            codec = by_pt.get(str(fmt))
            if codec is not None:
                for index, spec in enumerate(order):
                    if codec.matches(spec):
                        return index
            return len(order)

        self.formats = sorted(self.media_line.formats, key=rank)

    # -- timing --------------------------------------------------------------------------

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 8866 §6.4)."""
        return next(_try_parse(parse_ptime, self.attribute_values("ptime")), None)

    @ptime.setter
    def ptime(self, milliseconds: int | None) -> None:
        self._set_optional("ptime", milliseconds)

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in milliseconds (RFC 8866 §6.5)."""
        return next(_try_parse(parse_ptime, self.attribute_values("maxptime")), None)

    @maxptime.setter
    def maxptime(self, milliseconds: int | None) -> None:
        self._set_optional("maxptime", milliseconds)

    def _set_optional(self, name: str, value: object | None) -> None:
        if value is None:
            self.remove_attributes(name)
        else:
            self.set_attribute(name, str(value))

    # -- RTCP ----------------------------------------------------------------------------

    @property
    def rtcp(self) -> RtcpAttribute | None:
        """``a=rtcp`` (RFC 3605): where the peer wants RTCP if not on port + 1."""
        return next(_try_parse(RtcpAttribute.parse, self.attribute_values("rtcp")), None)

    @rtcp.setter
    def rtcp(self, value: RtcpAttribute | None) -> None:
        self._set_optional("rtcp", value)

    @property
    def rtcp_mux(self) -> bool:
        """``a=rtcp-mux`` (RFC 5761 §5.1.1): RTP and RTCP share one port."""
        return self.has_attribute("rtcp-mux")

    @rtcp_mux.setter
    def rtcp_mux(self, enabled: bool) -> None:
        if not enabled:
            self.remove_attributes("rtcp-mux")
        elif not self.rtcp_mux:
            self.add_attribute("rtcp-mux")

    # -- SDES ----------------------------------------------------------------------------

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """The ``a=crypto`` attributes that parse (RFC 4568), in order."""
        return list(_try_parse(CryptoAttribute.parse, self.attribute_values("crypto")))

    @crypto.setter
    def crypto(self, attributes: Sequence[CryptoAttribute]) -> None:
        """Replace every ``a=crypto`` line (where the first was; else at the end)."""
        self.set_attribute_lines(
            "crypto", [SdpLine.attribute("crypto", str(attr)) for attr in attributes]
        )

    # -- identification ------------------------------------------------------------------

    @property
    def ssrcs(self) -> list[SsrcAttribute]:
        """``a=ssrc`` lines (RFC 5576)."""
        return list(_try_parse(SsrcAttribute.parse, self.attribute_values("ssrc")))

    @property
    def mid(self) -> str | None:
        """``a=mid`` (RFC 5888 §4)."""
        return self.attribute("mid")


class SessionDescription(_Section):
    """A whole SDP body: the session-level lines and the media descriptions."""

    __slots__ = ("media",)
    _AFTER_C = _SESSION_AFTER_C
    _AFTER_B = _SESSION_AFTER_B

    def __init__(self, lines: Iterable[SdpLine], media: Iterable[MediaDescription] = ()) -> None:
        super().__init__(lines)
        self.media: list[MediaDescription] = list(media)

    @classmethod
    def create(
        cls,
        origin: Origin,
        *,
        name: str = "-",
        connection: Connection | None = None,
        timing: str = "0 0",
    ) -> SessionDescription:
        """A new description with ``v=``, ``o=``, ``s=``, optional ``c=``, and ``t=``."""
        lines = [SdpLine("v", "0"), SdpLine("o", str(origin)), SdpLine("s", name)]
        if connection is not None:
            lines.append(SdpLine("c", str(connection)))
        lines.append(SdpLine("t", timing))
        return cls(lines)

    def copy(self) -> SessionDescription:
        """An independent copy (lines are immutable, so copying the lists suffices)."""
        return SessionDescription(self.lines, (m.copy() for m in self.media))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SessionDescription)
            and self.lines == other.lines
            and self.media == other.media
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<SessionDescription {self.origin} with {len(self.media)} media>"

    def __str__(self) -> str:
        out: list[str] = []
        self._write(out)
        for media in self.media:
            media._write(out)
        return "".join(out)

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8", "surrogateescape")

    # -- o= and s= -----------------------------------------------------------------------

    @property
    def origin(self) -> Origin:
        return Origin.parse(self._values("o")[0])

    @origin.setter
    def origin(self, origin: Origin) -> None:
        self._replace_all(lambda ln: ln.type == "o", [SdpLine("o", str(origin))])

    def bump_version(self) -> None:
        """Increment the ``o=`` session version (RFC 3264 §8: any change to the SDP)."""
        self.origin = self.origin.next_version()

    @property
    def name(self) -> str | None:
        values = self._values("s")
        return values[0] if values else None

    # -- connection ----------------------------------------------------------------------

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=``, default for media without their own (RFC 8866 §5.7)."""
        for value in self._values("c"):
            return Connection.parse(value)
        return None

    @connection.setter
    def connection(self, connection: Connection | None) -> None:
        new = [] if connection is None else [SdpLine("c", str(connection))]
        if not self._replace_all(lambda ln: ln.type == "c", new):
            for line in new:
                self._insert(line, self._AFTER_C)

    def effective_connection(self, media: MediaDescription) -> Connection | None:
        """The media's own ``c=`` or else the session's."""
        return media.connection or self.connection

    def effective_direction(self, media: MediaDescription) -> Direction:
        """What the writer of this SDP wants for ``media``.

        The media attribute, else the session attribute, else sendrecv (RFC 3264 §5.1).
        A ``c=`` of 0.0.0.0 is RFC 2543 hold (RFC 3264 §8.4): the writer does not want to
        receive, so ``recv`` is removed from the direction. The relay rewrites ``c=`` to its
        own address, so it must write this effective direction explicitly.
        """
        direction = media.direction or self.direction or Direction.SENDRECV
        connection = self.effective_connection(media)
        if connection is not None and connection.is_unspecified and connection.addrtype == "IP4":
            direction = Direction.of(send=direction.sends, recv=False)
        return direction

    def set_connection_address(self, address: str) -> None:
        """Point every stream at ``address``: the session ``c=``, and any media ``c=``
        that exists, are replaced (IP4/IP6 chosen from the address)."""
        connection = Connection.of(address)
        self.connection = connection
        for media in self.media:
            if media.connection is not None:
                media.connection = connection

    def __iter__(self) -> Iterator[MediaDescription]:
        return iter(self.media)

    def remove_attributes_everywhere(self, *names: str) -> int:
        """Remove the named attributes at session level and in every media section."""
        return sum(
            section.remove_attributes(name) for section in (self, *self.media) for name in names
        )

    def strip_ice(self) -> int:
        """Remove ICE attributes (RFC 8839): the relay is the only media address now."""
        return self.remove_attributes_everywhere(*ICE_ATTRIBUTES)

    def strip_dtls(self) -> int:
        """Remove DTLS-SRTP attributes (RFC 8842): we key SRTP with SDES only."""
        return self.remove_attributes_everywhere(*DTLS_ATTRIBUTES)


# Bounds on one description (issue 9: what a peer sends costs bounded time). A phone's
# offer has a few m= sections and a few dozen lines; with ICE candidates a WebRTC offer
# reaches a few hundred. Each typed view scans its section's lines, so these bound the
# work of every accessor as well as of the parse.
MAX_LINES: Final = 1024
MAX_MEDIA: Final = 32


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`SdpParseError` and nothing else."""
    if isinstance(data, bytes | bytearray | memoryview):
        text = bytes(data).decode("utf-8", "surrogateescape")
    elif isinstance(data, str):
        text = data
        try:  # bytes(sd) must work: only surrogates that stand for raw bytes are allowed
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise SdpParseError("SDP text has unencodable surrogates") from None
    else:
        raise SdpParseError(f"SDP must be bytes or str, not {type(data).__name__}")
    if "\x00" in text:
        raise SdpParseError("NUL character in SDP")
    raw_lines = text.split("\n")
    if len(raw_lines) > MAX_LINES:
        raise SdpParseError(f"SDP with more than {MAX_LINES} lines")
    session: list[SdpLine] = []
    media: list[MediaDescription] = []
    current = session
    for raw in raw_lines:
        if raw.endswith("\r"):
            raw = raw[:-1]
        if not raw:
            continue  # tolerate empty lines, e.g. a trailing CR LF CR LF
        kind = raw[0]
        if len(raw) < 2 or raw[1] != "=" or not ("a" <= kind <= "z"):
            raise SdpParseError(f"invalid SDP line: {raw[:60]!r}")
        if "\r" in raw:
            raise SdpParseError(f"bare CR in SDP line: {raw[:60]!r}")
        line = SdpLine(kind, raw[2:])
        if not session:
            if kind != "v" or line.value.strip() != "0":
                raise SdpParseError(f"SDP must start with v=0, not {raw[:60]!r}")
        elif kind == "m":
            MediaLine.parse(line.value)
            if len(media) >= MAX_MEDIA:
                raise SdpParseError(f"SDP with more than {MAX_MEDIA} media descriptions")
            media.append(MediaDescription([line]))
            current = media[-1].lines
            continue
        elif kind == "c":
            Connection.parse(line.value)
        elif kind == "v" and current is session:
            raise SdpParseError("more than one v= line")
        current.append(line)
    if not session:
        raise SdpParseError("empty SDP")
    origins = [line.value for line in session if line.type == "o"]
    if len(origins) != 1:
        raise SdpParseError(f"SDP needs exactly one o= line, found {len(origins)}")
    Origin.parse(origins[0])
    if sum(1 for line in session if line.type == "c") > 1:
        raise SdpParseError("more than one session-level c= line")
    return SessionDescription(session, media)
