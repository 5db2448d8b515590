"""Real UDP on 127.0.0.1 through the relay, real SRTP (pylibsrtp with the keys in the SDP)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from media_support import (
    UdpPeer,
    crypto_line,
    g711,
    make_relay,
    media_of,
    new_key,
    sdp,
    srtp_rx,
    srtp_tx,
)
from pylibsrtp import Session

from limen.media import MediaRefused, MediaRelay
from limen.media.policy import LegPolicy, Security
from limen.rtp import ReportBlock, RtcpReceiverReport, RtcpSenderReport, ntp_compact


@dataclass
class Bridge:
    """An SRTP phone and a plain PBX joined through the relay."""

    relay: MediaRelay
    phone: UdpPeer
    pbx: UdpPeer
    phone_key: bytes
    phone_tx: Session
    phone_rx: Session
    to_phone_port: int  # the relay's set-side port (phone sends here)
    to_pbx_port: int  # the relay's ICP-side port (PBX sends here)

    async def phone_to_pbx(self, seqs: range, ssrc: int = 0xAAAA) -> list[bytes]:
        for seq in seqs:
            self.phone.send(self.phone_tx.protect(g711(seq, ssrc)), self.to_phone_port)
        return await self.pbx.receive(len(seqs))

    async def pbx_to_phone(self, seqs: range, ssrc: int = 0xBBBB) -> list[bytes]:
        for seq in seqs:
            self.pbx.send(g711(seq, ssrc), self.to_pbx_port)
        return [self.phone_rx.unprotect(p) for p in await self.phone.receive(len(seqs))]


async def open_bridge(call_id: str = "call-1", **relay_options: object) -> Bridge:
    relay = make_relay(**relay_options)  # type: ignore[arg-type]
    await relay.start()
    phone, pbx = await UdpPeer.open(), await UdpPeer.open()
    key = new_key()
    toward_pbx = media_of(relay.offer(call_id, "set", sdp(phone.port, crypto=[crypto_line(key)])))
    pbx_answer = sdp(pbx.port, user="pbx", rtcp=pbx.port)  # RTCP on the same socket
    toward_phone = media_of(relay.answer(call_id, "icp", pbx_answer))
    assert toward_phone.proto == "RTP/SAVP" and toward_pbx.proto == "RTP/SAVP"
    (_, suite, our_key) = toward_phone.crypto[0]
    return Bridge(
        relay,
        phone,
        pbx,
        key,
        srtp_tx(key),
        srtp_rx(our_key, suite),
        toward_phone.port,
        toward_pbx.port,
    )


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    b = await open_bridge()
    yield b
    b.phone.close()
    b.pbx.close()
    await b.relay.close()


def stream(relay: MediaRelay, call_id: str, leg: str) -> dict[str, object]:
    streams = relay.query(call_id)["legs"][leg]["streams"]
    assert isinstance(streams, list)
    return dict(streams[0])


async def test_srtp_phone_and_plain_pbx_exchange_50_packets_each_way(bridge: Bridge) -> None:
    got = await bridge.phone_to_pbx(range(50))
    assert got == [g711(seq, 0xAAAA) for seq in range(50)]  # decrypted, byte for byte
    back = await bridge.pbx_to_phone(range(50))
    assert back == [g711(seq, 0xBBBB) for seq in range(50)]
    phone_side = stream(bridge.relay, "call-1", "set")
    pbx_side = stream(bridge.relay, "call-1", "icp")
    assert phone_side["packets"] == 50 and phone_side["bytes"] == 50 * (172 + 10)
    assert pbx_side["packets"] == 50 and pbx_side["bytes"] == 50 * 172
    assert phone_side["lost"] == 0 and phone_side["forwarded"] == 50
    assert phone_side["srtp"] == "AES_CM_128_HMAC_SHA1_80" and pbx_side["srtp"] is None


async def test_stats_match_the_traffic(bridge: Bridge) -> None:
    sent = [s for s in range(100) if s % 10 != 3]  # 10 lost
    order = [*sent[:40], sent[41], sent[40], *sent[42:]]  # one reordered
    for seq in order:
        bridge.pbx.send(g711(seq, 0xBBBB), bridge.to_pbx_port)
    await bridge.phone.receive(len(order))
    s = stream(bridge.relay, "call-1", "icp")
    assert s["packets"] == 90 and s["bytes"] == 90 * 172
    assert s["lost"] == 10 and s["out_of_order"] == 1
    assert isinstance(s["mos"], float) and 1.0 <= s["mos"] < 4.4
    # RTT: the phone's SR goes to the PBX, the PBX reports it straight back (DLSR 0)
    ntp = 0x0123456789ABCDEF
    sr = bytes(RtcpSenderReport(0xAAAA, ntp, 0, 1, 160))
    bridge.phone.send(bridge.phone_tx.protect_rtcp(sr), bridge.to_phone_port + 1)
    assert len(await bridge.pbx.receive(1)) == 1
    block = ReportBlock(0xAAAA, 0, 0, 0, 0, ntp_compact(ntp), 0)
    bridge.pbx.send(bytes(RtcpReceiverReport(0xBBBB, (block,))), bridge.to_pbx_port + 1)
    rtcp = await bridge.phone.receive(1)
    assert (
        rtcp
        and bridge.phone_rx.unprotect_rtcp(rtcp[0])[:8]
        == bytes(RtcpReceiverReport(0xBBBB, (block,)))[:8]
    )
    rtt = stream(bridge.relay, "call-1", "icp")["rtt_ms"]
    assert isinstance(rtt, float) and 0 <= rtt < 100


async def test_tampered_srtp_is_dropped_and_counted(bridge: Bridge) -> None:
    good = [bridge.phone_tx.protect(g711(seq, 0xAAAA)) for seq in range(10)]
    for index, packet in enumerate(good):
        if index % 2:
            packet = packet[:20] + bytes([packet[20] ^ 1]) + packet[21:]
        bridge.phone.send(packet, bridge.to_phone_port)
    got = await bridge.pbx.receive(10, timeout=0.5)
    assert got == [g711(seq, 0xAAAA) for seq in range(0, 10, 2)]
    s = stream(bridge.relay, "call-1", "set")
    assert s["dropped"] == {"srtp-auth": 5} and s["packets"] == 5
    # The relay-wide counters (Prometheus limen_media_packets_dropped_total) keep them
    # after the call ends.
    assert bridge.relay.drops() == {"srtp-auth": 5}
    bridge.relay.delete("call-1")
    assert bridge.relay.drops() == {"srtp-auth": 5}


async def test_stun_and_dtls_dropped_and_counted(bridge: Bridge) -> None:
    bridge.phone.send(b"\x00\x01\x00\x00" + bytes(16), bridge.to_phone_port)  # STUN
    bridge.phone.send(b"\x16\xfe\xfd" + bytes(10), bridge.to_phone_port)  # DTLS
    await bridge.phone_to_pbx(range(1))
    assert stream(bridge.relay, "call-1", "set")["dropped"] == {"stun": 1, "dtls": 1}


async def test_latching_and_unauthenticated_address_change(bridge: Bridge) -> None:
    await bridge.phone_to_pbx(range(4))
    captured = bridge.phone_tx.protect(g711(4, 0xAAAA))
    bridge.phone.send(captured, bridge.to_phone_port)
    assert len(await bridge.pbx.receive(1)) == 1
    s = stream(bridge.relay, "call-1", "set")
    assert s["latched"] and s["remote"] == f"127.0.0.1:{bridge.phone.port}"
    intruder = await UdpPeer.open()
    try:
        # plain RTP from another address: not authenticated, never forwarded
        for seq in range(5, 10):
            intruder.send(g711(seq, 0xAAAA), bridge.to_phone_port)
        # a replay of a real packet from another address: SRTP replay check
        intruder.send(captured, bridge.to_phone_port)
        assert await bridge.pbx.receive(1, timeout=0.3) == []
        s = stream(bridge.relay, "call-1", "set")
        assert s["remote"] == f"127.0.0.1:{bridge.phone.port}"
        assert s["dropped"] == {"srtp-auth": 5, "srtp-replay": 1}
        # the PBX's audio still goes to the real phone
        assert len(await bridge.pbx_to_phone(range(3))) == 3
        # authenticated SRTP from a new address (NAT rebinding) moves the stream
        intruder.send(bridge.phone_tx.protect(g711(20, 0xAAAA)), bridge.to_phone_port)
        assert len(await bridge.pbx.receive(1)) == 1
        s = stream(bridge.relay, "call-1", "set")
        assert s["remote"] == f"127.0.0.1:{intruder.port}" and s["relatched"] == 1
        bridge.pbx.send(g711(50, 0xBBBB), bridge.to_pbx_port)
        assert len(await intruder.receive(1)) == 1
    finally:
        intruder.close()


async def test_pbx_side_is_fixed_to_its_sdp_address(bridge: Bridge) -> None:
    stranger = await UdpPeer.open()
    try:
        # same host (127.0.0.1) but another port is accepted (PBXs may send from another
        # port); replies still go to the SDP port
        stranger.send(g711(1, 0xCCCC), bridge.to_pbx_port)
        assert len(await bridge.phone.receive(1)) == 1
        s = stream(bridge.relay, "call-1", "icp")
        assert s["remote"] == f"127.0.0.1:{bridge.pbx.port}"
        await bridge.phone_to_pbx(range(1))
        assert await stranger.receive(1, timeout=0.2) == []
    finally:
        stranger.close()


async def test_hold_and_resume_reoffer_keeps_flow(bridge: Bridge) -> None:
    relay = bridge.relay
    key = bridge.phone_key
    held = relay.offer(
        "call-1",
        "set",
        sdp(bridge.phone.port, crypto=[crypto_line(key)], direction="sendonly", version=2),
    )
    assert b"a=sendonly" in held and media_of(held).port == bridge.to_pbx_port
    answer = relay.answer("call-1", "icp", sdp(bridge.pbx.port, user="pbx", direction="recvonly"))
    assert media_of(answer).port == bridge.to_phone_port
    assert relay.calls["call-1"].held
    assert len(await bridge.phone_to_pbx(range(100, 110))) == 10  # music on hold, say
    resumed = relay.offer(
        "call-1", "set", sdp(bridge.phone.port, crypto=[crypto_line(key)], version=3)
    )
    assert b"a=sendonly" not in resumed
    answer = media_of(relay.answer("call-1", "icp", sdp(bridge.pbx.port, user="pbx")))
    assert answer.proto == "RTP/SAVP" and len(answer.crypto) == 1
    assert not relay.calls["call-1"].held
    assert len(await bridge.phone_to_pbx(range(110, 120))) == 10
    assert len(await bridge.pbx_to_phone(range(0, 10))) == 10


async def test_reoffer_with_new_phone_key_and_address(bridge: Bridge) -> None:
    await bridge.phone_to_pbx(range(3))
    new_phone = await UdpPeer.open()
    try:
        key2 = new_key()
        out = bridge.relay.offer(
            "call-1", "set", sdp(new_phone.port, crypto=[crypto_line(key2)], version=2)
        )
        assert media_of(out).port == bridge.to_pbx_port
        answer = media_of(bridge.relay.answer("call-1", "icp", sdp(bridge.pbx.port, user="pbx")))
        tx2 = srtp_tx(key2)
        for seq in range(3, 8):
            new_phone.send(tx2.protect(g711(seq, 0xAAAA)), bridge.to_phone_port)
        assert len(await bridge.pbx.receive(5)) == 5
        # our key toward the phone did not change, so its decryptor keeps working
        bridge.pbx.send(g711(9, 0xBBBB), bridge.to_pbx_port)
        packet = (await new_phone.receive(1))[0]
        assert bridge.phone_rx.unprotect(packet) == g711(9, 0xBBBB)
        assert answer.crypto[0][1] == "AES_CM_128_HMAC_SHA1_80"
    finally:
        new_phone.close()


async def test_delete_frees_ports_and_returns_stats(bridge: Bridge) -> None:
    await bridge.phone_to_pbx(range(5))
    assert bridge.relay.pool.in_use == 2
    stats = bridge.relay.delete("call-1")
    assert stats is not None and stats["totals"]["packets"] == 5
    assert bridge.relay.query("call-1") == {}
    await asyncio.sleep(0.05)  # ports return to the pool once their sockets are closed
    assert bridge.relay.pool.in_use == 0
    # the ports can be bound again by anyone
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", bridge.to_phone_port))


async def test_port_exhaustion_is_503_and_never_half_set() -> None:
    # 3 pairs: one call needs 2 (one per leg); a call with two m= lines needs 4
    relay = make_relay(port_range=(47000, 47005))
    await relay.start()
    two_streams = sdp(40000, crypto=[crypto_line(new_key())]) + (
        b"m=audio 40002 RTP/SAVP 0\r\na=crypto:" + crypto_line(new_key()).encode() + b"\r\n"
    )
    with pytest.raises(MediaRefused) as info:
        relay.offer("big", "set", two_streams)
    assert info.value.status == 503
    assert relay.pool.in_use == 0 and not relay.calls
    relay.offer("a", "set", sdp(40000, crypto=[crypto_line(new_key())]))
    with pytest.raises(MediaRefused) as info:
        relay.offer("b", "set", sdp(40000, crypto=[crypto_line(new_key())]))
    assert info.value.status == 503
    assert relay.pool.in_use == 2 and set(relay.calls) == {"a"}
    relay.delete("a")
    await asyncio.sleep(0.05)
    assert relay.pool.in_use == 0
    await relay.close()


async def test_media_timeout_fires_once() -> None:
    b = await open_bridge("quiet", media_timeout=0.15)
    fired: list[tuple[str, str]] = []
    b.relay.on_timeout = lambda call_id, reason: fired.append((call_id, reason))
    try:
        await b.phone_to_pbx(range(2))
        await asyncio.sleep(0.5)
        assert fired == [("quiet", "media timeout")]
    finally:
        b.phone.close()
        b.pbx.close()
        await b.relay.close()


async def test_timeout_bookkeeping_with_explicit_now(bridge: Bridge) -> None:
    relay = bridge.relay
    last = relay.calls["call-1"].activity.last
    assert relay.expired(last + 59.9) == []
    assert relay.expired(last + 60.5) == ["call-1"]
    assert relay.expired(last + 120.0) == []  # reported once
    relay.calls["call-1"].timed_out = False
    relay.calls["call-1"].legs["set"].held = True
    assert relay.expired(last + 61.0) == []  # hold timeout is longer
    assert relay.expired(last + 3600.5) == ["call-1"]


async def test_packet_before_answer_has_no_destination() -> None:
    relay = make_relay()
    await relay.start()
    phone = await UdpPeer.open()
    try:
        key = new_key()
        toward_pbx = media_of(
            relay.offer("early", "set", sdp(phone.port, crypto=[crypto_line(key)]))
        )
        assert toward_pbx.port
        call = relay.calls["early"]
        phone_port = call.legs["set"].endpoints[0].port  # type: ignore[union-attr]
        phone.send(srtp_tx(key).protect(g711(1)), phone_port)
        await asyncio.sleep(0.1)
        s = stream(relay, "early", "set")
        assert s["packets"] == 1  # decrypted and counted, but the PBX has no address yet
        icp = stream(relay, "early", "icp")
        assert icp["dropped"] == {"no-destination": 1}
        assert struct.calcsize("!BBHII") == 12
    finally:
        phone.close()
        await relay.close()


async def test_plain_leg_latches_only_on_its_sdp_or_signalling_address() -> None:
    """Issue 10, RTP bleed on plain legs: a stranger who sends to the relay port while the
    callee rings never takes the stream; the phone behind NAT (SDP says 10.9.9.9, packets
    and SIP come from 127.0.0.1) latches and gets the PBX's audio."""
    relay = make_relay(set_security=Security.OFF, icp_security=Security.OFF)
    await relay.start()
    phone, pbx = await UdpPeer.open(), await UdpPeer.open()
    loop = asyncio.get_running_loop()
    _, attacker = await loop.create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.2", 0))
    try:
        policy = {
            "set": LegPolicy(Security.OFF, peer="127.0.0.1"),
            "icp": LegPolicy(Security.OFF),
        }
        toward_pbx = media_of(
            relay.offer("bleed", "set", sdp(phone.port, address="10.9.9.9"), policy=policy)
        )
        relay.answer("bleed", "icp", sdp(pbx.port, user="pbx"))
        set_port = relay.calls["bleed"].legs["set"].endpoints[0].port  # type: ignore[union-attr]
        for seq in range(5):  # the stranger races the phone's first packet
            attacker.send(g711(seq, ssrc=0xBAD), set_port)
        assert await pbx.drain(0.2) == []
        s = stream(relay, "bleed", "set")
        assert s["latched"] is False and s["dropped"] == {"source": 5}
        phone.send(g711(10), set_port)
        assert len(await pbx.receive(1)) == 1
        assert stream(relay, "bleed", "set")["latched"] is True
        pbx.send(g711(20, ssrc=0x55), toward_pbx.port)
        assert len(await phone.receive(1)) == 1
        assert await attacker.drain(0.2) == []
    finally:
        for peer in (phone, pbx, attacker):
            peer.close()
        await relay.close()
