"""Sans-IO SDP: parse, write and rewrite session descriptions for the media relay.

RFC 8866 (SDP), RFC 3264 (offer/answer), RFC 4568 + RFC 7714 (SDES crypto attributes),
RFC 5761 (rtcp-mux), RFC 3605 (a=rtcp), RFC 4733 (telephone-event), RFC 3551 (static payload
types), RFC 5576 (a=ssrc). Standard library only; nothing here does I/O or reads a clock.

Typical relay use, per side::

    sd = parse_sdp(body)
    out = sd.copy()
    for media in out.media:
        media.connection = None            # one session-level c= for everything
        media.port = allocated_port
        media.set_secure(True)             # RTP/AVP -> RTP/SAVP toward the phone
        media.crypto = offer_crypto()      # our own keys, never the other side's
        media.filter_codecs(["PCMA", "PCMU", "G722"])
    out.set_connection_address(public_ip)
    local_origin.stamp(out)                # our o= line, version bumped on change
    bytes(out)
"""

from limen.sdp.attributes import Direction, Fmtp, RtcpAttribute, RtpMap, SsrcAttribute
from limen.sdp.codecs import COMFORT_NOISE, STATIC_PAYLOAD_TYPES, TELEPHONE_EVENT, Codec
from limen.sdp.errors import SdpParseError
from limen.sdp.fields import Bandwidth, Connection, MediaLine, Origin
from limen.sdp.offer_answer import (
    Capabilities,
    LocalOrigin,
    answer_direction,
    build_answer,
    is_hold,
    is_session_on_hold,
)
from limen.sdp.sdes import (
    SUPPORTED_SUITES,
    CryptoAttribute,
    CryptoSuite,
    KeyParams,
    accepted_crypto,
    answer_crypto,
    choose_crypto,
    generate_crypto,
    generate_key,
    offer_crypto,
    parse_crypto,
)
from limen.sdp.session import (
    MediaDescription,
    SdpLine,
    SessionDescription,
    parse_sdp,
    plain_proto,
    secure_proto,
)

__all__ = [
    "COMFORT_NOISE",
    "STATIC_PAYLOAD_TYPES",
    "SUPPORTED_SUITES",
    "TELEPHONE_EVENT",
    "Bandwidth",
    "Capabilities",
    "Codec",
    "Connection",
    "CryptoAttribute",
    "CryptoSuite",
    "Direction",
    "Fmtp",
    "KeyParams",
    "LocalOrigin",
    "MediaDescription",
    "MediaLine",
    "Origin",
    "RtcpAttribute",
    "RtpMap",
    "SdpLine",
    "SdpParseError",
    "SessionDescription",
    "SsrcAttribute",
    "accepted_crypto",
    "answer_crypto",
    "answer_direction",
    "build_answer",
    "choose_crypto",
    "generate_crypto",
    "generate_key",
    "is_hold",
    "is_session_on_hold",
    "offer_crypto",
    "parse_crypto",
    "parse_sdp",
    "plain_proto",
    "secure_proto",
]
