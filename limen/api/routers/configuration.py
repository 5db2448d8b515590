"""``/mslrest/msl/v1/configuration/``: public identity, ports and network interfaces."""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Any

from fastapi import APIRouter

from limen import __version__
from limen.api.auth import Caller, CoreDep

router = APIRouter(prefix="/mslrest/msl/v1/configuration", tags=["configuration"])

_SIOCGIFADDR = 0x8915


def _ipv4_of(name: str) -> str | None:
    """The interface's IPv4 address (Linux ioctl); None when it has none."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = struct.pack("256s", name.encode()[:15])
        data = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, packed)
        return socket.inet_ntoa(data[20:24])
    except OSError:
        return None
    finally:
        sock.close()


def interfaces() -> list[dict[str, Any]]:
    out = []
    for _index, name in socket.if_nameindex():
        address = _ipv4_of(name)
        out.append({"name": name, "addresses": [address] if address else []})
    return out


@router.get("/")
async def configuration(core: CoreDep, caller: Caller) -> dict[str, Any]:
    s = core.settings
    options = core.store.options.get()
    return {
        "fqdn": s.public_fqdn,
        "public_ip": s.public_ip,
        "version": __version__,
        "interfaces": interfaces(),
        "ports": {
            "sip_udp": s.sip.udp_port if s.sip.udp else None,
            "sip_tcp": s.sip.tcp_port if s.sip.tcp else None,
            "sip_tls": s.sip.tls_port if s.sip.tls else None,
            "provisioning": s.provisioning.port if s.provisioning.enabled else None,
            "api": s.api.port,
            "rtp": [options.srtp_port_min, options.srtp_port_max],
        },
    }
