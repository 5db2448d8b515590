"""Limen's CA and the listeners' certificates: names, chain, paths, renewal, expiry."""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from prov_support import Limen, make_settings

from limen import certs
from limen.config import Settings
from limen.store import Store, open_store
from limen.store.schemas import OverrideCreate

EXPECTED_SANS = [
    "DNS=limen.example.com",
    "IP=203.0.113.5",
    "DNS=sbc.example.net",
    "IP=198.51.100.7",
    # MBG's own override row asks for the address as a DNS name too (figure 13).
    "DNS=203.0.113.5",
    "DNS=alt.example.org",
    "DNS=xml.example.org",
]


@pytest.fixture
def named(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "named",
        public_fqdn="limen.example.com",
        public_ip="203.0.113.5",
        certs={"extra_names": ["DNS=sbc.example.net", "198.51.100.7"]},
    )


@pytest.fixture
def named_store(named: Settings) -> Store:
    store = open_store(named)
    rows = [
        # MBG's own row, with its placeholders, as the seed shows it (figure 13).
        ("proxy::sip_tls", certs.SAN_PARAMETER, "DNS=FQDN,DNS=Public IP address,IP=Public IP"),
        ("proxy::sip_tls", certs.SAN_PARAMETER, "DNS=alt.example.org"),
        ("proxy::aastra_xml_a5000", certs.SAN_PARAMETER, "DNS=xml.example.org"),
        ("proxy::aastra_xml_a5000", "secure_in::ssl::use_cert", "0"),
        ("proxy::other", certs.SAN_PARAMETER, "DNS=ignored.example.org"),
    ]
    for index, (section, parameter, content) in enumerate(rows):
        store.overrides.add(
            OverrideCreate(
                file="tug.ini",
                sort_order=50 + index,
                section=section,
                parameter=parameter,
                content=content,
            )
        )
    return store


def leaf_of(path: Path) -> x509.Certificate:
    return certs.load_certificates(path)[0]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A real TLS handshake in memory (no sockets): raises if the client rejects it."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side, out, peer_in in ((client_side, c_out, s_in), (server_side, s_out, c_in)):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_ensure_certificates_makes_the_ca_and_three_leaves(
    named: Settings, named_store: Store
) -> None:
    lines = certs.ensure_certificates(named, named_store)
    assert any("created Limen's CA" in line for line in lines)
    assert sum("issued" in line for line in lines) == 3
    ca = certs.load_ca(named)
    assert ca is not None
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    for item in certs.certificate_slots(named):
        chain = certs.load_certificates(item.cert_path)
        assert len(chain) == 2 and chain[1] == ca.cert
        leaf = chain[0]
        leaf.verify_directly_issued_by(ca.cert)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        # The admin API's also names the LAN address it listens on by default (issue 10;
        # 127.0.0.1 here: no LAN address and no ICP in this store).
        expected = EXPECTED_SANS + (["IP=127.0.0.1"] if item.name == "api" else [])
        assert [
            f"DNS={n.value}" if isinstance(n, x509.DNSName) else f"IP={n.value}" for n in names
        ] == expected
        assert stat.S_IMODE(item.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600


def test_files_are_where_the_listeners_read_them(named: Settings) -> None:
    from limen.store import api_tls_paths
    from limen.transport.tls import sip_tls_paths

    slots = {s.name: s for s in certs.certificate_slots(named)}
    assert (slots["sip"].cert_path, slots["sip"].key_path) == sip_tls_paths(named)
    assert (str(slots["api"].cert_path), str(slots["api"].key_path)) == api_tls_paths(named)
    assert slots["sip"].cert_path == named.data_path / "tls" / "sip.pem"
    assert slots["api"].cert_path == named.data_path / "api.crt"
    assert slots["provisioning"].cert_path == named.data_path / "tls" / "provisioning.pem"


def test_openssl_accepts_the_chain_for_the_fqdn_and_the_ip(
    named: Settings, named_store: Store
) -> None:
    certs.ensure_certificates(named, named_store)
    sip = certs.slot(named, "sip")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(sip.cert_path, sip.key_path)
    client = ssl.create_default_context(cafile=str(named.data_path / "tls" / "ca.pem"))
    for hostname in ("limen.example.com", "203.0.113.5", "sbc.example.net", "198.51.100.7"):
        handshake(server, client, hostname)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client, "not-listed.example.com")


def test_second_run_keeps_the_certificates(named: Settings, named_store: Store) -> None:
    certs.ensure_certificates(named, named_store)
    before = {s.name: s.cert_path.read_bytes() for s in certs.certificate_slots(named)}
    lines = certs.ensure_certificates(named, named_store)
    assert sum("is current" in line for line in lines) == 3
    assert {s.name: s.cert_path.read_bytes() for s in certs.certificate_slots(named)} == before


def test_legacy_self_signed_pair_is_replaced(named: Settings) -> None:
    sip = certs.slot(named, "sip")
    assert certs.ensure_self_signed(sip.cert_path, sip.key_path, "limen.example.com", "")
    lines = certs.ensure_certificates(named, None, only=["sip"])
    assert any("now signed by Limen's CA" in line for line in lines)
    ca = certs.load_ca(named)
    assert ca is not None
    leaf_of(sip.cert_path).verify_directly_issued_by(ca.cert)


def test_existing_callers_see_the_ca_issued_files(named: Settings) -> None:
    from limen.transport.tls import ensure_sip_certificate

    certs.ensure_certificates(named)
    cert, _key, generated = ensure_sip_certificate(named)
    assert generated is False
    assert leaf_of(cert).issuer != leaf_of(cert).subject


def test_name_change_reissues(named: Settings, named_store: Store) -> None:
    certs.ensure_certificates(named, named_store)
    moved = named.model_copy(update={"public_ip": "203.0.113.99"})
    lines = certs.ensure_certificates(moved, named_store, only=["provisioning"])
    assert any("public names changed" in line for line in lines)
    info = certs.describe_certificate(certs.slot(moved, "provisioning").cert_path)
    # The override row asks for DNS=Public IP address: both entries follow the address.
    assert "IP=203.0.113.99" in info.sans and "DNS=203.0.113.99" in info.sans


def test_operator_files_take_precedence(named: Settings, tmp_path: Path) -> None:
    own_cert, own_key = tmp_path / "own.pem", tmp_path / "own.key"
    certs.ensure_self_signed(own_cert, own_key, "operator.example", "")
    before = own_cert.read_bytes()
    api = named.api.model_copy(update={"tls_cert": str(own_cert), "tls_key": str(own_key)})
    custom = named.model_copy(update={"api": api})
    lines = certs.ensure_certificates(custom, renew=True)
    assert any("admin API certificate" in line and "operator file" in line for line in lines)
    assert own_cert.read_bytes() == before
    infos, _problems = certs.certificate_report(custom)
    [api_info] = [i for i in infos if i.name == "api"]
    assert api_info.operator and not api_info.issued_by_limen_ca


def test_renew_changes_leaves_and_ca_only_when_asked(named: Settings) -> None:
    certs.ensure_certificates(named)
    ca_before = certs.ca_paths(named)[0].read_bytes()
    sip = certs.slot(named, "sip")
    first = certs.fingerprint_sha256(leaf_of(sip.cert_path))
    certs.renew_certificates(named, only=["sip"])
    second = certs.fingerprint_sha256(leaf_of(sip.cert_path))
    assert second != first
    assert certs.ca_paths(named)[0].read_bytes() == ca_before
    certs.renew_certificates(named, ca=True)
    ca = certs.load_ca(named)
    assert ca is not None and ca.pem != ca_before
    for item in certs.certificate_slots(named):
        leaf_of(item.cert_path).verify_directly_issued_by(ca.cert)


def test_san_parsing_reports_bad_items() -> None:
    entries, problems = certs.parse_san_list(
        ["DNS=ok.example, IP=not-an-ip, URI=x, DNS=bad name, FQDN"], fqdn="", ip=""
    )
    assert [str(e) for e in entries] == ["DNS=ok.example"]
    assert len(problems) == 4


def test_no_public_name_falls_back(tmp_path: Path) -> None:
    bare = make_settings(tmp_path / "bare", public_fqdn="", public_ip="")
    entries, problems = certs.san_entries(bare)
    assert [str(e) for e in entries] == ["DNS=limen.local"] and problems


# -- expiry ------------------------------------------------------------------------------


def test_expiry_warning_logs_and_raises_one_event(
    named: Settings, named_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    certs.ensure_certificates(named, named_store)
    ca = certs.load_ca(named)
    assert ca is not None
    now = dt.datetime.now(dt.UTC)
    entries, _ = certs.san_entries(named, named_store)
    chain, key = certs.issue_certificate(ca, entries, 1, not_after=now + dt.timedelta(days=10))
    prov = certs.slot(named, "provisioning")
    certs.write_pair(prov.cert_path, prov.key_path, chain, key)
    caplog.set_level(logging.WARNING, logger="limen.certs")
    expiring = certs.check_certificate_expiry(named, named_store)
    assert [i.name for i in expiring] == ["provisioning"]
    assert expiring[0].days_left in (9, 10)
    assert any("certificate provisioning" in r.getMessage() for r in caplog.records)
    [event] = named_store.events.list(kind="alarm")
    assert event.source == "certs" and event.severity == "warning"
    assert "renew with `limen cert renew`" in event.message
    certs.check_certificate_expiry(named, named_store)
    assert named_store.events.count(kind="alarm") == 1
    # ensure_certificates renews a generated certificate that is about to expire.
    lines = certs.ensure_certificates(named, named_store, only=["provisioning"])
    assert any("(expires" in line for line in lines)
    assert certs.check_certificate_expiry(named, named_store) == []


def test_expired_certificate_is_a_major_alarm(named: Settings, named_store: Store) -> None:
    certs.ensure_certificates(named, named_store)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=900)
    expiring = certs.check_certificate_expiry(named, named_store, now=later)
    assert {i.name for i in expiring} == {"sip", "provisioning", "api"}
    assert {e.severity for e in named_store.events.list(kind="alarm")} == {"major"}


async def test_watch_certificates_runs_the_check(named: Settings, named_store: Store) -> None:
    import asyncio

    from limen.core import Core

    certs.ensure_certificates(named, named_store)
    ca = certs.load_ca(named)
    assert ca is not None
    entries, _ = certs.san_entries(named)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    chain, key = certs.issue_certificate(ca, entries, 1, not_after=soon)
    sip = certs.slot(named, "sip")
    certs.write_pair(sip.cert_path, sip.key_path, chain, key)
    task = asyncio.create_task(certs.watch_certificates(Core(named, named_store), interval=3600))
    for _ in range(100):
        if named_store.events.count(kind="alarm"):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    assert named_store.events.count(kind="alarm") == 1


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_cert_show_renew_ca_check(limen: Limen, cli_settings: Settings, tmp_path: Path) -> None:
    empty = json.loads(limen("cert", "show", "--json").stdout)
    assert empty["certificates"] == [] and len(empty["problems"]) == 3
    renewed = json.loads(limen("cert", "renew", "--json").stdout)
    assert sum("issued" in line for line in renewed["lines"]) == 3
    shown = json.loads(limen("cert", "show", "--json").stdout)
    by_name = {c["name"]: c for c in shown["certificates"]}
    assert list(by_name) == ["ca", "sip", "provisioning", "api"]
    sip = by_name["sip"]
    # The address is an IP entry only: a DNS entry for it only when asked (ip_as_dns).
    assert sip["sans"] == ["DNS=limen.test", "IP=203.0.113.5"]
    assert sip["issuer"] == by_name["ca"]["subject"] and sip["issued_by_limen_ca"]
    assert sip["subject"] == "CN=limen.test"
    assert len(sip["fingerprint_sha256"]) == 95 and sip["days_left"] >= 800
    assert dt.datetime.fromisoformat(sip["not_after"]) > dt.datetime.now(dt.UTC)
    only = json.loads(limen("cert", "show", "api", "--json").stdout)
    assert [c["name"] for c in only["certificates"]] == ["api"]
    text = limen("cert", "show", "sip").stdout
    assert "SHA-256" in text and "limen.test" in text

    again = json.loads(limen("cert", "renew", "sip", "--json").stdout)
    issued = [line for line in again["lines"] if "issued" in line]
    assert len(issued) == 1 and issued[0].startswith("issued SIP/TLS")
    after = {
        c["name"]: c for c in json.loads(limen("cert", "show", "--json").stdout)["certificates"]
    }
    assert after["sip"]["fingerprint_sha256"] != sip["fingerprint_sha256"]
    assert after["api"]["fingerprint_sha256"] == by_name["api"]["fingerprint_sha256"]

    pem = limen("cert", "ca").stdout
    assert pem == certs.ca_paths(cli_settings)[0].read_text()
    out = tmp_path / "limen-ca.pem"
    exported = json.loads(limen("cert", "ca", "-o", str(out), "--json").stdout)
    assert out.read_text() == pem and exported["created"] is False
    assert exported["fingerprint_sha256"] == by_name["ca"]["fingerprint_sha256"]

    assert json.loads(limen("cert", "check", "--json").stdout)["expiring"] == []
    assert (
        "unknown certificate"
        in json.loads(limen("cert", "renew", "ca", "--json", code=1).stdout)["error"]
    )
