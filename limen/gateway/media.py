"""The gateway's media: one thin object between the call controller and a
:class:`limen.media.MediaEngine` (issue 5 "SRTP policy", issue 13).

The call controller holds ``ctx.media`` and calls ``offer`` with the SDP it received from
one side, sends what comes back to the other side; ``answer`` likewise; ``delete`` when
the call ends; ``query`` for the console. All synchronous and quick: the engine decides
everything in the SIP process (see :mod:`limen.media.workers` for the worker pool). A
refusal is :class:`MediaRefused` (the media layer's one exception type, re-exported
here): its ``status`` (488, 503) is the SIP response to send.

What this object adds to the engine is the gateway's policy:

- The **set side** faces phones behind NAT: latching on, ``c=`` is the public media
  address, SRTP per ``set_side_rtp_security``, codecs per ``setside_codec`` (each: the
  device's override, else the global option).
- The **ICP side** faces the PBX: fixed to its SDP address, ``c=`` is the LAN address,
  SRTP per ``icp_side_rtp_security``.
- ``offer(..., plain=True)``: the retry after the PBX (or a phone under "Prefer") refused
  our SRTP offer with 488/606 (:meth:`MediaEngine.reoffer_plain`); refused at once under
  "Require". An ICP that refused SRTP is remembered (:class:`SrtpRefusals`, per ICP, for
  ``media.srtp_refusal_memory`` seconds): meanwhile offers toward it under "Prefer" are
  plain from the start (issue 11).
- ``on_timeout``: a function of the Call-ID, called once when the media side ended a call
  (no media for ``media.media_timeout``, or the worker holding it was lost; the reason is
  logged here). The controller sends BYE on both legs, then ``delete``.

:class:`PassthroughMedia` (``[media] relay = false``) hands SDP through unchanged; its
``relays`` is False, so the controller does not retry an offer plain through it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from limen.gateway.sides import Side
from limen.media import LegPolicy, MediaEngine, MediaRefused, Security
from limen.store.options import GlobalOptions
from limen.store.schemas import DeviceOverrides

__all__ = [
    "CODEC_SUPPORT",
    "MediaController",
    "MediaRefused",
    "PassthroughMedia",
    "RelayMedia",
    "SrtpRefusals",
    "leg_policies",
]

log = logging.getLogger("limen.gateway")

# MBG "Codec support" → codec names the relay keeps (None: unrestricted).
CODEC_SUPPORT: dict[str, tuple[str, ...] | None] = {
    "Unrestricted": None,
    "G.711 only": ("PCMU", "PCMA"),
    "G.722 only": ("G722",),
    "G.729 only": ("G729",),
    "Opus only": ("opus",),
}

#: A device's own option values by device guid (``Directory.overrides``; None: unknown).
OverridesOf = Callable[[str], DeviceOverrides | None]


class MediaController(Protocol):
    """What the call controller calls (``ctx.media``)."""

    #: True when SDP goes through a relay (a plain retry after a refused SRTP offer means
    #: something); False for :class:`PassthroughMedia`.
    relays: bool

    def offer(
        self,
        call_id: str,
        from_side: Side,
        sdp: bytes,
        *,
        device: str | None,
        peer: str | None = None,
        plain: bool = False,
    ) -> bytes: ...

    def answer(self, call_id: str, from_side: Side, sdp: bytes, *, device: str | None) -> bytes: ...

    def delete(self, call_id: str) -> None: ...

    def query(self, call_id: str) -> dict[str, Any]: ...


class PassthroughMedia:
    """No relay: SDP goes through untouched (media takes the direct path)."""

    relays = False

    def offer(
        self,
        call_id: str,
        from_side: Side,
        sdp: bytes,
        *,
        device: str | None,
        peer: str | None = None,
        plain: bool = False,
    ) -> bytes:
        return sdp

    def answer(self, call_id: str, from_side: Side, sdp: bytes, *, device: str | None) -> bytes:
        return sdp

    def delete(self, call_id: str) -> None:
        return None

    def query(self, call_id: str) -> dict[str, Any]:
        return {}


def codecs_for(label: str) -> tuple[str, ...] | None:
    return CODEC_SUPPORT.get(label)


def leg_policies(
    options: GlobalOptions, overrides: DeviceOverrides | None = None
) -> dict[str, LegPolicy]:
    """Both legs' policy from the global options and a device's overrides."""
    security: str = options.set_side_rtp_security
    codec: str = options.setside_codec
    if overrides is not None:
        security = overrides.set_side_rtp_security or security
        codec = overrides.setside_codec or codec
    return {
        Side.SET.value: LegPolicy(Security.parse(security), codecs_for(codec)),
        Side.ICP.value: LegPolicy(Security.parse(options.icp_side_rtp_security), None),
    }


class SrtpRefusals:
    """ICPs whose last SRTP offer was refused, each until a deadline (``ttl`` seconds after
    the refusal). One entry per ICP: bounded by the configuration, not by traffic."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._until: dict[str, float] = {}

    def remember(self, icp: str) -> None:
        if self.ttl > 0:
            self._until[icp] = self._clock() + self.ttl

    def refuses(self, icp: str) -> bool:
        until = self._until.get(icp)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[icp]  # a PBX may have changed: try SRTP again
            return False
        return True


class RelayMedia:
    """:class:`MediaController` over a :class:`MediaEngine` (the gateway's media policy)."""

    relays = True

    def __init__(
        self,
        engine: MediaEngine,
        options: Callable[[], GlobalOptions],
        overrides: OverridesOf | None = None,
        *,
        icp_of_device: Callable[[str], str | None] | None = None,
        refusals: SrtpRefusals | None = None,
    ) -> None:
        self.engine = engine
        self._options = options
        self._overrides = overrides
        self._icp_of_device = icp_of_device
        self.refusals = refusals if refusals is not None else SrtpRefusals(0.0)
        self._on_timeout: Callable[[str], None] | None = None
        # Calls offered plain toward their ICP from the start (it refused SRTP recently):
        # their later offers stay plain too. Emptied by ``delete``.
        self._plain_icp: set[str] = set()
        engine.on_timeout = self._ended

    @property
    def on_timeout(self) -> Callable[[str], None] | None:
        return self._on_timeout

    @on_timeout.setter
    def on_timeout(self, callback: Callable[[str], None] | None) -> None:
        self._on_timeout = callback

    def _ended(self, call_id: str, reason: str) -> None:
        log.warning("media %s: the media side ended the call: %s", call_id, reason)
        if self._on_timeout is not None:
            self._on_timeout(call_id)

    def policy_for(self, device: str | None, peer: str | None = None) -> dict[str, LegPolicy]:
        """Both legs' policy for a call of ``device`` (its overrides from the Directory's
        memory: never the database), ``peer`` the phone's signalling address."""
        overrides = self._overrides(device) if device and self._overrides is not None else None
        policies = leg_policies(self._options(), overrides)
        if peer is not None:
            set_side = policies[Side.SET.value]
            policies[Side.SET.value] = dataclasses.replace(set_side, peer=peer)
        return policies

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    def offer(
        self,
        call_id: str,
        from_side: Side,
        sdp: bytes,
        *,
        device: str | None,
        peer: str | None = None,
        plain: bool = False,
    ) -> bytes:
        """``peer``: the phone's signalling address (its SIP source): with the SDP address,
        the only sources a plain set-side stream may latch on (RTP bleed)."""
        policies = self.policy_for(device, peer)
        target = Side.ICP if from_side is Side.SET else Side.SET
        if plain and policies[target.value].security is Security.REQUIRE:
            raise MediaRefused(488, "SRTP required")  # no plain retry under "Require"
        icp = None
        if target is Side.ICP and device is not None and self._icp_of_device is not None:
            icp = self._icp_of_device(device)
        if icp is not None:
            if plain:  # the retry after this ICP's 488/606 to our SRTP offer
                self.refusals.remember(icp)
            elif policies[Side.ICP.value].security is Security.PREFER and self.refusals.refuses(
                icp
            ):
                log.debug("ICP %s refused SRTP recently: offering plain RTP at once", icp)
                self._plain_icp.add(call_id)
        if call_id in self._plain_icp:  # for the whole call, like a plain retry
            icp_side = policies[Side.ICP.value]
            policies[Side.ICP.value] = dataclasses.replace(icp_side, security=Security.OFF)
        if plain:
            return self.engine.reoffer_plain(call_id, from_side.value, sdp, policy=policies)
        try:
            return self.engine.offer(call_id, from_side.value, sdp, policy=policies)
        except MediaRefused:
            if not self.engine.query(call_id):  # refused before it existed: no delete follows
                self._plain_icp.discard(call_id)
            raise

    def answer(self, call_id: str, from_side: Side, sdp: bytes, *, device: str | None) -> bytes:
        return self.engine.answer(call_id, from_side.value, sdp)

    def delete(self, call_id: str) -> None:
        self._plain_icp.discard(call_id)
        self.engine.delete(call_id)

    def query(self, call_id: str) -> dict[str, Any]:
        return self.engine.query(call_id)
