"""Typed values of the media attributes the relay reads and writes.

- Direction: ``a=sendrecv|sendonly|recvonly|inactive`` (RFC 8866 §6.7, RFC 3264 §5.1, §6.1).
- ``a=rtpmap`` (RFC 8866 §6.6), ``a=fmtp`` (§6.15), ``a=ptime``/``a=maxptime`` (§6.4, §6.5).
- ``a=rtcp`` (RFC 3605 §2.1): RTCP port, optionally on another address.
- ``a=ssrc`` (RFC 5576 §4.1).

``a=rtcp-mux`` (RFC 5761 §5.1.1) is a property attribute without a value and needs no type.
``a=crypto`` lives in :mod:`limen.sdp.sdes`.

Each ``parse`` raises :class:`~limen.sdp.errors.SdpParseError` only. The session model uses
them leniently: an attribute whose value does not parse is treated as unknown (kept, written
back, but not returned by the typed accessors), because one bad attribute from a phone should
not fail a call that does not depend on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from limen.sdp.errors import SdpParseError
from limen.sdp.fields import MAX_PORT, Connection, parse_uint

MAX_PAYLOAD_TYPE = 127


class Direction(enum.Enum):
    """Media direction from the point of view of the party that wrote the SDP."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @classmethod
    def of(cls, *, send: bool, recv: bool) -> Direction:
        if send:
            return cls.SENDRECV if recv else cls.SENDONLY
        return cls.RECVONLY if recv else cls.INACTIVE

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reversed(self) -> Direction:
        """The same stream seen from the other end: sendonly ⇄ recvonly (RFC 3264 §6.1)."""
        return Direction.of(send=self.receives, recv=self.sends)

    def restricted_to(self, other: Direction) -> Direction:
        """Both directions' permissions at once (what both parties allow)."""
        return Direction.of(send=self.sends and other.sends, recv=self.receives and other.receives)


DIRECTION_NAMES = frozenset(d.value for d in Direction)


def parse_payload_type(text: str) -> int:
    return parse_uint(text, "payload type", MAX_PAYLOAD_TYPE)


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]``.

    ``channels`` is the encoding parameter of audio streams (RFC 8866 §6.6: default 1, written
    only when given).
    """

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        pt_text, _, rest = value.strip().partition(" ")
        parts = rest.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise SdpParseError(f"invalid rtpmap: {value!r}")
        channels = parse_uint(parts[2], "rtpmap channels") if len(parts) == 3 else None
        return cls(
            parse_payload_type(pt_text),
            parts[0],
            parse_uint(parts[1], "rtpmap clock rate"),
            channels,
        )

    @property
    def name(self) -> str:
        """The encoding name upper-cased, for comparisons (names are case-insensitive)."""
        return self.encoding.upper()

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


@dataclass(frozen=True, slots=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>`` (parameters kept as text)."""

    format: str
    parameters: str

    @classmethod
    def parse(cls, value: str) -> Fmtp:
        fmt, _, params = value.strip().partition(" ")
        if not fmt:
            raise SdpParseError(f"invalid fmtp: {value!r}")
        return cls(fmt, params.strip())

    def __str__(self) -> str:
        return f"{self.format} {self.parameters}"


@dataclass(frozen=True, slots=True)
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]`` (RFC 3605 §2.1)."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute:
        port_text, _, rest = value.strip().partition(" ")
        port = parse_uint(port_text, "rtcp port", MAX_PORT)
        return cls(port, Connection.parse(rest) if rest.strip() else None)

    def __str__(self) -> str:
        return str(self.port) if self.connection is None else f"{self.port} {self.connection}"


@dataclass(frozen=True, slots=True)
class SsrcAttribute:
    """``a=ssrc:<ssrc-id> <attribute>[:<value>]`` (RFC 5576 §4.1), e.g. ``cname``."""

    ssrc: int
    attribute: str
    value: str | None = None

    @classmethod
    def parse(cls, value: str) -> SsrcAttribute:
        ssrc_text, _, rest = value.strip().partition(" ")
        ssrc = parse_uint(ssrc_text, "ssrc", 0xFFFFFFFF)
        name, sep, attr_value = rest.strip().partition(":")
        if not name:
            raise SdpParseError(f"invalid ssrc attribute: {value!r}")
        return cls(ssrc, name, attr_value if sep else None)

    def __str__(self) -> str:
        text = f"{self.ssrc} {self.attribute}"
        return text if self.value is None else f"{text}:{self.value}"


def parse_ptime(value: str) -> int:
    """``a=ptime``/``a=maxptime`` in milliseconds.

    RFC 8866 §6.4 has an integer; a few devices write ``20.0``, which we round.
    """
    text = value.strip()
    whole, dot, fraction = text.partition(".")
    milliseconds = parse_uint(whole, "ptime")
    if dot:
        parse_uint(fraction, "ptime")
        milliseconds = round(float(text))
    return milliseconds
