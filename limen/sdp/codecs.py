"""Payload formats: the RFC 3551 static payload types and resolved codec descriptions.

RFC 3551 §6 (tables 4 and 5) assigns static payload types; a static type may appear in an
``m=`` line without ``a=rtpmap`` (RFC 8866 §6.6). :class:`Codec` joins a format from the
``m=`` line with its rtpmap (explicit or static) and fmtp. ``telephone-event`` is RFC 4733
§7.1.1; ``CN`` (comfort noise) is RFC 3389 §5, static type 13 at 8000 Hz.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from limen.sdp.attributes import RtpMap

TELEPHONE_EVENT: Final = "TELEPHONE-EVENT"
COMFORT_NOISE: Final = "CN"

# RFC 3551 §6, tables 4 (audio) and 5 (video). Unassigned and reserved numbers are absent.
# Mono audio has no channel count: rtpmap omits it for one channel (RFC 8866 §6.6).
STATIC_PAYLOAD_TYPES: Final[dict[int, RtpMap]] = {
    pt: RtpMap(pt, name, rate, channels)
    for pt, name, rate, channels in (
        (0, "PCMU", 8000, None),
        (3, "GSM", 8000, None),
        (4, "G723", 8000, None),
        (5, "DVI4", 8000, None),
        (6, "DVI4", 16000, None),
        (7, "LPC", 8000, None),
        (8, "PCMA", 8000, None),
        # G.722 samples at 16 kHz but its RTP clock is 8000 for historical reasons (§4.5.2).
        (9, "G722", 8000, None),
        (10, "L16", 44100, 2),
        (11, "L16", 44100, None),
        (12, "QCELP", 8000, None),
        (13, "CN", 8000, None),
        (14, "MPA", 90000, None),
        (15, "G728", 8000, None),
        (16, "DVI4", 11025, None),
        (17, "DVI4", 22050, None),
        (18, "G729", 8000, None),
        (25, "CelB", 90000, None),
        (26, "JPEG", 90000, None),
        (28, "nv", 90000, None),
        (31, "H261", 90000, None),
        (32, "MPV", 90000, None),
        (33, "MP2T", 90000, None),
        (34, "H263", 90000, None),
    )
}


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload format of a media description, resolved."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None

    @property
    def name(self) -> str:
        """Upper-cased encoding name, the key for codec policy comparisons."""
        return self.encoding.upper()

    @property
    def is_telephone_event(self) -> bool:
        return self.name == TELEPHONE_EVENT

    @property
    def is_comfort_noise(self) -> bool:
        return self.name == COMFORT_NOISE

    @property
    def rtpmap(self) -> RtpMap:
        return RtpMap(self.payload_type, self.encoding, self.clock_rate, self.channels)

    def matches(self, spec: str) -> bool:
        """Whether ``spec`` names this codec: ``"PCMU"`` or ``"G722/8000"`` or
        ``"opus/48000/2"`` (case-insensitive; omitted parts match anything)."""
        parts = spec.split("/")
        if parts[0].upper() != self.name:
            return False
        if len(parts) > 1 and parts[1] != str(self.clock_rate):
            return False
        return len(parts) <= 2 or parts[2] == str(self.channels or 1)


def select_codecs(
    codecs: Sequence[Codec],
    keep: Sequence[str] | None,
    *,
    telephone_event: bool = True,
    comfort_noise: bool = True,
    reorder: bool = False,
) -> list[Codec]:
    """The codecs of ``codecs`` named in ``keep`` (None: every codec), in their order or,
    with ``reorder``, in the order of ``keep``; then telephone-event and CN if allowed.

    Empty if no codec other than telephone-event/CN qualifies: a stream that only carries
    DTMF or comfort noise is useless (RFC 3264 §6: reject it).
    """

    def rank(codec: Codec) -> int:
        assert keep is not None
        return next(i for i, spec in enumerate(keep) if codec.matches(spec))

    auxiliary = [c for c in codecs if c.is_telephone_event or c.is_comfort_noise]
    if keep is None:
        chosen = [c for c in codecs if c not in auxiliary]
    else:
        chosen = [c for c in codecs if c not in auxiliary and any(map(c.matches, keep))]
        if reorder:
            chosen.sort(key=rank)
    if not chosen:
        return []
    extras = [
        c
        for c in auxiliary
        if (telephone_event and c.is_telephone_event) or (comfort_noise and c.is_comfort_noise)
    ]
    if reorder:
        return [*chosen, *extras]
    wanted = {id(c) for c in (*chosen, *extras)}
    return [c for c in codecs if id(c) in wanted]
