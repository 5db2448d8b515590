"""A call's signalling as a pcap file (libpcap format, LINKTYPE_RAW) that tshark and
Wireshark open.

Each recorded message becomes one IPv4 or IPv6 packet with a UDP header whose addresses
and ports are the ones the message really crossed. Messages that travelled over TCP or
TLS are written as UDP datagrams too: Limen records SIP messages, not segments (and TLS
is decrypted by then), and one datagram per message is what a reader of a ladder wants.
Wireshark decodes UDP port 5060 as SIP by itself; for other ports use "Decode As" or
``tshark -d udp.port==N,sip`` (the console's tests do).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import Any

LINKTYPE_RAW = 101  # the packet starts with an IPv4 or IPv6 header
_MAX_PAYLOAD = 65507


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int) -> bytes:
    payload = payload[:_MAX_PAYLOAD]
    s_ip = ipaddress.ip_address(src[0])
    d_ip = ipaddress.ip_address(dst[0])
    if s_ip.version != d_ip.version:  # cannot happen on one socket; keep the file valid
        s_ip = ipaddress.ip_address("::" if d_ip.version == 6 else "0.0.0.0")
    udp_len = 8 + len(payload)
    if d_ip.version == 4:
        udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload  # RFC 768: 0 = none
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + udp_len,
            ident & 0xFFFF,
            0x4000,  # don't fragment
            64,
            17,
            0,
            s_ip.packed,
            d_ip.packed,
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + udp
    # IPv6: the UDP checksum is mandatory (RFC 8200 §8.1), over a pseudo-header.
    pseudo = s_ip.packed + d_ip.packed + struct.pack("!I3xB", udp_len, 17)
    bare = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
    checksum = _checksum(pseudo + bare) or 0xFFFF
    udp = bare[:6] + struct.pack("!H", checksum) + bare[8:]
    header = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, s_ip.packed, d_ip.packed)
    return header + udp


def write_pcap(
    records: Iterable[Any], fallback_local: tuple[str, int] = ("0.0.0.0", 5060)
) -> bytes:
    """The pcap bytes of ``records`` (:class:`limen.gateway.history.SipRecord`)."""
    records = list(records)
    # A send may not know its local address; use the one seen on the same Call-ID.
    local_of: dict[str, tuple[str, int]] = {}
    for r in records:
        if r.local is not None:
            local_of.setdefault(r.call_id, r.local)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)]
    for index, r in enumerate(records):
        local = r.local or local_of.get(r.call_id) or fallback_local
        src, dst = (r.remote, local) if r.direction == "in" else (local, r.remote)
        packet = _packet(src, dst, r.data, index + 1)
        seconds = int(r.time)
        micros = int((r.time - seconds) * 1_000_000)
        out.append(struct.pack("<IIII", seconds, micros, len(packet), len(packet)))
        out.append(packet)
    return b"".join(out)
