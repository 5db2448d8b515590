"""Limen's certificates: its own CA and the certificates of its TLS listeners.

Three listeners show a certificate to phones and browsers: SIP/TLS (5061), the HTTPS
provisioning proxy (4445) and the admin API (8443). For each, an operator PEM pair named
in the configuration (``sip.tls_cert``/``tls_key``, ``provisioning.tls_cert``/``tls_key``,
``api.tls_cert``/``tls_key``) takes precedence and is never touched. Otherwise
:func:`ensure_certificates` issues one from **Limen's own CA** (``<data_dir>/tls/ca.pem``,
created on first use), so phones need a single trust-list entry: the CA certificate
(``limen cert ca``). Files are kept where the listeners already look for them:

=============  =================================================
SIP/TLS        ``<data_dir>/tls/sip.pem`` + ``sip.key``
provisioning   ``<data_dir>/tls/provisioning.pem`` + ``provisioning.key``
admin API      ``<data_dir>/api.crt`` + ``api.key``
CA             ``<data_dir>/tls/ca.pem`` + ``ca.key``
=============  =================================================

Each leaf file holds the leaf then the CA certificate (a full chain for ``load_cert_chain``);
keys are PKCS#8 PEM written with mode 0600 and replaced atomically.

subjectAltName: the public FQDN, the public IP both as a DNS and an IP entry (as MBG's
``resign_add_subjectaltname`` override "DNS=FQDN,DNS=Public IP,IP=Public IP" does: some
phones compare the host they dialled with DNS entries only), then ``certs.extra_names``,
then overrides rows of section ``proxy::sip_tls`` or ``proxy::aastra_xml_*`` with
parameter ``secure_in::ssl::resign_add_subjectaltname`` (comma-separated ``DNS=``/``IP=``
items; the placeholders ``FQDN`` and ``Public IP`` / ``Public IP address`` stand for the
configured public name and address, so an MBG administrator's row works unchanged). One
list feeds all three certificates.

A generated certificate is re-issued by :func:`ensure_certificates` when it is missing,
not signed by the current CA (e.g. an older self-signed one), its names differ from the
list above, its key does not match, or it expires within ``certs.warn_days``.
:func:`check_certificate_expiry` (call it at start and daily, or run
:func:`watch_certificates`) logs a warning and adds an alarm event for every certificate
(generated, operator or CA) that expires within ``certs.warn_days`` (default 30).

:func:`ensure_self_signed` (a stand-alone self-signed pair) stays for callers that only
need *a* certificate before ``ensure_certificates`` has run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from limen.config import Settings

log = logging.getLogger(__name__)

SAN_PARAMETER = "secure_in::ssl::resign_add_subjectaltname"
SAN_SECTIONS = ("proxy::sip_tls", "proxy::aastra_xml_")
FALLBACK_NAME = "limen.local"

SanKind = Literal["DNS", "IP"]
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_PLACEHOLDERS_FQDN = {"fqdn", "public fqdn"}
_PLACEHOLDERS_IP = {"public ip", "public ip address", "ip"}


# -- subjectAltName lists -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SanEntry:
    """One subjectAltName entry, written ``DNS=name`` or ``IP=address``."""

    kind: SanKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"

    def general_name(self) -> x509.GeneralName:
        if self.kind == "IP":
            return x509.IPAddress(ipaddress.ip_address(self.value))
        return x509.DNSName(self.value)


def _valid_dns(value: str) -> bool:
    name = value[2:] if value.startswith("*.") else value
    name = name.rstrip(".")
    if not name or len(name) > 253:
        return False
    return all(_DNS_LABEL.match(label) for label in name.split("."))


def parse_san_item(item: str, fqdn: str = "", ip: str = "") -> SanEntry:
    """``DNS=x`` / ``IP=y`` / a bare name or address → an entry; ValueError if invalid.

    The MBG placeholders ``FQDN`` and ``Public IP`` (``Public IP address``) are replaced
    by ``fqdn`` / ``ip``.
    """
    text = item.strip()
    kind_text, sep, value = text.partition("=")
    if sep:
        kind = kind_text.strip().upper()
        value = value.strip()
    else:
        kind, value = "", text
    lowered = value.lower()
    if lowered in _PLACEHOLDERS_FQDN:
        if not fqdn:
            raise ValueError(f"{item!r}: no public_fqdn is configured")
        value = fqdn
    elif lowered in _PLACEHOLDERS_IP:
        if not ip:
            raise ValueError(f"{item!r}: no public_ip is configured")
        value = ip
    if not kind:
        try:
            ipaddress.ip_address(value)
            kind = "IP"
        except ValueError:
            kind = "DNS"
    if kind == "IP":
        try:
            return SanEntry("IP", str(ipaddress.ip_address(value)))
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not an IP address") from None
    if kind != "DNS":
        raise ValueError(f"{item!r}: only DNS= and IP= entries are supported")
    try:
        ipaddress.ip_address(value)
        return SanEntry("DNS", str(ipaddress.ip_address(value)))
    except ValueError:
        pass
    if not _valid_dns(value):
        raise ValueError(f"{item!r}: {value!r} is not a DNS name")
    return SanEntry("DNS", value.lower().rstrip("."))


def parse_san_list(
    items: Iterable[str], fqdn: str = "", ip: str = ""
) -> tuple[list[SanEntry], list[str]]:
    """Parse items (each may itself be comma-separated); returns (entries, problems)."""
    entries: list[SanEntry] = []
    problems: list[str] = []
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            try:
                entry = parse_san_item(part, fqdn, ip)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if entry not in entries:
                entries.append(entry)
    return entries, problems


class _Rows(Protocol):
    def list(self) -> Iterable[Any]: ...


class StoreView(Protocol):
    """What this module uses of :class:`limen.store.Store` (ICPs, overrides, events).

    A protocol rather than an import: the store imports this module (``limen init``
    creates the API certificate), and certificates sit below the store in the layers.
    """

    @property
    def icps(self) -> _Rows: ...

    @property
    def overrides(self) -> _Rows: ...

    @property
    def events(self) -> Any: ...  # alarms for expiring certificates (list, add)


def _store_of(core_or_store: Any) -> StoreView | None:
    if core_or_store is None:
        return None
    store = getattr(core_or_store, "store", core_or_store)
    return store  # type: ignore[no-any-return]


def api_tls_paths(settings: Settings) -> tuple[str, str]:
    """Certificate and key files of the admin API (configured, or under the data dir)."""
    cert = settings.api.tls_cert or str(settings.data_path / "api.crt")
    key = settings.api.tls_key or str(settings.data_path / "api.key")
    return str(settings.resolve(cert)), str(settings.resolve(key))


def api_host(settings: Settings, icps: Iterable[tuple[str, int]] = ()) -> str:
    """Where the admin API listens: ``api.bind`` if set, else the LAN side only
    (``sip.lan_ip``, else the local address the routing table uses toward the first ICP of
    ``icps`` (address, port), else 127.0.0.1). Issue 10: the API is not on the internet
    unless the administrator says so. (Here because the API certificate names that
    address; :mod:`limen.ops.listeners` re-exports it.)"""
    if settings.api.bind:
        return settings.api.bind
    if settings.sip.lan_ip:
        return settings.sip.lan_ip
    for address, port in icps:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((address.strip("[]"), port))  # no packet: a routing lookup
                return str(sock.getsockname()[0])
        except OSError:
            continue
    return "127.0.0.1"


def override_san_items(store: StoreView | None) -> list[str]:
    """The contents of the MBG-style SAN overrides rows, in sort order."""
    if store is None:
        return []
    return [
        row.content
        for row in store.overrides.list()
        if row.parameter.strip() == SAN_PARAMETER
        and (
            row.section.strip() == SAN_SECTIONS[0]
            or row.section.strip().startswith(SAN_SECTIONS[1])
        )
    ]


def san_entries(settings: Settings, core_or_store: Any = None) -> tuple[list[SanEntry], list[str]]:
    """The subjectAltName list of Limen's certificates, and problems met building it."""
    fqdn, ip = settings.public_fqdn.strip(), settings.public_ip.strip()
    base: list[str] = []
    if fqdn:
        base.append(f"DNS={fqdn}")
    if ip:
        # The address is an IP SAN (RFC 6125 §6.2.1 via RFC 5280 iPAddress); a DNS SAN
        # holding it only when asked (certs.ip_as_dns, or MBG's "DNS=Public IP" override)
        # for phones that compare addresses against DNS names.
        base += [f"DNS={ip}", f"IP={ip}"] if settings.certs.ip_as_dns else [f"IP={ip}"]
    items = base + list(settings.certs.extra_names) + override_san_items(_store_of(core_or_store))
    entries, problems = parse_san_list(items, fqdn, ip)
    if not entries:
        problems.append(
            f"no public_fqdn, public_ip or extra name configured: using {FALLBACK_NAME}"
        )
        entries = [SanEntry("DNS", FALLBACK_NAME)]
    return entries, problems


def api_lan_entries(
    settings: Settings, core_or_store: Any, present: list[SanEntry]
) -> list[SanEntry]:
    """The LAN address the admin API listens on by default (issue 10: the API is on the
    LAN side), as an IP SAN of the API certificate, so the PBX and admins reach it there
    with Limen's CA and no extra name."""
    store = _store_of(core_or_store)
    icps: list[tuple[str, int]] = []
    if store is not None:
        try:
            icps = [(icp.address, icp.port) for icp in store.icps.list()]
        except Exception:  # no store yet (first init): the public names only
            icps = []
    host = api_host(settings, icps).strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    if address.is_unspecified or any(e.kind == "IP" and e.value == str(address) for e in present):
        return []
    return [SanEntry("IP", str(address))]


def subject_alt_names(fqdn: str, ip: str, extra: list[str] | None = None) -> list[x509.GeneralName]:
    """DNS=fqdn, IP=ip, then ``extra`` items (kept for existing callers)."""
    items = ([f"DNS={fqdn}"] if fqdn else []) + ([f"IP={ip}"] if ip else [])
    entries, _problems = parse_san_list(items + list(extra or []), fqdn, ip)
    return [e.general_name() for e in entries]


def _entries_of(cert: x509.Certificate) -> list[SanEntry]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    out: list[SanEntry] = []
    for name in ext.value:
        if isinstance(name, x509.DNSName):
            out.append(SanEntry("DNS", name.value))
        elif isinstance(name, x509.IPAddress):
            out.append(SanEntry("IP", str(name.value)))
    return out


# -- files ---------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file in the same folder (created with ``mode``), then
    rename it over ``path``: a reader never sees half a file, a key is never readable by
    others for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pair(cert_path: Path, key_path: Path, cert_pem: bytes, key_pem: bytes) -> None:
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert_pem, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """``AB:CD:...``: the SHA-256 of the DER certificate, as ``openssl x509 -fingerprint``."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# -- the CA ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def ca_paths(settings: Settings) -> tuple[Path, Path]:
    folder = settings.data_path / "tls"
    return folder / "ca.pem", folder / "ca.key"


def load_ca(settings: Settings) -> CertificateAuthority | None:
    """Limen's CA if both of its files exist (ValueError if they are unreadable)."""
    cert_path, key_path = ca_paths(settings)
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: Limen's CA key must be an EC key")
    if cert.public_key() != key.public_key():
        raise ValueError(f"{key_path} does not match {cert_path}")
    return CertificateAuthority(cert, key, cert_path, key_path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(settings: Settings, now: dt.datetime | None = None) -> CertificateAuthority:
    """Generate a new CA (ECDSA P-256) and write it, replacing any previous one."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    label = settings.public_fqdn or settings.public_ip or FALLBACK_NAME
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Limen"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Limen CA {label}"[:64]),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=settings.certs.ca_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = ca_paths(settings)
    write_pair(cert_path, key_path, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
    return CertificateAuthority(cert, key, cert_path, key_path)


def ensure_ca(settings: Settings) -> tuple[CertificateAuthority, bool]:
    """Load Limen's CA, creating it when absent. Returns (ca, created now)."""
    ca = load_ca(settings)
    if ca is not None:
        return ca, False
    return create_ca(settings), True


def issue_certificate(
    ca: CertificateAuthority,
    entries: Sequence[SanEntry],
    days: int,
    now: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A server certificate for ``entries`` signed by ``ca``: (chain PEM, key PEM).

    The chain PEM is the leaf followed by the CA certificate. The lifetime is ``days``
    (or ``not_after``), never beyond the CA's own.
    """
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    first = entries[0].value if entries else FALLBACK_NAME
    end = not_after or now + dt.timedelta(days=days)
    end = min(end, ca.cert.not_valid_after_utc)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName([e.general_name() for e in entries]), critical=False
        )
    )
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM) + ca.pem, _key_pem(key)


# -- the listeners' certificates --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateSlot:
    """Where one listener's certificate lives, and whether the operator provides it."""

    name: str
    title: str
    port: int
    cert_path: Path
    key_path: Path
    operator: bool
    enabled: bool


SLOT_NAMES = ("sip", "provisioning", "api")


def certificate_slots(settings: Settings) -> list[CertificateSlot]:
    """The three listeners' certificate files (same paths the listeners read)."""
    sip = settings.sip
    tls_dir = settings.data_path / "tls"
    if sip.tls_cert or sip.tls_key:
        sip_pair = (settings.resolve(sip.tls_cert), settings.resolve(sip.tls_key))
    else:
        sip_pair = (tls_dir / "sip.pem", tls_dir / "sip.key")
    prov = settings.provisioning
    if prov.tls_cert or prov.tls_key:
        prov_pair = (settings.resolve(prov.tls_cert), settings.resolve(prov.tls_key))
    else:
        prov_pair = (tls_dir / "provisioning.pem", tls_dir / "provisioning.key")
    api_cert, api_key = api_tls_paths(settings)

    def uploaded(cert: Path) -> bool:
        # An operator's certificate installed from the console (limen.web.certupload):
        # a marker beside the file keeps it from being re-issued by Limen's CA.
        return operator_marker(cert).exists()

    return [
        CertificateSlot(
            "sip",
            "SIP/TLS",
            sip.tls_port,
            *sip_pair,
            bool(sip.tls_cert or sip.tls_key) or uploaded(sip_pair[0]),
            sip.tls,
        ),
        CertificateSlot(
            "provisioning",
            "provisioning HTTPS",
            prov.port,
            *prov_pair,
            bool(prov.tls_cert or prov.tls_key) or uploaded(prov_pair[0]),
            prov.enabled,
        ),
        CertificateSlot(
            "api",
            "admin API",
            settings.api.port,
            Path(api_cert),
            Path(api_key),
            bool(settings.api.tls_cert or settings.api.tls_key) or uploaded(Path(api_cert)),
            settings.api.enabled,
        ),
    ]


def operator_marker(cert_path: Path) -> Path:
    """The file that marks ``cert_path`` as an operator's own certificate."""
    return cert_path.with_name(cert_path.name + ".operator")


def slot(settings: Settings, name: str) -> CertificateSlot:
    for item in certificate_slots(settings):
        if item.name == name:
            return item
    raise ValueError(f"unknown certificate {name!r} (known: {', '.join(SLOT_NAMES)}, ca)")


def _reissue_reason(
    item: CertificateSlot,
    ca: CertificateAuthority,
    entries: Sequence[SanEntry],
    warn_days: int,
    now: dt.datetime,
) -> str | None:
    if not (item.cert_path.exists() and item.key_path.exists()):
        return "missing"
    try:
        leaf = load_certificates(item.cert_path)[0]
        key = serialization.load_pem_private_key(item.key_path.read_bytes(), password=None)
    except (ValueError, IndexError, TypeError):
        return "unreadable"
    if leaf.public_key() != key.public_key():
        return "key does not match"
    try:
        leaf.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not issued by Limen's CA"
    if set(_entries_of(leaf)) != set(entries):
        return "names changed"
    if leaf.not_valid_after_utc - now <= dt.timedelta(days=warn_days):
        return f"expires {leaf.not_valid_after_utc:%Y-%m-%d}"
    return None


# How a re-issue reason reads in `limen init` / `limen serve` output: these are routine
# steps, not errors (issue 11: "(missing)" read like a failure).
_REASON_TEXT = {
    "missing": "first issue",
    "not issued by Limen's CA": "now signed by Limen's CA, replacing a self-signed one",
    "names changed": "public names changed",
    "unreadable": "previous file unreadable",
    "key does not match": "previous key did not match",
}


def ensure_certificates(
    settings: Settings,
    core_or_store: Any = None,
    *,
    renew: bool = False,
    only: Iterable[str] | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Make sure Limen's CA and the listeners' certificates exist and are current.

    Call it from ``limen init`` and at ``limen serve`` start, before the listeners load
    their files. ``core_or_store`` (a :class:`limen.core.Core` or a store, optional)
    supplies the SAN overrides rows. Operator PEM files are never touched. ``renew``
    re-issues the generated certificates (``only`` limits which: ``sip``,
    ``provisioning``, ``api``) even when current. Returns lines to print.
    """
    now = now or _now()
    wanted = set(only) if only is not None else None
    if wanted is not None and not wanted <= set(SLOT_NAMES):
        raise ValueError(f"unknown certificate(s) {sorted(wanted - set(SLOT_NAMES))}")
    lines: list[str] = []
    ca, created = ensure_ca(settings)
    if created:
        lines.append(f"created Limen's CA {ca.cert_path} (export it with `limen cert ca`)")
    entries, problems = san_entries(settings, core_or_store)
    lines += [f"warning: certificate name {p}" for p in problems]
    public_entries = entries
    for item in certificate_slots(settings):
        entries = public_entries
        if item.name == "api":
            entries = public_entries + api_lan_entries(settings, core_or_store, public_entries)
        names = ", ".join(str(e) for e in entries)
        if wanted is not None and item.name not in wanted:
            continue
        if item.operator:
            missing = [str(p) for p in (item.cert_path, item.key_path) if not p.exists()]
            if missing:
                lines.append(
                    f"error: configured {item.title} file(s) missing: {', '.join(missing)}"
                )
            else:
                lines.append(f"{item.title} certificate {item.cert_path} (operator file)")
            continue
        if not item.enabled and not (wanted and item.name in wanted):
            continue
        reason = "renewal requested" if renew else None
        reason = reason or _reissue_reason(item, ca, entries, settings.certs.warn_days, now)
        if reason is None:
            lines.append(f"{item.title} certificate {item.cert_path} is current")
            continue
        chain, key = issue_certificate(ca, entries, settings.certs.days, now)
        write_pair(item.cert_path, item.key_path, chain, key)
        why = _REASON_TEXT.get(reason, reason)
        log.info("issued %s certificate %s for %s (%s)", item.title, item.cert_path, names, why)
        lines.append(f"issued {item.title} certificate {item.cert_path} for {names} ({why})")
    return lines


def renew_certificates(
    settings: Settings,
    core_or_store: Any = None,
    *,
    only: Iterable[str] | None = None,
    ca: bool = False,
) -> list[str]:
    """Re-issue the generated certificates now; with ``ca``, make a new CA first (phones
    must then be given the new CA certificate). Returns lines to print."""
    lines: list[str] = []
    if ca:
        new = create_ca(settings)
        lines.append(
            f"created a new Limen CA {new.cert_path}: give phones the new CA certificate "
            "(`limen cert ca`)"
        )
    return lines + ensure_certificates(settings, core_or_store, renew=True, only=only)


# -- inspection and expiry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What ``limen cert show`` prints about one certificate."""

    name: str
    path: str
    subject: str
    issuer: str
    sans: list[str]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    serial: str
    operator: bool
    issued_by_limen_ca: bool
    days_left: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint_sha256": self.fingerprint_sha256,
            "serial": self.serial,
            "operator": self.operator,
            "issued_by_limen_ca": self.issued_by_limen_ca,
            "days_left": self.days_left,
        }


def describe_certificate(
    path: Path,
    name: str = "",
    *,
    operator: bool = False,
    ca: CertificateAuthority | None = None,
    now: dt.datetime | None = None,
) -> CertificateInfo:
    """Read the first certificate of a PEM file (ValueError if it holds none)."""
    now = now or _now()
    certs = load_certificates(path)
    if not certs:
        raise ValueError(f"{path}: no certificate")
    cert = certs[0]
    issued = False
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca.cert)
            issued = True
        except (ValueError, TypeError, InvalidSignature):
            issued = False
    return CertificateInfo(
        name=name or path.name,
        path=str(path),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=[str(e) for e in _entries_of(cert)],
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=fingerprint_sha256(cert),
        serial=format(cert.serial_number, "x"),
        operator=operator,
        issued_by_limen_ca=issued,
        days_left=(cert.not_valid_after_utc - now).days,
    )


def certificate_report(
    settings: Settings, now: dt.datetime | None = None
) -> tuple[list[CertificateInfo], list[str]]:
    """Every certificate Limen has (the CA first): (infos, problems such as missing files)."""
    infos: list[CertificateInfo] = []
    problems: list[str] = []
    try:
        ca = load_ca(settings)
    except ValueError as exc:
        ca = None
        problems.append(f"ca: {exc}")
    if ca is not None:
        infos.append(describe_certificate(ca.cert_path, "ca", ca=ca, now=now))
    for item in certificate_slots(settings):
        if not item.cert_path.exists():
            if item.enabled:
                problems.append(f"{item.name}: {item.cert_path} does not exist")
            continue
        try:
            infos.append(
                describe_certificate(
                    item.cert_path, item.name, operator=item.operator, ca=ca, now=now
                )
            )
        except ValueError as exc:
            problems.append(f"{item.name}: {exc}")
    return infos, problems


def check_certificate_expiry(
    settings: Settings, core_or_store: Any = None, *, now: dt.datetime | None = None
) -> list[CertificateInfo]:
    """Warn about certificates expiring within ``certs.warn_days`` (default 30).

    Logs a warning and adds an alarm event (source ``certs``; severity ``major`` once
    expired) per certificate, unless the same alarm is already active. Call it at start
    and daily (:func:`watch_certificates` does). Returns the certificates concerned.
    """
    now = now or _now()
    infos, _problems = certificate_report(settings, now)
    limit = dt.timedelta(days=settings.certs.warn_days)
    expiring = [i for i in infos if i.not_after - now <= limit]
    store = _store_of(core_or_store)
    active: set[str] = set()
    if store is not None and expiring:
        active = {e.message for e in store.events.list(kind="alarm", cleared=False, limit=1000)}
    for info in expiring:
        expired = info.not_after <= now
        state = "has expired" if expired else "expires"
        message = (
            f"certificate {info.name} ({info.path}) {state} on {info.not_after:%Y-%m-%d %H:%M} "
            f"UTC; subject {info.subject}"
            + ("" if info.operator or info.name == "ca" else "; renew with `limen cert renew`")
        )
        log.warning("%s", message)
        if store is not None and message not in active:
            store.events.add(
                message,
                kind="alarm",
                severity="major" if expired else "warning",
                source="certs",
            )
    return expiring


async def watch_certificates(core: Any, interval: float = 86400.0) -> None:
    """Run :func:`check_certificate_expiry` now and every ``interval`` seconds until
    cancelled (``asyncio.create_task(watch_certificates(core))``)."""
    while True:
        try:
            await asyncio.to_thread(check_certificate_expiry, core.settings, core)
        except Exception:
            log.exception("certificate expiry check failed")
        await asyncio.sleep(interval)


# -- stand-alone self-signed pairs (kept for existing callers) -----------------------------------


def generate_self_signed(
    fqdn: str, ip: str, days: int = 825, extra: list[str] | None = None
) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) for a self-signed ECDSA P-256 certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = fqdn or ip or "limen"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
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
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    sans = subject_alt_names(fqdn, ip, extra)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ensure_self_signed(cert_path: Path, key_path: Path, fqdn: str, ip: str) -> bool:
    """Create a self-signed pair if either file is missing. Returns True when it made one.

    :func:`ensure_certificates` replaces such a pair by one issued by Limen's CA.
    """
    if cert_path.exists() and key_path.exists():
        return False
    cert_pem, key_pem = generate_self_signed(fqdn, ip)
    write_pair(cert_path, key_path, cert_pem, key_pem)
    return True
