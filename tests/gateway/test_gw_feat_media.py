"""Calls through the media relay (settings media.relay=True).

A Python phone offers RTP/SAVP with SDES (RFC 4568) and speaks SRTP with
:class:`limen.rtp.SrtpContext`; the PBX extension is SIPp (uas_rr) with ``-rtp_echo``
answering plain RTP/AVP. Asserted: the SDP each side sees (addresses, own keys, profiles),
SRTP packets echoed back through Limen both ways, 488 for plain RTP under "Require", and
the relay's session deleted at call end.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from pathlib import Path

import pytest
import test_gw_feat_dialogs as feat
from gw_call_support import Kamailio, UdpUa, sipp, wait_for
from test_gw_feat_dialogs import (
    StartLimen,
    register_extension,
    set_password,
)

from limen.config import MediaSettings
from limen.rtp import SrtpContext
from limen.rtp.srtp import SrtpDirection
from limen.sdp.sdes import CryptoAttribute, CryptoSuite, generate_crypto
from limen.sip import Response, Transport

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

# The Kamailio and Limen fixtures of the dialog tests.
kamailio = feat.kamailio
limen_factory = feat.limen_factory

SUITE = CryptoSuite.AES_CM_128_HMAC_SHA1_80


def srtp_offer(port: int, crypto: CryptoAttribute | None) -> bytes:
    profile = "RTP/SAVP" if crypto is not None else "RTP/AVP"
    lines = [
        "v=0",
        "o=phone 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} {profile} 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    if crypto is not None:
        lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp_packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x11223344) + bytes([seq % 256]) * 160


async def test_srtp_phone_to_plain_pbx_through_the_relay(
    tmp_path: Path, limen_factory: StartLimen, kamailio: Kamailio
) -> None:
    app = await limen_factory(media=MediaSettings(relay=True, bind="127.0.0.1"))
    ext_port = await register_extension(kamailio, "ext3114")
    callee = await sipp(tmp_path, "ext", "uas_rr", "-rtp_echo", port=ext_port)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    media.setblocking(False)
    phone_port = media.getsockname()[1]
    ours = generate_crypto(1, SUITE)
    ua = UdpUa("2101", set_password("2101"), ("127.0.0.1", app.port(Transport.UDP)))
    loop = asyncio.get_running_loop()
    try:
        invite = ua.request("INVITE", "sip:ext3114@127.0.0.1", body=srtp_offer(phone_port, ours))
        invite, answer = await ua.transact(invite)
        assert answer.status == 200, answer
        sdp = answer.body.decode()
        # Toward the phone: RTP/SAVP, Limen's public address, Limen's own key.
        assert "RTP/SAVP" in sdp and "c=IN IP4 127.0.0.1" in sdp
        crypto_line = re.search(r"a=crypto:(.+)", sdp)
        assert crypto_line is not None
        theirs = CryptoAttribute.parse(crypto_line.group(1).strip())
        assert theirs.key_salt != ours.key_salt
        relay_port = int(re.search(r"m=audio (\d+)", sdp).group(1))  # type: ignore[union-attr]
        assert relay_port != phone_port
        contact = answer.get("Contact")
        assert contact is not None
        ack = ua.request(
            "ACK",
            contact.strip("<>").split(">")[0],
            to=str(invite.to.uri),
            to_tag=answer.to_tag,
            cseq=invite.cseq.seq,
            call_id=invite.call_id,
        )
        await ua.send(ack)
        # SRTP out, through Limen (→ plain RTP → SIPp echo → plain RTP), SRTP back.
        outbound = SrtpContext(SUITE, ours.key_salt, SrtpDirection.OUTBOUND)
        inbound = SrtpContext(SUITE, theirs.key_salt, SrtpDirection.INBOUND)
        echoed: list[bytes] = []
        for seq in range(1, 30):
            await loop.sock_sendto(
                media, outbound.protect(rtp_packet(seq)), ("127.0.0.1", relay_port)
            )
            try:
                data = await asyncio.wait_for(loop.sock_recv(media, 4096), 0.05)
                echoed.append(inbound.unprotect(data))
            except TimeoutError:
                pass
        while len(echoed) < 10:
            data = await asyncio.wait_for(loop.sock_recv(media, 4096), 2.0)
            echoed.append(inbound.unprotect(data))
        assert all(len(p) == 12 + 160 for p in echoed)
        # The admin API's view of the call (GET /mslrest/limen/v1/calls/): both legs and
        # the relay's per-stream statistics of this very call.
        [listed] = app.core.metrics.calls()
        assert listed["kind"] == "INVITE" and listed["state"] == "confirmed"
        assert listed["direction"] == "from-phone" and listed["legs"]["set"]["call_id"]
        assert listed["legs"]["set"]["call_id"] != listed["legs"]["icp"]["call_id"]
        streams = [st for leg in listed["media"]["legs"].values() for st in leg["streams"]]
        assert sum(st["packets"] for st in streams) >= 2 * len(echoed)
        bye = ua.request(
            "BYE",
            contact.strip("<>").split(">")[0],
            to=str(invite.to.uri),
            to_tag=answer.to_tag,
            cseq=invite.cseq.seq + 1,
            call_id=invite.call_id,
        )
        _, final = await ua.transact(bye)
        assert final.status == 200
    finally:
        ua.close()
        media.close()
    rc = await callee.wait()
    assert rc == 0, callee.explain()
    pbx_side = callee.messages
    # Toward the PBX: plain RTP/AVP, Limen's LAN address, no keys.
    offer_to_pbx = pbx_side.split("INVITE sip:", 1)[1].split("SIP/2.0 180", 1)[0]
    assert "m=audio" in offer_to_pbx and "RTP/AVP" in pbx_side
    assert ours.key_salt.hex() not in pbx_side and str(ours).split()[2] not in pbx_side
    assert f" {phone_port} " not in offer_to_pbx  # the phone's port is hidden
    assert app.calls is not None
    await wait_for(lambda: app.calls is not None and app.calls.active_calls == 0)
    # media.delete ran at call end: the relay's ports are back in the pool.
    engine = app.calls.ctx.media.engine  # type: ignore[attr-defined]
    await wait_for(lambda: engine.totals()["ports_in_use"] == 0)


async def test_plain_rtp_from_the_phone_under_require_is_488(
    limen_factory: StartLimen, kamailio: Kamailio
) -> None:
    app = await limen_factory(media=MediaSettings(relay=True, bind="127.0.0.1"))
    ua = UdpUa("2101", set_password("2101"), ("127.0.0.1", app.port(Transport.UDP)))
    try:
        invite = ua.request("INVITE", "sip:ext3115@127.0.0.1", body=srtp_offer(40000, None))
        _, final = await ua.transact(invite)
        assert isinstance(final, Response) and final.status == 488
    finally:
        ua.close()
    assert "ext3115" not in kamailio.log()
