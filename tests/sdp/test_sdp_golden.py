"""Golden rewrite tests: an SDP in, the SDP the relay sends on, compared line for line.

After rtpengine's t/auto-daemon-tests*.pl: the expected text holds placeholders for what
changes per run (``{PORT}``, ``{KEY1}`` ...); a placeholder matches one token and a name used
twice must match the same value. The rewrite recipes below are the ones the media relay
follows per side, written with the public ``limen.sdp`` API only.
"""

from __future__ import annotations

import base64
import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from limen.sdp import (
    Capabilities,
    CryptoSuite,
    Direction,
    LocalOrigin,
    SessionDescription,
    answer_crypto,
    build_answer,
    offer_crypto,
    parse_sdp,
)

DATA = Path(__file__).parent / "data"
PUBLIC = "203.0.113.10"  # Limen's address toward phones
LAN = "10.20.0.1"  # Limen's address toward the PBX
_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


def load(name: str) -> SessionDescription:
    return parse_sdp((DATA / name).read_bytes())


def assert_golden(actual: SessionDescription, expected: str) -> dict[str, str]:
    """Match ``bytes(actual)`` against ``expected`` (LF line ends, placeholders)."""
    text = bytes(actual).decode()
    want = expected.replace("\n", "\r\n")
    pattern, seen, pos = [], set(), 0
    for match in _PLACEHOLDER.finditer(want):
        pattern.append(re.escape(want[pos : match.start()]))
        name = match.group(1)
        pattern.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^\\s|]+)")
        seen.add(name)
        pos = match.end()
    pattern.append(re.escape(want[pos:]))
    found = re.fullmatch("".join(pattern), text)
    if found is None:
        delta = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), text.replace("\r\n", "\n").splitlines(), lineterm=""
            )
        )
        raise AssertionError(f"SDP differs from the golden text:\n{delta}")
    return found.groupdict()


def to_phone(
    sd: SessionDescription,
    origin: LocalOrigin,
    ports: Sequence[int],
    suites: Sequence[CryptoSuite],
    codecs: Sequence[str],
) -> SessionDescription:
    """Offer toward a phone: our public address, SRTP with our own keys, codec policy."""
    out = sd.copy()
    out.strip_ice()
    out.strip_dtls()
    for media, port in zip(out.media, ports, strict=True):
        # Write the writer's effective direction before c= changes (RFC 2543 hold).
        direction = sd.effective_direction(media)
        if media.rejected or media.kind != "audio":
            media.port = 0
            continue
        media.port = port
        media.rtcp = None
        media.direction = direction
        media.filter_codecs(codecs)
        media.set_secure(True)
        media.crypto = offer_crypto(suites)
    out.set_connection_address(PUBLIC)
    origin.stamp(out)
    return out


def to_pbx(sd: SessionDescription, origin: LocalOrigin, ports: Sequence[int]) -> SessionDescription:
    """Offer toward the PBX: our LAN address, plain RTP, no crypto, ICE or DTLS."""
    out = sd.copy()
    out.strip_ice()
    out.strip_dtls()
    for media, port in zip(out.media, ports, strict=True):
        direction = sd.effective_direction(media)
        if media.rejected or media.kind != "audio":
            media.port = 0
            continue
        media.port = port
        media.rtcp = None
        media.direction = direction
        media.set_secure(False)
        media.crypto = []
    out.set_connection_address(LAN)
    origin.stamp(out)
    return out


def check_key(value: str, length: int) -> None:
    assert len(base64.b64decode(value + "=" * (-len(value) % 4))) == length


def test_pbx_plain_offer_becomes_srtp_offer_to_phone() -> None:
    origin = LocalOrigin(PUBLIC, session_id="1000")
    out = to_phone(
        load("kamailio_passthrough.sdp"),
        origin,
        [20000],
        [CryptoSuite.AES_CM_128_HMAC_SHA1_80, CryptoSuite.AES_CM_128_HMAC_SHA1_32],
        ["PCMA", "PCMU", "G722"],
    )
    values = assert_golden(
        out,
        """\
v=0
o=limen 1000 0 IN IP4 203.0.113.10
s=MiVoice Business
c=IN IP4 203.0.113.10
t=0 0
m=audio 20000 RTP/SAVP 8 0 13 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:13 CN/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=maxptime:40
a=sendrecv
a=nortpproxy:yes
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY2}
""",
    )
    check_key(values["KEY1"], 30)
    check_key(values["KEY2"], 30)
    assert values["KEY1"] != values["KEY2"]


def test_baresip_srtp_offer_becomes_plain_offer_to_pbx() -> None:
    origin = LocalOrigin(LAN, session_id="2000")
    out = to_pbx(load("baresip_sdes.sdp"), origin, [40000])
    assert_golden(
        out,
        """\
v=0
o=limen 2000 0 IN IP4 10.20.0.1
s=-
c=IN IP4 10.20.0.1
t=0 0
a=tool:baresip 3.16.0
m=audio 40000 RTP/AVP 9 0 8 101
b=AS:64
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000/1
a=rtpmap:8 PCMA/8000/1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:2581183911 cname:3f1b8c2e-8a57-4d0e-b2a5-6c4f0f9d1e77
a=ptime:20
""",
    )


def test_answer_to_mitel_phone_with_our_key() -> None:
    offer = load("mitel_6867i.sdp")
    origin = LocalOrigin(PUBLIC, session_id="3000")
    answer = build_answer(
        offer,
        Capabilities(codecs=("G722", "PCMA", "PCMU"), reorder=True),
        origin=origin.origin,
        address=PUBLIC,
        ports=[20002],
    )
    [media] = answer.media
    result = answer_crypto(offer.media[0].crypto)
    assert result is not None
    theirs, ours = result
    media.crypto = [ours]
    origin.stamp(answer)
    values = assert_golden(
        answer,
        """\
v=0
o=limen 3000 0 IN IP4 203.0.113.10
s=-
c=IN IP4 203.0.113.10
t=0 0
m=audio 20002 RTP/SAVP 9 8 0 101
a=rtpmap:9 G722/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}
""",
    )
    check_key(values["KEY"], 30)
    assert theirs.key_salt == base64.b64decode("Wh2DC7fOCda7wATnF1xkPH3ssLWA7De8lxLdLmqu")


def test_rtpengine_sdes_dtls_offer_becomes_plain_offer_to_pbx() -> None:
    out = to_pbx(load("rtpengine_offer.sdp"), LocalOrigin(LAN, session_id="4000"), [40002])
    assert_golden(
        out,
        """\
v=0
o=limen 4000 0 IN IP4 10.20.0.1
s=tester
c=IN IP4 10.20.0.1
t=0 0
m=audio 40002 RTP/AVP 0 8 101
c=IN IP4 10.20.0.1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendrecv
a=ptime:20
""",
    )


def test_legacy_hold_becomes_explicit_sendonly() -> None:
    origin = LocalOrigin(PUBLIC, session_id="5000")
    out = to_phone(
        load("rfc2543_legacy_hold.sdp"),
        origin,
        [20004],
        [CryptoSuite.AEAD_AES_128_GCM],
        ["G729", "PCMA"],
    )
    values = assert_golden(
        out,
        """\
v=0
o=limen 5000 0 IN IP4 203.0.113.10
s=SIP Call
c=IN IP4 203.0.113.10
t=0 0
m=audio 20004 RTP/SAVP 18 101
c=IN IP4 203.0.113.10
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendonly
a=crypto:1 AEAD_AES_128_GCM inline:{KEY}
""",
    )
    check_key(values["KEY"], 28)


def test_linphone_ice_offer_to_pbx_rejects_video_and_strips_ice() -> None:
    origin = LocalOrigin(LAN, session_id="6000")
    out = to_pbx(load("linphone_ice.sdp"), origin, [40004, 40006])
    assert_golden(
        out,
        """\
v=0
o=limen 6000 0 IN IP4 10.20.0.1
s=Talk
c=IN IP4 10.20.0.1
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 40004 RTP/AVP 96 97 98 0 8 18 101 99 100
c=IN IP4 10.20.0.1
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
a=sendrecv
m=video 0 RTP/AVP 96 97
c=IN IP4 10.20.0.1
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp:9079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 ccm fir
a=rtcp-fb:97 nack pli
""",
    )


def test_reoffer_keeps_version_until_something_changes() -> None:
    """RFC 3264 §8: same SDP, same version; a hold re-INVITE bumps it."""
    origin = LocalOrigin(LAN, session_id="7000")
    first = to_pbx(load("baresip_sdes.sdp"), origin, [40000])
    again = to_pbx(load("baresip_sdes.sdp"), origin, [40000])
    assert bytes(again) == bytes(first)
    held = load("baresip_sdes.sdp")
    held.media[0].direction = Direction.SENDONLY
    third = to_pbx(held, origin, [40000])
    assert third.origin.session_version == 1
    assert third.media[0].attribute("sendonly") == ""


def test_golden_helper_reports_differences() -> None:
    sd = parse_sdp("v=0\r\no=- 1 1 IN IP4 a\r\n")
    try:
        assert_golden(sd, "v=0\no=- 1 2 IN IP4 a\n")
    except AssertionError as exc:
        assert "-o=- 1 2 IN IP4 a" in str(exc) and "+o=- 1 1 IN IP4 a" in str(exc)
    else:
        raise AssertionError("mismatch not detected")
    assert assert_golden(sd, "v=0\no=- {X} {X} IN IP4 a\n") == {"X": "1"}
