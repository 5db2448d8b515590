"""`limen doctor`: each check against a lab built to make it fail, then a healthy one.

The lab is real sockets on loopback: fake ICPs (a SIP UDP responder whose Date header is
two minutes fast, an HTTPS config server that does not know the hash, an address where
nothing listens), a port held by another program, certificates issued for an old address
and long expired, an RTP range too small, more devices than the RAM can carry. The
unresolvable-FQDN case runs in a network namespace with only `lo`, so the DNS query it
makes cannot leave the machine.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import Result

from limen import certs
from limen.config import load_settings

Limen = Callable[..., Result]

HASH = "9a48085c1b816fd1b512e8b186686a6"
GOOD_HASH = "16a78df75f29020a19fb5fd14bfac940"


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SipResponder(threading.Thread):
    """Answers every UDP SIP request with 200 and a Date header ``skew`` seconds off."""

    def __init__(self, host: str, skew: float) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = int(self.sock.getsockname()[1])
        self.skew = skew

    def run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            head = data.decode().split("\r\n\r\n")[0].split("\r\n")
            keep = [
                h for h in head[1:] if h.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")
            ]
            date = email.utils.formatdate(time.time() + self.skew, usegmt=True)
            reply = ["SIP/2.0 200 OK", *keep, f"Date: {date}", "Content-Length: 0", "", ""]
            self.sock.sendto("\r\n".join(reply).encode(), peer)

    def close(self) -> None:
        self.sock.close()


def https_server(host: str, known: set[str], cert: Path, key: Path) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/" or self.path.strip("/") in known else 404
            self.send_response(status)  # adds Date (correct clock)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def lab(config: Path, limen: Limen, tmp_path: Path) -> Iterator[dict[str, object]]:
    ports = {
        "udp": free_port(socket.SOCK_DGRAM),
        "tcp": free_port(),
        "tls": free_port(),
        "prov": free_port(),
        "api": free_port(),
    }
    config.write_text(
        'data_dir = "data"\npublic_fqdn = "localhost"\npublic_ip = "203.0.113.10"\n'
        f'[sip]\nbind = "127.0.0.1"\nudp_port = {ports["udp"]}\ntcp_port = {ports["tcp"]}\n'
        f"tls_port = {ports['tls']}\n"
        f'[provisioning]\nbind = "127.0.0.1"\nport = {ports["prov"]}\n'
        f'[api]\nbind = "127.0.0.1"\nport = {ports["api"]}\n'
    )
    settings = load_settings(config)
    # Certificates issued 900 days ago for another address: expired, and wrong names.
    old = settings.model_copy(update={"public_ip": "198.51.100.99"})
    certs.ensure_certificates(old, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=900))
    # The ICPs' config server certificate (any issuer: the probe checks reachability).
    ca = certs.load_ca(settings)
    assert ca is not None
    chain, key = certs.issue_certificate(ca, [certs.SanEntry("IP", "127.0.0.3")], 30)
    pbx_cert, pbx_key = tmp_path / "pbx.pem", tmp_path / "pbx.key"
    certs.write_pair(pbx_cert, pbx_key, chain, key)
    skewed = SipResponder("127.0.0.1", skew=120)
    skewed.start()
    good_sip = SipResponder("127.0.0.3", skew=0)
    good_sip.start()
    config_server = https_server("127.0.0.1", set(), pbx_cert, pbx_key)  # knows no hash
    good_server = https_server("127.0.0.3", {GOOD_HASH}, pbx_cert, pbx_key)
    dead_sip, dead_http = free_port(socket.SOCK_DGRAM, "127.0.0.2"), free_port(host="127.0.0.2")
    for name, address, sip_port, http_port, hash_ in (
        ("skewed", "127.0.0.1", skewed.port, config_server.server_address[1], HASH),
        ("dead", "127.0.0.2", dead_sip, dead_http, "deadbeef00"),
        ("good", "127.0.0.3", good_sip.port, good_server.server_address[1], GOOD_HASH),
    ):
        limen(
            "icp", "add", name, "--address", address, "--port", str(sip_port),
            "--transport", "udp", "--xml-destination-port", str(http_port), "--hash", hash_,
        )  # fmt: skip
    # Another program holds the provisioning port.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", ports["prov"]))
    squatter.listen(4)
    limen("options", "set", "srtp_port_max", "40007")
    limen("options", "set", "srtp_port_min", "40000")  # 8 ports: 2 calls
    limen("options", "set", "sip_udp", "on")
    limen("options", "set", "options_hb", "Never")
    yield {"ports": ports, "config": config}
    squatter.close()
    skewed.close()
    good_sip.close()
    config_server.shutdown()
    good_server.shutdown()


def by_check(findings: list[dict[str, str]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for f in findings:
        out.setdefault((f["check"], f["subject"]), set()).add(f["status"])
    return out


def test_each_check_fails_on_its_broken_lab(limen: Limen, lab: dict[str, object]) -> None:
    started = time.monotonic()
    r = limen(
        "doctor", "--json", "--timeout", "1", "--calls", "5", "--devices", "100000000", code=1
    )
    elapsed = time.monotonic() - started
    report = json.loads(r.stdout)
    assert report["ok"] is False and report["failures"] > 0
    found = by_check(report["findings"])
    text = {(f["check"], f["subject"]): f["message"] for f in report["findings"]}
    fixes = {(f["check"], f["subject"]): f["fix"] for f in report["findings"]}
    # The ICP two minutes fast: its SIP Date header shows it.
    assert found[("clock", "skewed")] == {"fail"}
    assert "120" in text[("clock", "skewed")] or "119" in text[("clock", "skewed")]
    assert "ahead" in text[("clock", "skewed")] and "NTP" in fixes[("clock", "skewed")]
    assert found[("clock", "good")] == {"ok"}
    # The dead ICP: no SIP answer, no provisioning link.
    assert found[("icp-sip", "dead")] == {"fail"} and found[("icp-link", "dead")] == {"fail"}
    assert found[("icp-sip", "skewed")] == {"ok"}
    # A config server that does not know the hash.
    assert found[("icp-hash", "skewed")] == {"fail"} and "404" in text[("icp-hash", "skewed")]
    assert found[("icp-hash", "good")] == {"ok"}
    # localhost resolves, but not to public_ip (phones are given the IP: a warning).
    assert found[("fqdn", "localhost")] == {"warn"}
    assert "not to public_ip 203.0.113.10" in text[("fqdn", "localhost")]
    # Certificates for the old address, expired.
    sip_cert = [
        f for f in report["findings"] if f["check"] == "certificates" and f["subject"] == "SIP/TLS"
    ]
    assert {f["status"] for f in sip_cert} == {"fail"}
    messages = " ".join(f["message"] for f in sip_cert)
    assert "IP=203.0.113.10" in messages and "expired" in messages
    assert "limen cert renew sip" in {f["fix"] for f in sip_cert}
    # The provisioning port is held by another program; the others are free.
    prov = [s for (c, s) in found if c == "listeners" and s.startswith("provisioning")]
    assert found[("listeners", prov[0])] == {"fail"}
    assert "not answered by Limen" in text[("listeners", prov[0])]
    assert {found[k].pop() for k in found if k[0] == "listeners" and k[1] != prov[0]} == {"info"}
    # 8 ports carry 2 calls, 5 wanted.
    assert "fail" in found[("rtp-range", "srtp ports")]
    # 100 million devices need more RAM than any test machine has.
    assert found[("resources", "RAM")] == {"fail"}
    # UDP allowed without keepalives behind NAT.
    assert found[("nat", "options_hb")] == {"warn"}
    # Bounded: the dead ICP's probes time out after --timeout each.
    assert elapsed < 15, elapsed
    # The same findings for humans, each failure with its fix, exit status 1.
    human = limen("doctor", "--timeout", "1", "--only", "clock", "--only", "icp-hash", code=1)
    assert "FAIL clock        skewed" in human.stdout and "fix: synchronise" in human.stdout


def test_healthy_parts_pass(limen: Limen, lab: dict[str, object], config: Path) -> None:
    limen("icp", "remove", "skewed")
    limen("icp", "remove", "dead")
    limen("cert", "renew")  # current, for public_ip and public_fqdn
    limen("options", "set", "srtp_port_max", "40399")
    r = limen(
        "doctor", "--json", "--timeout", "1", "--calls", "5",
        "--only", "clock", "--only", "icp-sip", "--only", "icp-link", "--only", "icp-hash",
        "--only", "certificates", "--only", "rtp-range",
    )  # fmt: skip
    report = json.loads(r.stdout)
    assert report["ok"] is True, report
    statuses = {f["status"] for f in report["findings"] if f["check"] != "rtp-range"}
    assert statuses == {"ok"}, report


def test_listener_transport_disabled_in_file_but_enabled_for_phones(
    limen: Limen, config: Path
) -> None:
    config.write_text('data_dir = "data"\npublic_ip = "10.1.2.3"\n[sip]\nudp = false\n')
    limen("options", "set", "sip_udp", "on")
    report = json.loads(limen("doctor", "--json", "--only", "nat", code=1).stdout)
    found = by_check(report["findings"])
    assert found[("nat", "sip_udp")] == {"fail"}
    assert found[("nat", "public_ip")] == {"warn"}  # a private address behind NAT


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and ip")
def test_unresolvable_fqdn_given_to_phones_fails(config: Path, limen: Limen) -> None:
    config.write_text(
        'data_dir = "data"\npublic_fqdn = "sbc.example.invalid"\npublic_ip = "203.0.113.10"\n'
        "fqdn_for_phones = true\n"
    )
    limen("options", "show")  # creates the store
    ns = f"ldoc-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        started = time.monotonic()
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "limen.cli", "doctor",
             "--json", "--only", "fqdn", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert time.monotonic() - started < 30
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert proc.returncode == 1, proc.stderr
    finding = json.loads(proc.stdout)["findings"][0]
    assert (finding["check"], finding["status"]) == ("fqdn", "fail")
    assert "does not resolve" in finding["message"] and "fqdn_for_phones" in finding["fix"]
