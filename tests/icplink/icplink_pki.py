"""A test PKI for the ICP link tests: CAs and leaf certificates made with limen.certs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.certs import CertificateAuthority, create_ca, issue_certificate, parse_san_item
from limen.config import Settings


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    @property
    def fingerprint(self) -> str:
        """``openssl x509 -fingerprint -sha256`` style: AB:CD:..."""
        pem = self.cert.read_bytes()
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def make_ca(folder: Path, label: str) -> CertificateAuthority:
    settings = Settings(
        config_path=str(folder / label / "limen.toml"),
        data_dir=str(folder / label),
        public_fqdn=f"{label}.ca.test",
    )
    return create_ca(settings)


def leaf(ca: CertificateAuthority, folder: Path, name: str, *sans: str) -> Pair:
    chain, key = issue_certificate(ca, [parse_san_item(s) for s in (sans or (name,))], days=30)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(chain)
    key_path.write_bytes(key)
    return Pair(cert_path, key_path)
