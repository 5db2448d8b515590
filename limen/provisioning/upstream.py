"""The connection from Limen to a PBX's config server (``https://<icp>:<xml port>/``).

How the PBX's certificate is trusted (``[provisioning]`` settings), checked during or
right after the TLS handshake — before a single byte of the phone's request is sent:

- ``upstream_ca_file``: the chain must verify against this CA (and the certificate
  must name the ICP's address unless ``upstream_check_hostname = false``);
- ``upstream_pin_sha256``: the certificate's SHA-256 fingerprint must equal the pin
  (``openssl x509 -noout -fingerprint -sha256`` output; colons optional). Alone, it
  replaces chain checks (the usual case: a PBX with a self-signed certificate); with a CA
  file, both must hold;
- neither: the system trust store, unless ``upstream_verify = false``: then nothing is
  checked, and a warning is logged when the proxy starts and on every connection.

An ICP whose ``tls`` flag is off is reached over plain HTTP (a lab PBX).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limen.transport.tls import ClientTls, icp_client_tls, parse_pin

if TYPE_CHECKING:
    from limen.config import Settings
    from limen.store.schemas import IcpRecord

__all__ = ["ClientTls", "UpstreamError", "UpstreamTls", "connect", "parse_pin", "upstream_tls"]

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
NO_VERIFY_WARNING = (
    "provisioning: the PBX config server's TLS certificate is NOT verified "
    "(provisioning.upstream_verify = false): set upstream_ca_file or upstream_pin_sha256"
)


class UpstreamError(Exception):
    """The PBX could not be reached or trusted: ``status`` 502 or 504 for the phone."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class UpstreamTls:
    """The client TLS context plus the optional pin; ``mode`` says which checks apply."""

    context: ssl.SSLContext
    pin: bytes | None
    mode: str
    server_name: str | None = None

    @property
    def verifies(self) -> bool:
        return self.mode != "none"


def upstream_tls(settings: Settings, icp: IcpRecord | None = None) -> UpstreamTls | ClientTls:
    """The global trust (``[provisioning]`` settings), or the one of ``icp``: its own
    ``tls_*`` fields over the global settings (issue 15), shared with its SIP/TLS link."""
    if icp is not None:
        return icp_client_tls(settings, icp)
    prov = settings.provisioning
    pin = parse_pin(prov.upstream_pin_sha256) if prov.upstream_pin_sha256.strip() else None
    if prov.upstream_ca_file:
        cafile = str(settings.resolve(prov.upstream_ca_file))
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        context.check_hostname = prov.upstream_check_hostname
        mode = "ca+pin" if pin else "ca"
    elif pin is not None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        mode = "pin"
    elif prov.upstream_verify:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = prov.upstream_check_hostname
        mode = "system"
    else:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        mode = "none"
    context.minimum_version = MINIMUM_VERSION
    return UpstreamTls(context, pin, mode)


async def connect(
    host: str, port: int, tls: UpstreamTls | ClientTls | None, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the connection (TLS when ``tls`` is given) within ``timeout`` seconds and
    enforce the pin; raises :class:`UpstreamError`. The pin is checked after the
    handshake and before the caller writes a byte of the request."""
    if tls is not None and tls.mode == "none":
        log.warning("%s (connecting to %s:%d)", NO_VERIFY_WARNING, host, port)
    server_name = (tls.server_name if tls is not None else None) or host.strip("[]")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host.strip("[]"),
                port,
                ssl=tls.context if tls is not None else None,
                server_hostname=server_name if tls is not None else None,
                ssl_handshake_timeout=timeout if tls is not None else None,
            )
    except TimeoutError:
        raise UpstreamError(504, f"connect to {host}:{port} timed out") from None
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamError(
            502, f"certificate of {host}:{port} rejected: {exc.verify_message}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamError(502, f"cannot connect to {host}:{port}: {exc}") from None
    if tls is not None and tls.pin is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der or not hmac.compare_digest(hashlib.sha256(der).digest(), tls.pin):
            writer.close()
            raise UpstreamError(
                502, f"certificate of {host}:{port} does not match the pinned fingerprint"
            )
    return reader, writer
