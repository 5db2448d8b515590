"""The offer/answer model with SDP (RFC 3264) as the relay needs it.

- :func:`answer_direction`: RFC 3264 §6.1 direction rules (sendonly → recvonly, recvonly →
  sendonly, inactive → inactive, sendrecv → whatever we allow).
- :func:`build_answer`: an answer skeleton with the same number and order of ``m=`` lines
  as the offer (§6), port 0 for the streams we reject (§6: a rejected stream keeps its
  ``m=`` line; we echo the offered formats so the line stays valid), the offered payload
  type numbers for the codecs we accept (§6.1), telephone-event and CN kept when allowed.
  Crypto is not filled in: :func:`limen.sdp.sdes.answer_crypto` picks the suite and makes
  our key, and the caller writes ``media.crypto``.
- Hold (§8.4): :func:`is_hold` — a stream is held when the party that wrote the SDP does
  not want to receive: ``a=sendonly``/``a=inactive`` or the legacy RFC 2543 ``c=0.0.0.0``.
- Origin versions (§8): :class:`LocalOrigin` keeps one ``o=`` line per side we speak to and
  increments its version only when what we send changes (§8: "MUST be incremented" on
  change, and the same version for an unchanged re-send, e.g. a session refresh).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from limen.sdp.attributes import Direction
from limen.sdp.codecs import Codec, select_codecs
from limen.sdp.fields import Connection, Origin, address_type
from limen.sdp.session import MediaDescription, SdpLine, SessionDescription

DEFAULT_PROTOS = frozenset({"RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF"})


def answer_direction(offered: Direction, local: Direction = Direction.SENDRECV) -> Direction:
    """The answer's direction for an offered one (RFC 3264 §6.1).

    ``local`` is what we are willing to do (e.g. sendonly to put the offerer on hold).
    The answer can only send what the offerer receives and receive what it sends.
    """
    return offered.reversed().restricted_to(local)


def is_hold(session: SessionDescription, media: MediaDescription) -> bool:
    """Whether the writer of ``session`` holds ``media`` (RFC 3264 §8.4).

    True for sendonly or inactive (including via the session-level attribute) and for the
    legacy RFC 2543 ``c=0.0.0.0``. A rejected stream (port 0) is not "held".
    """
    if media.rejected:
        return False
    return not session.effective_direction(media).receives


def is_session_on_hold(session: SessionDescription) -> bool:
    """True if every accepted audio stream is held (and there is at least one)."""
    audio = [m for m in session.media if m.kind == "audio" and not m.rejected]
    return bool(audio) and all(is_hold(session, m) for m in audio)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What we accept when answering.

    ``codecs``: encoding names in preference order (``"PCMA"``, ``"G722/8000"`` ...); empty
    means any codec the offer has. ``reorder`` puts the answer's codecs in our order instead
    of the offer's. ``direction``: what we are willing to do (sendonly to hold the peer).
    """

    codecs: tuple[str, ...] = ()
    telephone_event: bool = True
    comfort_noise: bool = True
    reorder: bool = False
    media_types: frozenset[str] = frozenset({"audio"})
    protos: frozenset[str] = DEFAULT_PROTOS
    direction: Direction = Direction.SENDRECV
    rtcp_mux: bool = True
    ptime: int | None = None


def build_answer(
    offer: SessionDescription,
    capabilities: Capabilities,
    *,
    origin: Origin,
    address: str,
    ports: Sequence[int],
    session_name: str = "-",
) -> SessionDescription:
    """An answer skeleton to ``offer`` (RFC 3264 §6).

    ``ports[i]`` is our port for the offer's ``m=`` line ``i``; 0 rejects that stream (the
    relay does so when it has no ports left, say). A stream is also rejected when the offer
    rejected it, when its media type or protocol is not in ``capabilities``, or when no codec
    is acceptable. Each accepted stream gets our codecs with the offer's payload type
    numbers, their rtpmap/fmtp lines, ptime, an explicit direction, and ``a=rtcp-mux`` if
    both sides want it (RFC 5761 §5.1.1). The session ``c=`` is ``address``.
    """
    if len(ports) != len(offer.media):
        raise ValueError(f"need {len(offer.media)} ports, got {len(ports)}")
    answer = SessionDescription.create(
        origin, name=session_name, connection=Connection(address, address_type(address))
    )
    for offered, port in zip(offer.media, ports, strict=True):
        line = offered.media_line
        codecs: list[Codec] = []
        if (
            port
            and line.port
            and line.media in capabilities.media_types
            and line.proto.upper() in capabilities.protos
        ):
            codecs = select_codecs(
                offered.codecs,
                capabilities.codecs or None,
                telephone_event=capabilities.telephone_event,
                comfort_noise=capabilities.comfort_noise,
                reorder=capabilities.reorder,
            )
        if not codecs:
            # Rejected (§6): port 0, formats echoed from the offer, nothing else needed.
            answer.media.append(
                MediaDescription.create(line.media, 0, line.proto, line.formats or ("0",))
            )
            continue
        media = MediaDescription.create(
            line.media, port, line.proto, [c.payload_type for c in codecs]
        )
        for codec in codecs:
            media.lines.append(SdpLine.attribute("rtpmap", str(codec.rtpmap)))
            if codec.fmtp is not None:
                media.lines.append(SdpLine.attribute("fmtp", f"{codec.payload_type} {codec.fmtp}"))
        ptime = capabilities.ptime or offered.ptime
        if ptime is not None:
            media.ptime = ptime
        media.direction = answer_direction(
            offer.effective_direction(offered), capabilities.direction
        )
        if capabilities.rtcp_mux and offered.rtcp_mux:
            media.rtcp_mux = True
        answer.media.append(media)
    return answer


def _body_key(session: SessionDescription) -> tuple[tuple[SdpLine, ...], ...]:
    """Everything except ``o=``: what decides whether the version must change."""
    return (
        tuple(line for line in session.lines if line.type != "o"),
        *(tuple(m.lines) for m in session.media),
    )


@dataclass(slots=True)
class LocalOrigin:
    """The ``o=`` line we present to one side of a call (RFC 3264 §8, RFC 8866 §5.2).

    Topology hiding: the other side's username, session id and address never leak through.
    :meth:`stamp` writes our origin into an outgoing description and increments the version
    only if the description differs from the last one stamped.
    """

    address: str
    username: str = "limen"
    session_id: str = field(default_factory=lambda: str(secrets.randbelow(10**12) + 1))
    version: int = 0
    _last: tuple[tuple[SdpLine, ...], ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def origin(self) -> Origin:
        return Origin(
            self.username,
            self.session_id,
            self.version,
            "IN",
            address_type(self.address),
            self.address,
        )

    def stamp(self, session: SessionDescription) -> None:
        key = _body_key(session)
        if self._last is not None and key != self._last:
            self.version += 1
        self._last = key
        session.origin = self.origin
