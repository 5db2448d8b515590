"""TLS contexts for SIP over TLS (RFC 3261 §26.3.1, RFC 5630): TLS 1.2 minimum, forward
secrecy with AEAD ciphers only (ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites
are always the modern ones).

The certificate comes from the settings (``sip.tls_cert`` / ``sip.tls_key``) or, when none
is configured, from a self-signed pair in ``<data_dir>/tls/`` made by
:func:`limen.certs.ensure_self_signed` with the public FQDN and IP in its subjectAltName.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from limen.certs import ensure_self_signed
from limen.config import Settings

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


def client_context(verify: bool = False, cafile: str | None = None) -> ssl.SSLContext:
    """The context for outbound connections (toward the ICP).

    ``verify`` is off by default because ICPs commonly present self-signed certificates.
    TODO(settings): expose ``verify`` and ``cafile`` as SIP settings per ICP once the
    store knows ICPs (issue 4); with ``verify=True`` the peer certificate is checked
    against ``cafile`` (or the system store) and the host name we dialled.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
