"""Issue 11: an ICP that refused SRTP is remembered, so later calls offer it plain RTP at
once (one INVITE instead of INVITE, 488, INVITE); the memory lapses so a PBX that gained
SRTP is tried again. A real relay on 127.0.0.1, the gateway's RelayMedia, a fake clock."""

from __future__ import annotations

import pytest
from media_support import crypto_line, make_relay, media_of, new_key, sdp

from limen.gateway.context import Side
from limen.gateway.media import RelayMedia, SrtpRefusals
from limen.media import MediaRefused
from limen.store.options import GlobalOptions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def phone_offer(port: int = 40000) -> bytes:
    return sdp(port, crypto=[crypto_line(new_key())])


@pytest.fixture
async def setup() -> tuple[RelayMedia, Clock, dict[str, str]]:
    relay = make_relay()
    await relay.start()
    clock = Clock()
    owners = {"dev-a": "icp-1", "dev-b": "icp-1", "dev-c": "icp-2"}
    media = RelayMedia(
        relay,
        lambda: GlobalOptions(icp_side_rtp_security="Prefer"),
        icp_of_device=owners.get,
        refusals=SrtpRefusals(600.0, clock),
    )
    yield media, clock, owners
    await media.close()


async def test_refusal_is_remembered_per_icp_then_forgotten(
    setup: tuple[RelayMedia, Clock, dict[str, str]],
) -> None:
    media, clock, _ = setup
    # First call: SRTP toward the PBX; it answers 488, the controller retries plain.
    first = media.offer("c1", Side.SET, phone_offer(), device="dev-a")
    assert media_of(first).proto == "RTP/SAVP"
    retry = media.offer("c1", Side.SET, phone_offer(), device="dev-a", plain=True)
    assert media_of(retry).proto == "RTP/AVP" and not media_of(retry).crypto
    # Second call of another phone on the same ICP: plain at once, no keys on the LAN.
    second = media_of(media.offer("c2", Side.SET, phone_offer(40010), device="dev-b"))
    assert (second.proto, second.crypto) == ("RTP/AVP", [])
    # Another ICP is not tarred with the same brush.
    other = media_of(media.offer("c3", Side.SET, phone_offer(40020), device="dev-c"))
    assert other.proto == "RTP/SAVP"
    # After the memory lapses, SRTP is tried again (the PBX may have gained it).
    clock.now += 599
    assert media_of(media.offer("c4", Side.SET, phone_offer(40030), device="dev-b")).proto == (
        "RTP/AVP"
    )
    clock.now += 2
    assert media_of(media.offer("c5", Side.SET, phone_offer(40040), device="dev-b")).proto == (
        "RTP/SAVP"
    )


async def test_require_never_falls_back(setup: tuple[RelayMedia, Clock, dict[str, str]]) -> None:
    media, _clock, _ = setup
    media._options = lambda: GlobalOptions(icp_side_rtp_security="Require")  # type: ignore[method-assign]
    assert media_of(media.offer("r1", Side.SET, phone_offer(), device="dev-a")).proto == "RTP/SAVP"
    with pytest.raises(MediaRefused):
        media.offer("r1", Side.SET, phone_offer(), device="dev-a", plain=True)
    # Nothing was remembered: the next call offers SRTP again.
    assert media_of(media.offer("r2", Side.SET, phone_offer(40010), device="dev-b")).proto == (
        "RTP/SAVP"
    )


def test_memory_off_with_zero_ttl() -> None:
    refusals = SrtpRefusals(0.0)
    refusals.remember("icp-1")
    assert not refusals.refuses("icp-1")
