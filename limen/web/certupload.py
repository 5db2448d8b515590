"""Installing an operator's own certificate for one listener (the Certificates screen).

The PEM chain and key are checked before anything is written: parseable, the key
matches the first certificate, not expired. They replace the listener's files and a
marker (``limen.certs.operator_marker``) keeps ``limen serve`` from re-issuing them with
Limen's CA. "Renew" on the screen leaves such a certificate alone, as it does for the
files named in ``limen.toml``. Listeners read their files when they start.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.certs import certificate_slots, operator_marker, write_pair
from limen.config import Settings


def install_operator_certificate(
    settings: Settings, name: str, cert_pem: bytes, key_pem: bytes
) -> str:
    """Check and install; returns a line saying what was done (ValueError: refused)."""
    slots = {s.name: s for s in certificate_slots(settings)}
    if name not in slots:
        raise ValueError(f"unknown listener {name!r} (one of {', '.join(slots)})")
    target = slots[name]
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ValueError("the certificate file is not PEM") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("the key file is not an unencrypted PEM private key") from exc
    leaf = chain[0]
    if leaf.public_key() != key.public_key():
        raise ValueError("the key does not belong to the certificate")
    if leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise ValueError(f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    write_pair(target.cert_path, target.key_path, cert_pem, key_pem)
    operator_marker(target.cert_path).write_text("installed from the console\n")
    return (
        f"{target.title} certificate installed ({leaf.subject.rfc4514_string()}, "
        f"expires {leaf.not_valid_after_utc:%Y-%m-%d}); used from the next start"
    )
