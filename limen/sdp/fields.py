"""Typed values of the SDP lines that carry structure (RFC 8866 §5.2, §5.7, §5.8, §5.14).

``o=`` (:class:`Origin`), ``c=`` (:class:`Connection`), ``b=`` (:class:`Bandwidth`) and
``m=`` (:class:`MediaLine`). Each is a frozen dataclass with a ``parse`` classmethod that
raises :class:`~limen.sdp.errors.SdpParseError` and nothing else, and a ``__str__`` that
writes the line value (without the ``x=`` prefix) in canonical form.

Fields are split on runs of white space, not on single spaces as the RFC 8866 §9 grammar
says: some devices pad with two spaces, and nothing is lost because unmodified lines are
written back from their original text, not from these values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from limen.sdp.errors import SdpParseError

IP4: Final = "IP4"
IP6: Final = "IP6"
NETTYPE_IN: Final = "IN"
MAX_PORT: Final = 65535
_MAX_DIGITS: Final = 40
# RTP payload types are 7 bits (RFC 3550 §5.1), so an m= line cannot name more than 128
# distinct formats usefully; more only makes every codec lookup cost more (issue 9).
MAX_FORMATS: Final = 128


def parse_uint(text: str, what: str, maximum: int | None = None) -> int:
    """A non-negative decimal integer of ASCII digits (``int()`` alone accepts "٣", "+1", " 1")."""
    # The length cap keeps int() below CPython's digit limit (it would raise ValueError).
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        raise SdpParseError(f"invalid {what}: {text[:_MAX_DIGITS]!r}")
    value = int(text)
    if maximum is not None and value > maximum:
        raise SdpParseError(f"{what} out of range: {text!r}")
    return value


def address_type(address: str) -> str:
    """``IP6`` if the address has a colon (RFC 5118 §4.6: no brackets in SDP), else ``IP4``."""
    return IP6 if ":" in address else IP4


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (§5.2).

    ``session_version`` is an integer because RFC 3264 §8 asks us to increment it; the
    session id is kept as text (RFC 8866 wants digits, but it is only ever compared).
    """

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpParseError(f"o= line needs 6 fields: {value!r}")
        username, session_id, version, nettype, addrtype, address = parts
        return cls(
            username,
            session_id,
            parse_uint(version, "o= session version"),
            nettype,
            addrtype,
            address,
        )

    def next_version(self) -> Origin:
        """The same origin with the session version incremented (RFC 3264 §8)."""
        return replace(self, session_version=self.session_version + 1)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (§5.7).

    For multicast the address carries ``/ttl[/count]`` (IP4) or ``/count`` (IP6); these are
    split into ``ttl`` and ``count``. IPv6 addresses are written without brackets
    (RFC 5118 §4.6). Host names are allowed by the grammar and kept as given.
    """

    address: str
    addrtype: str = IP4
    nettype: str = NETTYPE_IN
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def of(cls, address: str) -> Connection:
        """A unicast ``IN`` connection, ``IP6`` if the address has a colon."""
        return cls(address, address_type(address))

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpParseError(f"c= line needs 3 fields: {value!r}")
        nettype, addrtype, address = parts
        ttl: int | None = None
        count: int | None = None
        if "/" in address:
            address, *suffix = address.split("/")
            if addrtype == IP6:
                if len(suffix) != 1:
                    raise SdpParseError(f"invalid IP6 multicast suffix: {value!r}")
                count = parse_uint(suffix[0], "c= address count")
            else:
                if len(suffix) > 2:
                    raise SdpParseError(f"invalid multicast suffix: {value!r}")
                ttl = parse_uint(suffix[0], "c= TTL", 255)
                if len(suffix) == 2:
                    count = parse_uint(suffix[1], "c= address count")
        if not address:
            raise SdpParseError(f"empty connection address: {value!r}")
        return cls(address, addrtype, nettype, ttl, count)

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 (RFC 2543 hold, RFC 3264 §8.4) or ``::``."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (§5.8): ``AS``/``CT`` kbit/s, ``TIAS`` bit/s, ``RS``/``RR``."""

    type: str
    value: int

    @classmethod
    def parse(cls, value: str) -> Bandwidth:
        bwtype, sep, amount = value.partition(":")
        if not sep or not bwtype:
            raise SdpParseError(f"invalid b= line: {value!r}")
        return cls(bwtype, parse_uint(amount.strip(), "bandwidth"))

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True)
class MediaLine:
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` (§5.14).

    Port 0 rejects or disables the stream (RFC 3264 §6, §8.2). ``formats`` are the RTP
    payload type numbers as text (other protocols use other tokens).
    """

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None

    @classmethod
    def parse(cls, value: str) -> MediaLine:
        parts = value.split()
        if len(parts) < 3:
            raise SdpParseError(f"m= line needs at least 3 fields: {value!r}")
        media, port_text, proto, *formats = parts
        if len(formats) > MAX_FORMATS:
            raise SdpParseError(f"m= line with more than {MAX_FORMATS} formats")
        count: int | None = None
        if "/" in port_text:
            port_text, _, count_text = port_text.partition("/")
            count = parse_uint(count_text, "m= port count")
        port = parse_uint(port_text, "m= port", MAX_PORT)
        return cls(media, port, proto, tuple(formats), count)

    def __str__(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join((self.media, port, self.proto, *self.formats))
