"""Self-signed certificates for Limen's TLS listeners (SIP 5061, admin 8443, provisioning 4445).

Generated with ``cryptography`` when the operator configured no PEM files. The
subjectAltName carries the public FQDN and the public IP, the latter both as an IP and as
a DNS entry, the way MBG's ``resign_add_subjectaltname`` override
("DNS=FQDN,DNS=Public IP,IP=Public IP") does: some phones match the host they dialled
against DNS entries only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def subject_alt_names(fqdn: str, ip: str, extra: list[str] | None = None) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, value: str) -> None:
        if not value or (kind, value) in seen:
            return
        seen.add((kind, value))
        if kind == "IP":
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        else:
            names.append(x509.DNSName(value))

    add("DNS", fqdn)
    if ip:
        add("DNS", ip)
        add("IP", ip)
    for item in extra or []:
        kind, _, value = item.partition("=")
        add(kind.strip().upper(), value.strip())
    return names


def generate_self_signed(
    fqdn: str, ip: str, days: int = 825, extra: list[str] | None = None
) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) for a self-signed ECDSA P-256 certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = fqdn or ip or "limen"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    sans = subject_alt_names(fqdn, ip, extra)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def ensure_self_signed(cert_path: Path, key_path: Path, fqdn: str, ip: str) -> bool:
    """Create the pair if either file is missing. Returns True when it generated one."""
    if cert_path.exists() and key_path.exists():
        return False
    cert_pem, key_pem = generate_self_signed(fqdn, ip)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    # The key is written with 0600 from the start, never world-readable for an instant.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert_pem)
    return True
