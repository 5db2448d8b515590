"""Interop with the real rtpengine (userspace, ``--table=-1``), driven over its ng protocol.

phone (SRTP, pylibsrtp) ⇄ Limen set leg (SRTP, phone's key / Limen key 1)
      Limen ICP leg (SRTP, Limen key 2 / rtpengine's key) ⇄ rtpengine ⇄ plain RTP endpoint.

Limen's SRTP toward "the PBX" is rtpengine's SDES SRTP here: rtpengine decrypts what Limen
encrypts and the other way round, and the audio arrives byte for byte at both ends.
Fails (does not skip) if rtpengine is missing, unless LIMEN_TEST_NO_PEERS=1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from media_support import (
    Rtpengine,
    UdpPeer,
    crypto_line,
    g711,
    make_relay,
    media_of,
    new_key,
    sdp,
    srtp_rx,
    srtp_tx,
    start_rtpengine,
)

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    log = tmp_path_factory.mktemp("rtpengine") / "rtpengine.log"
    yield from start_rtpengine(str(log))


async def test_limen_srtp_interoperates_with_rtpengine(rtpengine: Rtpengine) -> None:
    relay = make_relay()
    await relay.start()
    phone, plain = await UdpPeer.open(), await UdpPeer.open()
    ng = rtpengine.ng
    try:
        phone_key = new_key()
        toward_pbx = relay.offer("interop", "set", sdp(phone.port, crypto=[crypto_line(phone_key)]))
        assert media_of(toward_pbx).proto == "RTP/SAVP"
        reply = ng(
            {
                "command": "offer",
                "call-id": "interop",
                "from-tag": "limen",
                "sdp": toward_pbx,
                "transport-protocol": "RTP/AVP",
                "ICE": "remove",
            }
        )
        assert reply["result"] == b"ok", reply
        toward_plain = media_of(reply["sdp"])
        assert toward_plain.proto == "RTP/AVP" and toward_plain.crypto == []
        reply = ng(
            {
                "command": "answer",
                "call-id": "interop",
                "from-tag": "limen",
                "to-tag": "plain",
                "sdp": sdp(plain.port, user="plain"),
            }
        )
        assert reply["result"] == b"ok", reply
        from_rtpengine = media_of(reply["sdp"])
        assert from_rtpengine.proto == "RTP/SAVP" and len(from_rtpengine.crypto) == 1
        toward_phone = media_of(relay.answer("interop", "icp", reply["sdp"]))
        assert toward_phone.proto == "RTP/SAVP"
        suite = toward_phone.crypto[0][1]
        phone_tx, phone_rx = srtp_tx(phone_key), srtp_rx(toward_phone.crypto[0][2], suite)
        # phone → plain endpoint: SRTP (phone key) → Limen → SRTP (Limen key) → rtpengine → RTP
        for seq in range(50):
            phone.send(phone_tx.protect(g711(seq, 0xA1)), toward_phone.port)
        got = await plain.receive(50, timeout=3)
        assert [p[12:] for p in got] == [g711(seq, 0xA1)[12:] for seq in range(50)]
        # plain endpoint → phone: RTP → rtpengine → SRTP (its key) → Limen → SRTP → phone
        for seq in range(50):
            plain.send(g711(seq, 0xB2), toward_plain.port)
        back = [phone_rx.unprotect(p) for p in await phone.receive(50, timeout=1.5)]
        # rtpengine may swallow the very first packet of a newly seen source while it
        # confirms the endpoint; every packet that arrives must decode to what was sent
        assert len(back) >= 48
        for packet in back:
            seq = int.from_bytes(packet[2:4], "big")
            assert packet[12:] == g711(seq, 0xB2)[12:]
        stats = relay.query("interop")["legs"]
        assert stats["icp"]["streams"][0]["srtp"] == from_rtpengine.crypto[0][1]
        assert stats["icp"]["streams"][0]["packets"] == 50
        assert stats["icp"]["streams"][0]["dropped"] == {}
        query = ng({"command": "query", "call-id": "interop"})
        assert query["result"] == b"ok"
        ng({"command": "delete", "call-id": "interop"})
    finally:
        phone.close()
        plain.close()
        await relay.close()
