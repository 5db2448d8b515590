"""The media relay (DESIGN.md ``limen/media``): port pool, call → leg → stream → socket,
the packet pipeline (demux, SRTP unprotect, latching, protect, send), media timeouts and
per-stream statistics, controlled through a narrow offer/answer/delete/query interface
(:class:`MediaEngine`) shaped like rtpengine's ng protocol.

Leg names are plain strings chosen by the caller (the gateway uses ``"set"`` and
``"icp"``); nothing here knows what a phone or a PBX is beyond :class:`LegSpec`.
"""

from limen.media.engine import AlarmCallback, MediaEngine, TimeoutCallback
from limen.media.errors import MediaRefused
from limen.media.policy import LegPolicy, LegSpec, Security
from limen.media.ports import PortPool
from limen.media.relay import MediaRelay

__all__ = [
    "AlarmCallback",
    "LegPolicy",
    "LegSpec",
    "MediaEngine",
    "MediaRefused",
    "MediaRelay",
    "PortPool",
    "Security",
    "TimeoutCallback",
]
