"""Can a scanner tell known users from unknown ones by Limen's answers or their timing?
(issue 9: no user enumeration). Starts ``limen serve`` on loopback with one known device,
sends each method alternately for a known and an unknown user, and prints per method the
status lines seen and the median / p90 round trip per user.

Run: ``.venv/bin/python bench/user_timing.py [--count 3000]``.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMEN = Path(sys.executable).with_name("limen")
PORT = 15960
CONFIG = f"""
data_dir = "data"
public_ip = "127.0.0.1"
log_level = "WARNING"
[sip]
bind = "127.0.0.1"
udp_port = {PORT}
tcp = false
tls = false
realm = "limen.bench"
[api]
enabled = false
[provisioning]
enabled = false
[media]
relay = false
[security]
sip_rate_limit = 0
"""


def request(method: str, user: str, n: int, port: int) -> bytes:
    extra = {"SUBSCRIBE": "Event: presence\r\n", "REFER": "Refer-To: <sip:9000@127.0.0.1>\r\n"}
    ruri = f"sip:127.0.0.1:{PORT}" if method == "REGISTER" else f"sip:8000@127.0.0.1:{PORT}"
    to = user if method == "REGISTER" else "8000"
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{n}x{random.getrandbits(40)};rport\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={n}\r\nTo: <sip:{to}@127.0.0.1>\r\n"
        f"Call-ID: t{n}-{random.getrandbits(40)}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n{extra.get(method, '')}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="limen-bench-users-"))
    config = folder / "limen.toml"
    config.write_text(CONFIG)

    def cli(*words: str) -> None:
        subprocess.run([str(LIMEN), *words, "-c", str(config)], check=True, capture_output=True)

    cli("init")
    cli("icp", "add", "pbx", "--address", "127.0.0.9", "--port", "5060")
    cli("options", "set", "sip_udp", "on")
    cli("device", "add", "7000", "--icp", "pbx", "--password", "secret-7000")
    serve = subprocess.Popen([str(LIMEN), "serve", "-c", str(config)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(4)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        port = sock.getsockname()[1]
        print("| method | known user: status, median / p90 µs | unknown: status, median / p90 µs |")
        print("|---|---|---|")
        for method in ("INVITE", "REGISTER", "MESSAGE", "OPTIONS", "SUBSCRIBE", "REFER"):
            times: dict[str, list[float]] = {"7000": [], "u99999": []}
            statuses: dict[str, set[str]] = {"7000": set(), "u99999": set()}
            for n in range(args.count):
                user = "7000" if n % 2 else "u99999"
                data = request(method, user, n, port)
                started = time.perf_counter()
                sock.sendto(data, ("127.0.0.1", PORT))
                answer = sock.recv(65535)
                times[user].append((time.perf_counter() - started) * 1e6)
                statuses[user].add(answer.split(b"\r\n", 1)[0].decode()[8:])
            cells = [
                f"{', '.join(sorted(statuses[u]))}, {statistics.median(times[u]):.0f} / "
                f"{statistics.quantiles(times[u], n=10)[-1]:.0f}"
                for u in ("7000", "u99999")
            ]
            print(f"| {method} | {cells[0]} | {cells[1]} |")
    finally:
        serve.terminate()
        serve.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
