"""Issue 11: `limen init` writes defaults that work, `limen serve` fails in one clear line,
`limen firewall` rules do what they say (loaded into a network namespace)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from limen.cli import app
from limen.config import load_settings
from limen.store import open_store
from limen.store.realm import recorded_realm, resolve_realm

LIMEN = [sys.executable, "-m", "limen.cli"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIMEN_CONFIG"}
    env["COLUMNS"] = "60"  # a narrow terminal: nothing may be wrapped that must be copied
    return subprocess.run(
        [*LIMEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


def test_init_defaults(tmp_path: Path) -> None:
    r = run_cli("init", "--ip", "203.0.113.10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "limen.toml").read_text()
    assert 'public_fqdn = ""' in text and "limen.local" not in text
    assert 'public_ip = "203.0.113.10"' in text and 'realm = "limen"' in text
    # No listener switch in the file: phones' transports are the global options.
    assert "udp = true" not in text and "sip_udp" in text
    assert 'digest_algorithms = ["MD5"]' in text  # what every phone in the lab answers
    out = r.stdout
    assert "(missing)" not in out and "not issued by" not in out and "error" not in out.lower()
    password_lines = [line for line in out.splitlines() if "with password" in line]
    assert len(password_lines) == 1 and "(shown once" in password_lines[0]
    # The public IP is an IP entry only; no DNS entry for it unless asked.
    assert "for IP=203.0.113.10 (first issue)" in out and "DNS=203.0.113.10" not in out
    issued = [line for line in out.splitlines() if line.startswith("issued ")]
    assert len(issued) == 3 and all(line.endswith("(first issue)") for line in issued), out
    assert "self-signed" not in out
    settings = load_settings(tmp_path / "limen.toml")
    assert settings.set_side_host == "203.0.113.10"


def test_init_with_a_name_phones_resolve(tmp_path: Path) -> None:
    r = run_cli(
        "init", "--ip", "203.0.113.10", "--fqdn", "sbc.example.net", "--fqdn-for-phones",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    settings = load_settings(tmp_path / "limen.toml")
    assert (settings.set_side_host, settings.sip.realm) == ("sbc.example.net", "sbc.example.net")
    assert "DNS=sbc.example.net, IP=203.0.113.10" in r.stdout


def test_realm_stays_when_the_fqdn_changes(tmp_path: Path) -> None:
    """A store from before issue 11 (no realm in the file) keeps the realm it used."""
    config = tmp_path / "limen.toml"
    config.write_text('data_dir = "data"\npublic_fqdn = "old.example.net"\n')
    settings = load_settings(config)
    store = open_store(settings)
    try:
        assert resolve_realm(store, settings) == "old.example.net"
        moved = settings.model_copy(update={"public_fqdn": "new.example.net"})
        assert resolve_realm(store, moved) == "old.example.net"
        assert recorded_realm(store) == "old.example.net"
    finally:
        store.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    r = run_cli("init", "--ip", "127.0.0.1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Ephemeral-ish ports so parallel runs do not collide; the API off (not needed here).
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    text = (tmp_path / "limen.toml").read_text()
    text = text.replace('bind = "0.0.0.0"', 'bind = "127.0.0.1"')
    text = text.replace("udp_port = 5060", f"udp_port = {ports[0]}")
    text = text.replace("tcp_port = 5060", f"tcp_port = {ports[0]}")
    text = text.replace("tls_port = 5061", f"tls_port = {ports[1]}")
    text = text.replace("[api]\nport = 8443", "[api]\nenabled = false")
    text = text.replace("[provisioning]\nport = 4445", f"[provisioning]\nport = {ports[2]}")
    (tmp_path / "limen.toml").write_text(text)
    return tmp_path


def serve(site: Path) -> Result:
    """`limen serve` in-process (the failures happen before anything would run)."""
    return CliRunner().invoke(app, ["serve", "--config", str(site / "limen.toml")])


def one_line_error(r: Result) -> str:
    # Exit status 1 through typer.Exit, not an exception escaping (a traceback).
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.stdout, r.exception)
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_serve_errors_are_one_line(site: Path) -> None:
    key = site / "data" / "secret.key"
    saved = key.read_bytes()
    key.unlink()
    assert "secret key file" in one_line_error(serve(site))
    key.write_bytes(b"not a key\n")
    assert "is not a Limen key" in one_line_error(serve(site))
    key.write_bytes(saved)
    config = site / "limen.toml"
    good = config.read_text()
    config.write_text(good + "\n[sip\n")
    assert "not valid TOML" in one_line_error(serve(site))
    config.write_text("no_such_key = 1\n" + good)
    assert "invalid configuration" in one_line_error(serve(site))
    config.chmod(0o000)
    if os.geteuid() != 0:  # root reads anything
        assert "permission denied" in one_line_error(serve(site))
    config.chmod(0o644)
    config.write_text(
        good.replace(
            '# tls_cert = "/etc/limen/sip.pem"', 'tls_cert = "nope.pem"\ntls_key = "nope.key"'
        )
    )
    assert "nope.pem" in one_line_error(serve(site))
    config.write_text(good)
    settings = load_settings(config)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", settings.sip.tls_port))
        squatter.listen(1)
        line = one_line_error(serve(site))
    assert line.startswith("error: port in use: SIP/TLS TCP 127.0.0.1:") and "sip.tls_port" in line


# -- firewall ----------------------------------------------------------------------------------


def ns_exec(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check, timeout=30
    )


@pytest.fixture
def two_namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, ip and nft")
    tag = uuid.uuid4().hex[:6]
    limen_ns, peer_ns = f"lfw-l-{tag}", f"lfw-p-{tag}"
    for ns in (limen_ns, peer_ns):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    subprocess.run(
        ["ip", "link", "add", f"fwl{tag}", "netns", limen_ns, "type", "veth", "peer",
         "name", f"fwp{tag}", "netns", peer_ns],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ip", "-n", limen_ns, "addr", "add", "10.77.0.1/24", "dev", f"fwl{tag}"], check=True
    )
    subprocess.run(
        ["ip", "-n", peer_ns, "addr", "add", "10.77.0.2/24", "dev", f"fwp{tag}"], check=True
    )
    subprocess.run(
        ["ip", "-n", peer_ns, "addr", "add", "10.77.0.3/24", "dev", f"fwp{tag}"], check=True
    )
    for ns, dev in ((limen_ns, f"fwl{tag}"), (peer_ns, f"fwp{tag}")):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    try:
        yield limen_ns, peer_ns
    finally:
        for ns in (limen_ns, peer_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)


LISTEN = textwrap.dedent(
    """
    import socket, sys, time
    socks = []
    for port in map(int, sys.argv[1:]):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(16); socks.append(s)
    print("ready", flush=True)
    time.sleep(30)
    """
)

CONNECT = textwrap.dedent(
    """
    import socket, sys
    source, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket(); s.settimeout(1.0); s.bind((source, 0))
    try:
        s.connect(("10.77.0.1", port)); print("open")
    except OSError:
        print("closed")
    """
)


def test_firewall_rules_open_what_they_say(two_namespaces: tuple[str, str], tmp_path: Path) -> None:
    limen_ns, peer_ns = two_namespaces
    config = tmp_path / "limen.toml"
    config.write_text('data_dir = "data"\npublic_ip = "10.77.0.1"\n')
    runner = CliRunner()
    r = runner.invoke(app, ["icp", "add", "pbx", "--address", "10.77.0.2", "--config", str(config)])
    assert r.exit_code == 0, r.stdout
    rules = tmp_path / "limen.nft"
    r = runner.invoke(app, ["firewall", "-o", str(rules), "--no-ssh", "--config", str(config)])
    assert r.exit_code == 0, r.stdout
    text = rules.read_text()
    assert "tcp dport 5061 accept" in text and "udp dport 20000-31000 accept" in text
    # sip_udp is off: SIP/UDP only from the ICPs, not from phones.
    assert "    udp dport 5060 accept" not in text and "@icps_v4 udp dport 5060 accept" in text
    ns_exec(limen_ns, "nft", "-f", str(rules))
    ns_exec(limen_ns, "nft", "-f", str(rules))  # loading twice replaces, not duplicates
    listener = subprocess.Popen(
        ["ip", "netns", "exec", limen_ns, sys.executable, "-c", LISTEN, "5061", "8443", "9999"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"

        def probe(source: str, port: int) -> str:
            return ns_exec(peer_ns, sys.executable, "-c", CONNECT, source, str(port)).stdout.strip()

        phone, pbx = "10.77.0.3", "10.77.0.2"
        assert probe(phone, 5061) == "open"  # SIP/TLS from anywhere
        assert probe(phone, 9999) == "closed"  # nothing else
        assert probe(phone, 8443) == "closed"  # the admin API: not from phones
        assert probe(pbx, 8443) == "open"  # ... but from the ICP (pairing)
    finally:
        listener.kill()
        listener.wait()
