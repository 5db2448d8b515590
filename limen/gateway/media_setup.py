"""Building the gateway's media relay from the settings and the Directory (wiring, kept
apart from :mod:`limen.gateway.media` so that the media interface imports nothing of the
gateway but its sides: the context names it without an import cycle)."""

from __future__ import annotations

from limen.config import Settings
from limen.gateway.context import Directory, LocalAddresses
from limen.gateway.media import RelayMedia, SrtpRefusals
from limen.gateway.sides import Side
from limen.media import LegSpec, MediaEngine, MediaRelay


def create_relay_media(
    settings: Settings, addresses: LocalAddresses, directory: Directory
) -> RelayMedia:
    """The relay: in-process (``media.workers = 0``) or in ``media.workers`` processes
    (:class:`limen.media.workers.WorkerPoolEngine`). Its port range is the global options'
    SRTP port range (MBG's admin setting, read at start); per-device overrides come from
    the Directory (``Directory.overrides``), in memory."""
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
        directory.overrides,
        icp_of_device=icp_of_device,
        refusals=SrtpRefusals(media.srtp_refusal_memory),
    )
