"""One packet cannot stop Limen (issue 9, finding 1 and its proof), in the namespace lab.

An attacker on the internet side (``wan``, 203.0.113.1) sends the packet of finding 1 (an
OPTIONS whose From is 40 letters with no ``<``) and a family of pathological headers
(long letter runs in From, To, Contact, Via, Route; long runs of spaces, semicolons and
quotes), over UDP and over TCP, again and again for a few seconds. Meanwhile a phone behind
the home NAT (``homepc``) sends an OPTIONS to Limen every 20 ms: every one of them must be
answered within 100 ms, throughout.
"""

from __future__ import annotations

import itertools
import select
import socket
import threading
import time

from acc_lab import HOMEPC_IP, PUBLIC_IP, Lab, ns_socket

ATTACK_SECONDS = 6.0
PROBE_INTERVAL = 0.02
ANSWER_WITHIN = 0.100

FINDING_1 = (
    "OPTIONS sip:{limen} SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} 203.0.113.1:40000;branch=z9hG4bK-f1-{n};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    "To: <sip:{limen}>\r\n"
    "Call-ID: finding1-{n}@203.0.113.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)
GOOD = {
    "Via": "SIP/2.0/{transport} 203.0.113.1:40000;branch=z9hG4bK-p-{n};rport",
    "From": "<sip:attacker@203.0.113.1>;tag=p{n}",
    "To": "<sip:{limen}>",
    "Contact": "<sip:attacker@203.0.113.1:40000>",
}


def pathological(transport: str, n: int, header: str, value: str) -> bytes:
    fields = dict(GOOD)
    fields[header] = value
    lines = [f"OPTIONS sip:{PUBLIC_IP} SIP/2.0", "Max-Forwards: 70"]
    lines += [f"{name}: {text}" for name, text in fields.items()]
    lines += [f"Call-ID: patho-{n}@203.0.113.1", "CSeq: 1 OPTIONS", "Content-Length: 0", "", ""]
    text = "\r\n".join(lines)
    return (
        text.replace("{transport}", transport)
        .replace("{n}", str(n))
        .replace("{limen}", PUBLIC_IP)
        .encode()
    )


def attack_family(transport: str, n: int, size: int) -> list[bytes]:
    finding = FINDING_1.format(limen=PUBLIC_IP, transport=transport, n=n).encode()
    family = [finding]
    for header in ("From", "To", "Contact", "Via", "Route"):
        family.append(pathological(transport, n, header, "a" * 40))
        family.append(pathological(transport, n, header, "a" * size))
        family.append(pathological(transport, n, header, "a " * (size // 2) + "x"))
    for run in (" ", ";", '"', "\\", "a;", '"a', "<"):
        for header in ("From", "Contact", "Via"):
            family.append(pathological(transport, n, header, "x" + run * (size // len(run))))
    return family


class Attacker(threading.Thread):
    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.stop = threading.Event()
        self.sent = {"udp": 0, "tcp": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            udp = ns_socket(self.lab, "wan")
            target = (PUBLIC_IP, 5060)
            for n in itertools.count():
                if self.stop.is_set():
                    break
                # UDP: a datagram each (under the 64 KB limit, fragments on the veth).
                for packet in attack_family("UDP", n, 8000):
                    try:
                        udp.sendto(packet, target)
                        self.sent["udp"] += 1
                    except BlockingIOError:
                        time.sleep(0.001)
                # TCP: a connection per packet, up to the message size limit.
                for packet in attack_family("TCP", n, 60000)[:: 1 + n % 3]:
                    if self.stop.is_set():
                        break
                    sock = ns_socket(self.lab, "wan", socket.SOCK_STREAM)
                    sock.settimeout(2.0)
                    try:
                        sock.connect(target)
                        sock.sendall(packet)
                        self.sent["tcp"] += 1
                    except OSError:
                        pass
                    finally:
                        sock.close()
            udp.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def probe(sock: socket.socket, n: int) -> float | None:
    """Send one OPTIONS to Limen; seconds until its answer, None if none came in 1 s."""
    call_id = f"probe-{n}-{time.monotonic_ns()}"
    port = sock.getsockname()[1]
    request = (
        f"OPTIONS sip:{PUBLIC_IP} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOMEPC_IP}:{port};branch=z9hG4bK-probe-{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{PUBLIC_IP}>;tag=probe{n}\r\n"
        f"To: <sip:{PUBLIC_IP}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    start = time.monotonic()
    sock.sendto(request, (PUBLIC_IP, 5060))
    deadline = start + 1.0
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        data = sock.recv(65536)
        if data.startswith(b"SIP/2.0 ") and call_id.encode() in data:
            return time.monotonic() - start
    return None


def test_pathological_headers_never_delay_a_phones_options(lab: Lab) -> None:
    phone = ns_socket(lab, "homepc", bind=(HOMEPC_IP, 0))
    # The control: answered before the attack.
    assert probe(phone, 0) is not None, "Limen does not answer OPTIONS at all"
    attacker = Attacker(lab)
    attacker.start()
    latencies: list[float | None] = []
    try:
        end = time.monotonic() + ATTACK_SECONDS
        for n in itertools.count(1):
            if time.monotonic() > end:
                break
            latencies.append(probe(phone, n))
            time.sleep(PROBE_INTERVAL)
    finally:
        attacker.stop.set()
        attacker.join(timeout=30)
        phone.close()
    assert attacker.error is None, repr(attacker.error)
    # The attack ran throughout: both transports, many packets of every kind.
    assert attacker.sent["udp"] >= 200 and attacker.sent["tcp"] >= 50, attacker.sent
    missing = [n for n, lat in enumerate(latencies, 1) if lat is None]
    assert not missing, f"{len(missing)} of {len(latencies)} OPTIONS unanswered: {missing[:10]}"
    answered = [lat for lat in latencies if lat is not None]
    worst = max(answered)
    print(
        f"attack sent {attacker.sent}; {len(answered)} OPTIONS answered, "
        f"slowest {worst * 1000:.1f} ms, "
        f"median {sorted(answered)[len(answered) // 2] * 1000:.1f} ms"
    )
    assert len(answered) >= 100, len(answered)
    assert worst < ANSWER_WITHIN, f"slowest answer {worst * 1000:.1f} ms"
