"""What the relay does on each leg: SRTP policy, codec restriction, addresses, latching.

Mechanism only: the gateway decides which leg faces the phones (``latch=True``: the remote
sits behind NAT, its real address is learnt from traffic) and which faces the PBX
(``latch=False``: fixed to its SDP address), and what each one's security option says.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from limen.sdp import SUPPORTED_SUITES, CryptoSuite


class Security(enum.Enum):
    """SRTP on one leg (MBG's "RTP security" options).

    - REQUIRE: we offer RTP/SAVP with SDES; a plain offer or answer from this leg is refused
      (488).
    - PREFER: we offer RTP/SAVP with SDES and accept a plain answer (and the signalling side
      may retry the offer plain after a 488/606, ``plain=True``); plain offers accepted.
    - OFF: we offer plain RTP/AVP; an SRTP offer from this leg is still answered with SRTP.
    """

    REQUIRE = "Require"
    PREFER = "Prefer"
    OFF = "Off"

    @classmethod
    def parse(cls, text: str) -> Security:
        """MBG labels: "Require", "Prefer", "Disable" (or "Off")."""
        value = text.strip().lower()
        if value == "require":
            return cls.REQUIRE
        if value == "prefer":
            return cls.PREFER
        if value in ("off", "disable", "disabled", "none"):
            return cls.OFF
        raise ValueError(f"unknown RTP security {text!r}")


@dataclass(frozen=True, slots=True)
class LegPolicy:
    """Per call and leg: SRTP policy and allowed codecs (None: unrestricted)."""

    security: Security = Security.PREFER
    codecs: tuple[str, ...] | None = None
    suites: tuple[CryptoSuite, ...] = SUPPORTED_SUITES
    # The address the leg's UA signals from (its SIP source, NAT included): with the SDP
    # address, the only sources a plain-RTP latching leg may latch on (issue 10).
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class LegSpec:
    """A leg kind of the relay: its name (``"set"``, ``"icp"``), the address written in
    ``c=`` toward it, the local address its sockets bind, whether its remote is learnt from
    traffic (latching) or fixed to the SDP, and its default policy."""

    name: str
    address: str
    bind: str = "0.0.0.0"
    latch: bool = False
    policy: LegPolicy = field(default_factory=LegPolicy)
