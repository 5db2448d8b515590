"""Issue 10, abuse resistance, with the attackers' own tools in the namespace lab.

Attackers live on the internet side (``wan``): svcrack at 203.0.113.2, floods from 50
addresses 203.0.113.100-149. Legitimate phones: one with a public address (203.0.113.5)
and the lab's NATed home phones. The flood length per kind is ``LIMEN_FLOOD_SECONDS``
(8 s in CI; the issue's 30 s proof is the same test with ``LIMEN_FLOOD_SECONDS=30``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from acc_lab import (
    ATTACKER_IP,
    FLOOD_IPS,
    GATE_USERS,
    LIMEN,
    PUBLIC_IP,
    WAN_IP,
    WAN_PHONE_IP,
    Lab,
    require_tool,
    set_password,
)
from test_acc_gate import UdpPhone, marker, pbx_saw

FLOOD_SECONDS = float(os.environ.get("LIMEN_FLOOD_SECONDS", "8"))


def limen_cli(lab: Lab, *args: str) -> str:
    result = subprocess.run(
        [str(LIMEN), *args, "-c", str(lab.folder / "limen" / "limen.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout + result.stderr


def bans(lab: Lab) -> dict[str, dict[str, object]]:
    rows = json.loads(limen_cli(lab, "ban", "list", "--json"))
    return {row["address"]: row for row in rows}


def rss_mb(lab: Lab) -> float:
    assert lab.limen.process is not None
    status = Path(f"/proc/{lab.limen.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def unban(lab: Lab, *addresses: str) -> None:
    """Lift bans over the running serve's control socket (what `limen ban remove` does),
    in one process: 50 CLI starts would cost a minute."""
    from limen.config import load_settings
    from limen.control import ask

    settings = load_settings(lab.folder / "limen" / "limen.toml")
    for address in addresses:
        ask(settings, {"op": "unban", "address": address})


@pytest.fixture
def wan_phone(lab: Lab) -> Iterator[UdpPhone]:
    phone = UdpPhone(lab, "wan", WAN_PHONE_IP)
    yield phone
    phone.close()


def register(phone: UdpPhone, user: str) -> int:
    return phone.with_digest(
        "REGISTER", user=user, password=set_password(user), ruri_user=user
    ).status


def call_reaches_pbx(lab: Lab, phone: UdpPhone, user: str) -> bool:
    """An authenticated INVITE to a number the PBX does not know: the PBX answers it
    (404/480), which proves the call got through Limen."""
    target = marker()
    answer = phone.with_digest("INVITE", user=user, password=set_password(user), ruri_user=target)
    return answer.status not in (401, 403, 407, 503) and pbx_saw(lab, target, "INVITE") >= 1


def test_svcrack_is_banned_and_the_user_keeps_working(
    lab: Lab, wan_phone: UdpPhone, tmp_path: Path
) -> None:
    svcrack = require_tool("svcrack")
    user = GATE_USERS[3]
    words = tmp_path / "words.txt"
    words.write_text("".join(f"guess{i}\n" for i in range(1999)) + set_password(user) + "\n")
    # svcrack 0.3.3 ignores -b (it never passes the binding address on): its packets
    # leave from the wan host's primary address, which the lab trusts. Translate its
    # source port to the attacker's address instead.
    subprocess.run(
        [*lab.ns.exec("wan"), "nft", "-f", "-"],
        input=(
            "table ip limen_snat {\n  chain post {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    udp sport 5072 snat to {ATTACKER_IP}\n  }}\n}}\n"
        ),
        text=True,
        check=True,
    )
    attack = subprocess.Popen(
        [
            *lab.ns.exec("wan"),
            svcrack,
            "-u",
            user,
            "-d",
            str(words),
            "-p",
            "5060",
            "-P",
            "5072",
            "--maximumtime",
            "5",
            PUBLIC_IP,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # During the attack, the same user from another address registers and calls.
        time.sleep(1.0)
        assert register(wan_phone, user) == 200
        assert call_reaches_pbx(lab, wan_phone, user)
        output, _ = attack.communicate(timeout=90)
    finally:
        if attack.poll() is None:
            attack.kill()
    try:
        assert set_password(user) not in output, output[-1500:]
        banned = bans(lab)
        assert ATTACKER_IP in banned, banned
        assert banned[ATTACKER_IP]["reason"] in ("auth", "user-guess")
        assert f"BAN {ATTACKER_IP} reason=" in lab.limen.stderr()
        # The user was never locked out: the phone still registers after the ban.
        assert register(wan_phone, user) == 200
    finally:
        unban(lab, ATTACKER_IP)
        subprocess.run([*lab.ns.exec("wan"), "nft", "delete", "table", "ip", "limen_snat"])


def test_manual_ban_and_scanner_agents_get_no_answer(lab: Lab) -> None:
    attacker = UdpPhone(lab, "wan", ATTACKER_IP)
    try:
        ping = lambda: attacker.build("OPTIONS", user="x", ruri_user="x").replace(  # noqa: E731
            b"OPTIONS sip:x@", b"OPTIONS sip:"
        )
        assert attacker.exchange(ping()).status == 200
        assert "banned" in limen_cli(lab, "ban", "add", ATTACKER_IP, "--seconds", "120")
        with pytest.raises(AssertionError, match="no final answer"):
            attacker.exchange(ping(), timeout=1.0)
        assert "lifted" in limen_cli(lab, "ban", "remove", ATTACKER_IP)
        assert attacker.exchange(ping()).status == 200
        scanner = ping().replace(
            b"Content-Length: 0", b"User-Agent: sipcli/v1.8\r\nContent-Length: 0"
        )
        with pytest.raises(AssertionError, match="no final answer"):
            attacker.exchange(scanner, timeout=1.0)
    finally:
        attacker.close()
        unban(lab, ATTACKER_IP)


FLOODER = textwrap.dedent(
    """
    import os, random, socket, sys, time
    kind, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    sources = sys.argv[4].split(",")
    target = (sys.argv[5], 5060)
    def message(i, src):
        if kind == "garbage":
            return os.urandom(200)
        method = kind.upper()
        user = "u%d" % random.randint(1, 10**6)
        ruri = "sip:%d@%s" % (8000 + i % 1000, target[0])
        if method == "REGISTER":
            ruri = "sip:%s" % target[0]
        return ("%s %s SIP/2.0\\r\\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bK%d.%d;rport\\r\\n"
                "From: <sip:%s@%s>;tag=%d\\r\\nTo: <sip:%s@%s>\\r\\nCall-ID: f%d.%d\\r\\n"
                "CSeq: 1 %s\\r\\nMax-Forwards: 70\\r\\nContact: <sip:%s@%s>\\r\\n"
                "Content-Length: 0\\r\\n\\r\\n" % (method, ruri, src, i, random.getrandbits(30),
                user, target[0], i, user, target[0], i, random.getrandbits(30), method,
                user, src)).encode()
    socks = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0)); s.setblocking(False); socks.append(s)
    batch = [[message(i, src) for i in range(40)] for src in sources]
    start = time.monotonic(); sent = 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            n = sent % len(socks)
            try:
                socks[n].sendto(batch[n][(sent // len(socks)) % 40], target)
            except (BlockingIOError, OSError):
                pass
            sent += 1
        time.sleep(0.001)
    print(sent)
    """
)


@pytest.mark.parametrize("kind", ["invite", "register", "options", "garbage"])
def test_flood_from_50_sources_spares_the_phone(
    lab: Lab, wan_phone: UdpPhone, kind: str, tmp_path: Path
) -> None:
    """≥ 5,000 messages/s from 50 addresses while a phone registers every 2 s and calls
    every 4 s: the phone keeps ≥ 99 % of both; RSS comes back within 10 %."""
    script = tmp_path / "flood.py"
    script.write_text(FLOODER)
    user = GATE_USERS[4]
    assert register(wan_phone, user) == 200
    before = rss_mb(lab)
    flood = subprocess.Popen(
        [
            *lab.ns.exec("wan"),
            sys.executable,
            str(script),
            kind,
            "6000",
            str(FLOOD_SECONDS),
            ",".join(FLOOD_IPS),
            PUBLIC_IP,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    registered = called = reg_tries = call_tries = 0
    peak = before
    try:
        started = time.monotonic()
        next_call = started
        while flood.poll() is None:
            reg_tries += 1
            registered += register(wan_phone, user) == 200
            if time.monotonic() >= next_call:
                call_tries += 1
                called += call_reaches_pbx(lab, wan_phone, user)
                next_call += 4.0
            peak = max(peak, rss_mb(lab))
            time.sleep(max(0.0, 2.0 - (time.monotonic() - started) % 2.0))
        sent = int((flood.stdout.read() if flood.stdout else "0").strip() or 0)
    finally:
        if flood.poll() is None:
            flood.kill()
    assert sent >= 5000 * FLOOD_SECONDS * 0.95, sent
    assert reg_tries >= 2 and call_tries >= 1
    assert registered >= 0.99 * reg_tries, (registered, reg_tries)
    assert called >= 0.99 * call_tries, (called, call_tries)
    time.sleep(3)
    after = rss_mb(lab)
    assert after <= before * 1.10, (before, peak, after)
    # Every source went over the rate (garbage too: it is counted before parsing).
    assert len(set(bans(lab)) & set(FLOOD_IPS)) >= 45
    unban(lab, *FLOOD_IPS)
    print(f"{kind}: {sent} messages, RSS {before:.0f} → peak {peak:.0f} → {after:.0f} MB")


def test_never_completed_invites_hold_no_memory(lab: Lab) -> None:
    """50,000 INVITEs never ACKed, three rounds, from a source that is not banned (the lab
    trusts 203.0.113.1): each costs one stateless 407; RSS does not grow round to round."""
    attacker = UdpPhone(lab, "wan", WAN_IP)
    try:
        sizes = [rss_mb(lab)]
        template = attacker.build("INVITE", user="7999", ruri_user="8000")
        for round_ in range(3):
            sent = 0
            started = time.monotonic()
            while sent < 50_000:
                data = template.replace(b"z9hG4bK", f"z9hG4bK{round_}x{sent}x".encode(), 1)
                data = data.replace(b"Call-ID: ", f"Call-ID: r{round_}n{sent}".encode(), 1)
                attacker.sock.sendto(data, (PUBLIC_IP, 5060))
                sent += 1
                if sent % 500 == 0:  # ~10,000/s: drain the answers, keep the pace
                    drain(attacker)
                    time.sleep(max(0.0, sent / 10_000 - (time.monotonic() - started)))
            time.sleep(2)
            drain(attacker)
            sizes.append(rss_mb(lab))
        assert max(sizes) - sizes[0] < 20, sizes  # documented bound: 20 MB
        assert sizes[3] <= sizes[1] + 5, sizes  # no growth from round to round
        print(f"RSS over 3 rounds of 50,000 INVITEs: {sizes}")
    finally:
        attacker.close()


def drain(phone: UdpPhone) -> None:
    phone.sock.setblocking(False)
    try:
        while True:
            phone.sock.recv(65535)
    except (BlockingIOError, OSError):
        pass
    finally:
        phone.sock.setblocking(True)


def test_one_device_gets_its_call_limit(lab: Lab, wan_phone: UdpPhone) -> None:
    """A device calling as fast as it can gets 503 past its attempts per minute (20: the
    default, set on this device, as the lab lifts the global limits for its load
    scenarios), and another user's call still goes through."""
    greedy = GATE_USERS[5]
    statuses = []
    for _ in range(25):
        target = marker()
        answer = wan_phone.with_digest(
            "INVITE", user=greedy, password=set_password(greedy), ruri_user=target
        )
        statuses.append(answer.status)
        time.sleep(0.05)  # two requests per call: stay under the per-source message rate
    assert statuses.count(503) >= 5 and 503 not in statuses[:20], statuses
    other = UdpPhone(lab, "wan", WAN_IP)
    try:
        assert call_reaches_pbx(lab, other, GATE_USERS[6])
    finally:
        other.close()
