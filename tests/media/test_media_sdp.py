"""Offer/answer rewriting: golden SDP with placeholders for ports, keys and session ids."""

from __future__ import annotations

import re

import pytest
from media_support import crypto_line, make_relay, media_of, new_key, sdp

from limen.media import LegPolicy, MediaRefused, Security


def normalise(body: bytes) -> str:
    text = body.decode()
    text = re.sub(r"^o=limen \d+ ", "o=limen SID ", text, flags=re.M)
    text = re.sub(r"^m=audio [1-9]\d* ", "m=audio PORT ", text, flags=re.M)
    text = re.sub(r"inline:[A-Za-z0-9+/=]+", "inline:KEY", text)
    return text.replace("\r\n", "\n")


PHONE_OFFER_TO_PBX = """\
v=0
o=limen SID 0 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio PORT RTP/SAVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=crypto:1 AEAD_AES_256_GCM inline:KEY
a=crypto:2 AEAD_AES_128_GCM inline:KEY
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:KEY
a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:KEY
a=ptime:20
"""

PBX_ANSWER_TO_PHONE = """\
v=0
o=limen SID 0 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio PORT RTP/SAVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:KEY
"""


async def test_phone_srtp_offer_and_plain_pbx_answer_golden() -> None:
    relay = make_relay()
    await relay.start()
    key = new_key()
    phone = sdp(40000, address="192.0.2.10", crypto=[crypto_line(key, tag=7)])
    out = relay.offer("g1", "set", phone)
    assert normalise(out) == PHONE_OFFER_TO_PBX
    # never the phone's key toward the PBX
    assert all(k != key for _, _, k in media_of(out).crypto)
    answer = relay.answer("g1", "icp", sdp(41000, address="10.1.1.5", codecs="8 101", user="pbx"))
    assert normalise(answer) == PBX_ANSWER_TO_PHONE
    assert media_of(answer).crypto[0][2] != key
    assert b"192.0.2.10" not in out and b"10.1.1.5" not in answer
    await relay.close()


async def test_pbx_offer_toward_phone_is_srtp_with_our_key() -> None:
    relay = make_relay()
    await relay.start()
    out = relay.offer("g2", "icp", sdp(41000, address="10.1.1.5", user="pbx"))
    toward_phone = media_of(out)
    assert toward_phone.proto == "RTP/SAVP" and len(toward_phone.crypto) == 4
    # the phone answers with one suite; we answer the PBX plain (it offered plain)
    phone_key = new_key()
    answer = relay.answer(
        "g2", "set", sdp(40000, crypto=[crypto_line(phone_key, tag=3)], codecs="0")
    )
    back = media_of(answer)
    assert back.proto == "RTP/AVP" and back.crypto == []
    assert b"a=crypto" not in answer
    await relay.close()


async def test_origin_version_bumps_only_on_change() -> None:
    relay = make_relay()
    await relay.start()
    key = new_key()
    first = relay.offer("g3", "set", sdp(40000, crypto=[crypto_line(key)]))
    relay.answer("g3", "icp", sdp(41000, user="pbx"))
    again = relay.offer("g3", "set", sdp(40000, crypto=[crypto_line(key)], version=2))
    assert media_of(again).port == media_of(first).port
    held = relay.offer(
        "g3", "set", sdp(40000, crypto=[crypto_line(key)], version=3, direction="sendonly")
    )
    origin = next(line for line in held.decode().split("\r\n") if line.startswith("o="))
    assert origin.split()[2] == "1"  # our version moved once: the hold changed the SDP
    assert b"a=sendonly" in held
    await relay.close()


async def test_plain_phone_offer_refused_under_require() -> None:
    relay = make_relay()
    await relay.start()
    with pytest.raises(MediaRefused) as info:
        relay.offer("r1", "set", sdp(40000))
    assert info.value.status == 488
    assert relay.pool.in_use == 0 and not relay.calls
    # "Prefer" on the set side accepts it
    out = relay.offer("r1", "set", sdp(40000), policy={"set": LegPolicy(Security.PREFER)})
    assert media_of(out).proto == "RTP/SAVP"  # icp side "Prefer": offered SRTP
    await relay.close()


async def test_dtls_only_offer_refused() -> None:
    relay = make_relay()
    await relay.start()
    body = sdp(40000).replace(b"RTP/AVP", b"UDP/TLS/RTP/SAVP") + b"a=fingerprint:sha-256 AB\r\n"
    with pytest.raises(MediaRefused) as info:
        relay.offer("r2", "set", body)
    assert info.value.status == 488
    await relay.close()


async def test_codec_policy_filters_and_refuses() -> None:
    relay = make_relay()
    await relay.start()
    g711 = {"set": LegPolicy(Security.REQUIRE, codecs=("PCMU", "PCMA"))}
    out = relay.offer("c1", "icp", sdp(41000, codecs="9 0 101", user="pbx"), policy=g711)
    text = out.decode()
    assert "m=audio" in text and " RTP/SAVP 0 101\r\n" in text and "G722" not in text
    with pytest.raises(MediaRefused) as info:
        relay.offer("c2", "icp", sdp(41000, codecs="9 18", user="pbx"), policy=g711)
    assert info.value.status == 488
    assert set(relay.calls) == {"c1"}
    await relay.close()


async def test_plain_retry_and_prefer_answer_without_crypto() -> None:
    relay = make_relay()
    await relay.start()
    key = new_key()
    offer = sdp(40000, crypto=[crypto_line(key)])
    first = media_of(relay.offer("p1", "set", offer))
    assert first.proto == "RTP/SAVP"
    retry = media_of(relay.reoffer_plain("p1", "set", offer))
    assert retry.proto == "RTP/AVP" and retry.crypto == [] and retry.port == first.port
    with pytest.raises(MediaRefused) as info:  # a retry needs the call it retries
        relay.reoffer_plain("nobody", "set", offer)
    assert info.value.status == 481
    await relay.close()


async def test_icp_require_refuses_plain_answer() -> None:
    relay = make_relay(icp_security=Security.REQUIRE)
    await relay.start()
    relay.offer("q1", "set", sdp(40000, crypto=[crypto_line(new_key())]))
    with pytest.raises(MediaRefused) as info:
        relay.answer("q1", "icp", sdp(41000, user="pbx"))
    assert info.value.status == 488
    await relay.close()


async def test_rtcp_mux_when_both_agree() -> None:
    relay = make_relay()
    await relay.start()
    out = relay.offer("m1", "set", sdp(40000, crypto=[crypto_line(new_key())], mux=True))
    assert media_of(out).mux
    answer = relay.answer("m1", "icp", sdp(41000, user="pbx"))  # PBX declines mux
    assert media_of(answer).mux  # we still accept it toward the phone
    call = relay.calls["m1"]
    set_ep, icp_ep = call.legs["set"].endpoints[0], call.legs["icp"].endpoints[0]
    assert set_ep is not None and icp_ep is not None
    assert set_ep.rtcp_mux and not icp_ep.rtcp_mux
    await relay.close()
