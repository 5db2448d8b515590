"""TLS contexts for SIP over TLS (RFC 3261 §26.3.1, RFC 5630): TLS 1.2 minimum, forward
secrecy with AEAD ciphers only (ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites
are always the modern ones).

The certificate comes from the settings (``sip.tls_cert`` / ``sip.tls_key``) or, when none
is configured, from a self-signed pair in ``<data_dir>/tls/`` made by
:func:`limen.certs.ensure_self_signed` with the public FQDN and IP in its subjectAltName.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from limen.certs import ensure_self_signed
from limen.config import Settings

if TYPE_CHECKING:
    from limen.store.schemas import IcpRecord

# TLS 1.2 suites; TLS 1.3 suites are configured separately by OpenSSL and are all AEAD.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def sip_tls_paths(settings: Settings) -> tuple[Path, Path]:
    """(certificate, key) for the SIP TLS listener: configured, else the generated pair."""
    sip = settings.sip
    if sip.tls_cert or sip.tls_key:
        if not (sip.tls_cert and sip.tls_key):
            raise ValueError("sip.tls_cert and sip.tls_key must be configured together")
        return settings.resolve(sip.tls_cert), settings.resolve(sip.tls_key)
    folder = settings.data_path / "tls"
    return folder / "sip.pem", folder / "sip.key"


def ensure_sip_certificate(settings: Settings) -> tuple[Path, Path, bool]:
    """Make sure the SIP certificate exists; returns (cert, key, generated now)."""
    cert, key = sip_tls_paths(settings)
    if settings.sip.tls_cert:
        missing = [str(p) for p in (cert, key) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"configured SIP TLS file(s) missing: {', '.join(missing)}")
        return cert, key, False
    generated = ensure_self_signed(cert, key, settings.public_fqdn, settings.public_ip)
    return cert, key, generated


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The listener's context. Client certificates are not requested (phones authenticate
    with SIP digest; mutual TLS may come later)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client_context(
    verify: bool = False,
    cafile: str | None = None,
    *,
    check_hostname: bool = True,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> ssl.SSLContext:
    """The context for outbound connections (toward the ICP).

    With ``verify`` the peer's chain is checked against ``cafile`` (else the system store)
    and, with ``check_hostname``, its name against the ``server_hostname`` of the
    connection. ``client_cert``/``client_key``: the certificate presented when the peer
    asks for one (mutual TLS; OpenSSL sends it only on a CertificateRequest).
    :func:`client_tls` builds the per-ICP policy on top of this.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = check_hostname
    if client_cert is not None and client_key is not None:
        ctx.load_cert_chain(str(client_cert), str(client_key))
    return ctx


# -- per-ICP trust (issue 15) ------------------------------------------------------------

NO_VERIFY_WARNING = "the TLS certificate of ICP {name} is NOT verified (tls_verify = false)"


def parse_pin(text: str) -> bytes:
    """``AB:CD:...`` / ``abcd...`` (64 hex digits) → the 32-byte SHA-256 digest."""
    cleaned = "".join(c for c in text if c not in ": \t").lower()
    try:
        digest = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"pin {text!r} is not hexadecimal") from None
    if len(digest) != 32:
        raise ValueError(f"pin {text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return digest


@dataclass(frozen=True)
class ClientTls:
    """How Limen trusts one peer it dials: the context, the name the certificate must
    carry (also sent as SNI), an optional pin, and ``mode``, one of ``system``, ``ca``,
    ``pin``, ``ca+pin``, ``none`` (the explicit "don't verify")."""

    context: ssl.SSLContext
    server_name: str | None
    pin: bytes | None
    mode: str
    label: str = ""
    # Set when the configured trust could not be built (unreadable CA file, bad pin):
    # every connection is then refused with this reason (fail closed, never open).
    refuse: str = ""

    @property
    def verifies(self) -> bool:
        return self.mode != "none"

    def check_peer(self, der: bytes | None) -> str | None:
        """After the handshake, before any write: why the peer's certificate is refused
        (the pin does not match), or None. The chain and name were checked by OpenSSL
        during the handshake."""
        if self.refuse:
            return self.refuse
        if self.pin is None:
            return None
        if not der or not hmac.compare_digest(hashlib.sha256(der).digest(), self.pin):
            return "certificate does not match the pinned SHA-256 fingerprint"
        return None


def client_tls(
    *,
    verify: bool = True,
    cafile: str | None = None,
    pin: str = "",
    server_name: str | None = None,
    check_hostname: bool = True,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    label: str = "",
) -> ClientTls:
    """One peer's trust: a CA file (chain + name), a pin (alone it replaces the chain
    check: the usual case of a PBX with a self-signed certificate; with a CA file both
    must hold), else the system store; ``verify=False`` checks nothing."""
    digest = parse_pin(pin) if pin.strip() else None
    if not verify:
        mode, chain = "none", False
    elif cafile:
        mode, chain = ("ca+pin" if digest else "ca"), True
    elif digest is not None:
        mode, chain = "pin", False
    else:
        mode, chain = "system", True
    context = client_context(
        chain,
        cafile if chain else None,
        check_hostname=check_hostname and bool(server_name),
        client_cert=client_cert,
        client_key=client_key,
    )
    return ClientTls(context, server_name, digest if verify else None, mode, label)


def refusing_tls(reason: str, label: str = "") -> ClientTls:
    """A trust that refuses every peer: what a broken TLS configuration amounts to."""
    # No chain check: the handshake completes and check_peer refuses with the reason.
    return ClientTls(client_context(False), None, None, "invalid", label, refuse=reason)


def icp_host_name(icp: IcpRecord) -> str:
    """The name an ICP's certificate must carry: ``tls_server_name``, else its domain if
    it has one, else its address (a name or an IP literal, RFC 5922 §7.3 compares the
    SIP domain)."""
    return icp.tls_server_name or icp.domain or icp.address.strip("[]")


def icp_client_tls(settings: Settings, icp: IcpRecord) -> ClientTls:
    """The trust toward ``icp`` for SIP/TLS and the provisioning link: its own fields,
    falling back to the global ``provisioning.upstream_*`` settings."""
    prov = settings.provisioning
    cafile = icp.tls_ca_file or prov.upstream_ca_file
    pin = icp.tls_pin_sha256 or ("" if icp.tls_ca_file else prov.upstream_pin_sha256)
    explicit = bool(icp.tls_ca_file or icp.tls_pin_sha256)
    verify = icp.tls_verify and (explicit or prov.upstream_verify)
    check_hostname = True if explicit else prov.upstream_check_hostname
    cert, key = _client_pair(settings, icp)
    return client_tls(
        verify=verify,
        cafile=str(settings.resolve(cafile)) if cafile else None,
        pin=pin,
        server_name=icp_host_name(icp),
        check_hostname=check_hostname,
        client_cert=cert,
        client_key=key,
        label=icp.name,
    )


def _client_pair(settings: Settings, icp: IcpRecord) -> tuple[Path | None, Path | None]:
    """Mutual TLS: the ICP's configured pair, else the SIP listener's certificate (issued
    by Limen's CA, with the clientAuth purpose) when it exists."""
    if icp.tls_client_cert and icp.tls_client_key:
        return settings.resolve(icp.tls_client_cert), settings.resolve(icp.tls_client_key)
    cert, key = sip_tls_paths(settings)
    if cert.exists() and key.exists():
        return cert, key
    return None, None
