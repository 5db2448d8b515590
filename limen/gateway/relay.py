"""The gateway's media controller on top of :mod:`limen.media` (issue 5, "SRTP policy").

Maps the gateway's policy onto the relay's mechanism:

- The **set side** faces phones behind NAT: latching on, ``c=`` is the public media
  address, SRTP per ``set_side_rtp_security`` (per device: the device's override), codecs
  per the global ``setside_codec`` (or the device's own).
- The **ICP side** faces the PBX: fixed to its SDP address, ``c=`` is the LAN address,
  SRTP per ``icp_side_rtp_security``.

MBG's labels ("Require", "Prefer", "Disable"; "G.711 only" ...) become
:class:`limen.media.LegPolicy` values here. :class:`limen.media.MediaError` becomes
:class:`MediaRefused` with the same status.

For the call controller beyond :class:`MediaController`:

- ``offer(..., plain=True)``: the retry after the PBX (or a phone under "Prefer") refused
  our SRTP offer with 488/606: the same offer, plain RTP/AVP toward that side, same ports.
- An ICP that refused an SRTP offer is remembered (:class:`SrtpRefusals`, per ICP, for
  ``media.srtp_refusal_memory`` seconds): while it is, offers toward it under "Prefer" are
  plain RTP/AVP from the start, so a plain-RTP PBX costs one INVITE per call, not two
  (issue 11). The first call, and the first after the memory lapses (a PBX that gained
  SRTP), still try SRTP and fall back on 488/606.
- ``on_timeout``: set it to a function of the Call-ID; it is called once when a call had
  no media for ``media.media_timeout`` (``media.hold_timeout`` on hold). BYE both legs,
  then ``delete``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from limen.config import Settings
from limen.gateway.context import Directory, LocalAddresses, Side
from limen.gateway.media import MediaRefused
from limen.media import LegPolicy, LegSpec, MediaEngine, MediaError, MediaRelay, Security
from limen.store.options import GlobalOptions

log = logging.getLogger("limen.gateway")

# MBG "Codec support" → codec names the relay keeps (None: unrestricted).
CODEC_SUPPORT: dict[str, tuple[str, ...] | None] = {
    "Unrestricted": None,
    "G.711 only": ("PCMU", "PCMA"),
    "G.722 only": ("G722",),
    "G.729 only": ("G729",),
    "Opus only": ("opus",),
}

# Per-device overrides: (set_side_rtp_security, setside_codec), None for "global".
DeviceOverrides = Callable[[str], tuple[str | None, str | None]]


def codecs_for(label: str) -> tuple[str, ...] | None:
    return CODEC_SUPPORT.get(label)


def leg_policies(
    options: GlobalOptions, device: tuple[str | None, str | None] = (None, None)
) -> dict[str, LegPolicy]:
    security, codec = device
    return {
        Side.SET.value: LegPolicy(
            Security.parse(security or options.set_side_rtp_security),
            codecs_for(codec or options.setside_codec),
        ),
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
    """:class:`limen.gateway.media.MediaController` over a :class:`MediaEngine`."""

    def __init__(
        self,
        engine: MediaEngine,
        options: Callable[[], GlobalOptions],
        device_overrides: DeviceOverrides | None = None,
        *,
        icp_of_device: Callable[[str], str | None] | None = None,
        refusals: SrtpRefusals | None = None,
    ) -> None:
        self.engine = engine
        self._options = options
        self._device_overrides = device_overrides
        self._icp_of_device = icp_of_device
        self.refusals = refusals if refusals is not None else SrtpRefusals(0.0)

    @property
    def on_timeout(self) -> Callable[[str], None] | None:
        return self.engine.on_timeout

    @on_timeout.setter
    def on_timeout(self, callback: Callable[[str], None] | None) -> None:
        self.engine.on_timeout = callback

    def policies(self, device: str | None) -> dict[str, LegPolicy]:
        overrides: tuple[str | None, str | None] = (None, None)
        if device is not None and self._device_overrides is not None:
            try:
                overrides = self._device_overrides(device)
            except Exception:  # an unknown device just gets the global options
                log.debug("no media overrides for device %s", device)
        return leg_policies(self._options(), overrides)

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
        plain: bool = False,
        peer: str | None = None,
    ) -> bytes:
        """``peer``: the phone's signalling address (its SIP source): with the SDP address,
        the only sources a plain set-side stream may latch on (RTP bleed)."""
        policies = self.policies(device)
        if peer is not None:
            set_side = policies[Side.SET.value]
            policies[Side.SET.value] = dataclasses.replace(set_side, peer=peer)
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
                plain = True
        try:
            return self.engine.offer(call_id, from_side.value, sdp, policy=policies, plain=plain)
        except MediaError as exc:
            raise MediaRefused(exc.status, exc.reason) from None

    def answer(self, call_id: str, from_side: Side, sdp: bytes, *, device: str | None) -> bytes:
        try:
            return self.engine.answer(call_id, from_side.value, sdp)
        except MediaError as exc:
            raise MediaRefused(exc.status, exc.reason) from None

    def delete(self, call_id: str) -> None:
        self.engine.delete(call_id)

    def query(self, call_id: str) -> dict[str, Any]:
        return self.engine.query(call_id)


def create_relay_media(
    settings: Settings,
    addresses: LocalAddresses,
    directory: Directory,
    device_overrides: DeviceOverrides | None = None,
) -> RelayMedia:
    """The relay: in-process (``media.workers = 0``) or in ``media.workers`` processes
    (:class:`limen.media.workers.WorkerPoolEngine`). Its port range is the global options'
    SRTP port range (MBG's admin setting, read at start)."""
    media = settings.media
    options = directory.options
    public = media.public_address or settings.public_ip or addresses.set_host
    lan = media.lan_address or addresses.icp_host
    legs = [
        LegSpec(Side.SET.value, public, media.set_bind or media.bind, latch=True),
        LegSpec(Side.ICP.value, lan, media.icp_bind or media.bind, latch=False),
    ]
    engine: MediaEngine
    if media.workers > 0:
        from limen.media.workers import WorkerPoolEngine

        engine = WorkerPoolEngine(
            legs,
            port_min=options.srtp_port_min,
            port_max=options.srtp_port_max,
            workers=media.workers,
            media_timeout=media.media_timeout,
            hold_timeout=media.hold_timeout,
        )
    else:
        engine = MediaRelay(
            legs,
            port_min=options.srtp_port_min,
            port_max=options.srtp_port_max,
            media_timeout=media.media_timeout,
            hold_timeout=media.hold_timeout,
        )

    def icp_of_device(guid: str) -> str | None:
        device = directory.devices.get(guid)
        return device.icp if device is not None else None

    return RelayMedia(
        engine,
        lambda: directory.options,
        device_overrides,
        icp_of_device=icp_of_device,
        refusals=SrtpRefusals(media.srtp_refusal_memory),
    )
