"""Limen day one against real peers: SIPp over UDP and TCP, a Python TLS client, svmap.

``limen serve`` runs as a subprocess (the same thing the README's run command starts).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from peer_support import LIMEN, LimenServer, free_port, require_tool

from limen.sip import Response, parse_message

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

SCENARIOS = Path(__file__).with_name("scenarios")


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_options(limen_server: LimenServer, transport: str, tmp_path: Path) -> None:
    sipp = require_tool("sipp")
    local_port = free_port(socket.SOCK_DGRAM if transport == "u1" else socket.SOCK_STREAM)
    result = subprocess.run(
        [
            sipp,
            "-sf",
            str(SCENARIOS / "options_uac.xml"),
            f"127.0.0.1:{limen_server.sip_port}",
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            str(local_port),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
            "-recv_timeout",
            "5000",
            "-trace_err",
            "-trace_msg",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=40,
    )
    traces = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr}\n{traces[-4000:]}"
    # The message log shows what came back.
    assert "SIP/2.0 200 OK" in traces
    assert "SIP/2.0 405 Method Not Allowed" in traces
    assert "SIP/2.0 501 Not Implemented" in traces


def test_python_tls_client(limen_server: LimenServer) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", limen_server.tls_port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        local_port = tls.getsockname()[1]
        request = (
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{local_port};branch=z9hG4bK-tls-1;rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:python@127.0.0.1>;tag=py1\r\n"
            "To: <sip:limen@127.0.0.1>\r\n"
            "Call-ID: tls-client-1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        tls.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(4096)
            assert chunk, "connection closed before the response"
            data += chunk
        version = tls.version()
        cert = tls.getpeercert(binary_form=True)
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.status == 200
    assert "INVITE" in response.allow
    assert response.get("Accept") == "application/sdp"
    assert response.has("Supported")
    assert response.top_via.rport == local_port
    assert version in ("TLSv1.2", "TLSv1.3")
    # The generated certificate names the configured FQDN and IP.
    from cryptography import x509

    assert cert is not None
    san = x509.load_der_x509_certificate(cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "limen.test" in san.value.get_values_for_type(x509.DNSName)


def test_svmap_finds_nothing(limen_server: LimenServer, tmp_path: Path) -> None:
    """svmap says User-Agent: friendly-scanner, a known scanner (issue 10): Limen drops its
    requests without an answer, so the scan finds no SIP server here."""
    svmap = require_tool("svmap")
    env = dict(os.environ, HOME=str(tmp_path))  # svmap keeps sessions in ~/.sipvicious
    result = subprocess.run(
        [
            svmap,
            "-p",
            str(limen_server.sip_port),
            "-x",
            "127.0.0.1",
            "-b",
            "127.0.0.1",
            "-P",
            str(free_port(socket.SOCK_DGRAM)),
            "127.0.0.1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=40,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"127.0.0.1:{limen_server.sip_port}" not in output, output
    assert "found nothing" in output, output


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """A second `limen serve` (UDP only): SIGTERM ends it with exit code 0."""
    port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "limen.toml"
    config.write_text(
        f'data_dir = "data"\n[sip]\nbind = "127.0.0.1"\nudp_port = {port}\n'
        "tcp = false\ntls = false\n[api]\nenabled = false\n[provisioning]\nenabled = false\n"
    )
    process = subprocess.Popen(
        [str(LIMEN), "serve", "-c", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, COLUMNS="200", NO_COLOR="1"),
    )
    try:
        assert process.stdout is not None
        line = ""
        while "listening on" not in line:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "no output"
        assert line.strip() == f"listening on udp 127.0.0.1:{port}"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopping" in out
    assert not (tmp_path / "data" / "tls" / "sip.pem").exists()  # SIP/TLS off: no SIP cert
