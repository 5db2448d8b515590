"""Issue 9, the gate, tried as an attacker would from the internet side of the lab.

The attacker lives in ``wan`` (203.0.113.1, a public address, no NAT); the legitimate phone
in ``homepc`` behind the home NAT. What reaches the PBX is read from Kamailio's own log
(``LIMENTEST-REQ <method> <ruri> from <source>`` for every request it receives), with a
Request-URI user unique to each test so the other scenarios do not count.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest
from acc_lab import (
    GATE_USERS,
    HOMEPC_IP,
    LIMEN,
    PUBLIC_IP,
    WAN_IP,
    Lab,
    ns_socket,
    require_tool,
    set_password,
)

from limen.sip import Response, parse_message
from limen.sip.digest import answer_challenge, format_credentials, parse_challenge

LIMEN_ADDR = (PUBLIC_IP, 5060)
ATTACK_METHODS = ["MESSAGE", "OPTIONS", "INFO", "NOTIFY", "PUBLISH", "UPDATE", "REFER", "SUBSCRIBE"]


class UdpPhone:
    """A minimal SIP UA over one UDP socket inside a namespace (blocking, with timeouts)."""

    def __init__(self, lab: Lab, role: str, ip: str) -> None:
        self.sock = ns_socket(lab, role, bind=(ip, 0))
        self.sock.setblocking(True)
        self.sock.settimeout(3.0)
        self.ip = ip
        self.port = self.sock.getsockname()[1]
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def build(
        self,
        method: str,
        *,
        user: str,
        ruri_user: str,
        call_id: str | None = None,
        contact: bool = True,
        extra: list[str] | None = None,
    ) -> bytes:
        self.cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(8)
        lines = [
            f"{method} sip:{ruri_user}@{PUBLIC_IP} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch={branch};rport",
            f"From: <sip:{user}@{PUBLIC_IP}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{ruri_user}@{PUBLIC_IP}>",
            f"Call-ID: {call_id or secrets.token_hex(10)}",
            f"CSeq: {self.cseq} {method}",
            "Max-Forwards: 70",
        ]
        if contact:
            lines.append(f"Contact: <sip:{user}@{self.ip}:{self.port}>")
        if method in ("SUBSCRIBE", "NOTIFY"):
            lines.append("Event: presence")
        if method == "NOTIFY":
            lines.append("Subscription-State: active")
        if method == "REFER":
            lines.append(f"Refer-To: <sip:{ruri_user}@{PUBLIC_IP}>")
        if method == "REGISTER":
            lines.append("Expires: 300")
        lines.extend(extra or [])
        return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()

    def exchange(self, data: bytes, timeout: float = 3.0) -> Response:
        """Send ``data``; the first final response with its Call-ID (ACKing non-2xx INVITE
        answers is not needed: Limen keeps no transaction for them)."""
        call_id = re.search(rb"Call-ID: (\S+)", data).group(1)  # type: ignore[union-attr]
        self.sock.sendto(data, LIMEN_ADDR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                raw, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            message = parse_message(raw)
            ours = isinstance(message, Response) and message.call_id == call_id.decode()
            if ours and message.status >= 200:  # type: ignore[union-attr]
                return message  # type: ignore[return-value]
        raise AssertionError(f"no final answer to {data.splitlines()[0]!r}")

    def with_digest(self, method: str, *, user: str, password: str, ruri_user: str) -> Response:
        first = self.exchange(self.build(method, user=user, ruri_user=ruri_user))
        name, header = (
            ("WWW-Authenticate", "Authorization")
            if first.status == 401
            else ("Proxy-Authenticate", "Proxy-Authorization")
        )
        assert first.status in (401, 407), first.status
        challenge = parse_challenge(first.get_all(name)[0])
        creds = answer_challenge(
            challenge,
            method=method,
            uri=f"sip:{ruri_user}@{PUBLIC_IP}",
            username=user,
            password=password,
        )
        request = self.build(
            method, user=user, ruri_user=ruri_user, extra=[f"{header}: {format_credentials(creds)}"]
        )
        return self.exchange(request)


def pbx_saw(lab: Lab, ruri_user: str, method: str | None = None) -> int:
    """Requests for ``ruri_user`` that reached the PBX."""
    methods = method or r"\w+"
    pattern = rf"LIMENTEST-REQ {methods} sip:{re.escape(ruri_user)}@"
    return len(re.findall(pattern, lab.pbx.log()))


def marker() -> str:
    return "9" + "".join(secrets.choice("0123456789") for _ in range(6))


@pytest.fixture
def attacker(lab: Lab) -> Iterator[UdpPhone]:
    phone = UdpPhone(lab, "wan", WAN_IP)
    yield phone
    phone.close()


@pytest.fixture
def phone(lab: Lab) -> Iterator[UdpPhone]:
    """Device 7000, registered from behind the home NAT."""
    ua = UdpPhone(lab, "homepc", HOMEPC_IP)
    user = GATE_USERS[0]
    answer = ua.with_digest("REGISTER", user=user, password=set_password(user), ruri_user=user)
    assert answer.status == 200, answer.status
    yield ua
    ua.close()


def test_unauthenticated_requests_from_the_internet_never_reach_the_pbx(
    lab: Lab, attacker: UdpPhone, phone: UdpPhone
) -> None:
    victim = GATE_USERS[0]  # registered, but from another address
    target = marker()
    for method in [*ATTACK_METHODS, "INVITE"]:
        for _ in range(10):
            answer = attacker.exchange(attacker.build(method, user=victim, ruri_user=target))
            expected = 405 if method == "PUBLISH" else 407
            assert answer.status == expected, (method, answer.status)
    # A REFER without Contact: an error answer and no state (used to leak a call record).
    for _ in range(50):
        refer = attacker.build("REFER", user=victim, ruri_user=target, contact=False)
        assert attacker.exchange(refer).status == 400
    time.sleep(0.5)
    assert pbx_saw(lab, target) == 0
    # Control: the same requests from the registered phone's own flow are delivered...
    for method in ("MESSAGE", "INFO", "REFER", "OPTIONS"):
        phone.exchange(phone.build(method, user=victim, ruri_user=target))
    # ... and from anywhere with the device's credentials.
    with_creds = attacker.with_digest(
        "MESSAGE", user=victim, password=set_password(victim), ruri_user=target
    )
    assert with_creds.status not in (401, 403, 407)
    time.sleep(0.5)
    for method in ("MESSAGE", "INFO", "REFER", "OPTIONS"):
        assert pbx_saw(lab, target, method) >= 1, method
    assert "Traceback" not in lab.limen.stderr()


def test_an_empty_challenge_list_does_not_open_invite(lab: Lab, attacker: UdpPhone) -> None:
    user = GATE_USERS[9]
    subprocess.run(
        [
            str(LIMEN),
            "device",
            "edit",
            user,
            "--challenge-methods",
            "",
            "-c",
            str(lab.folder / "limen" / "limen.toml"),
        ],
        check=True,
        capture_output=True,
    )
    time.sleep(3)  # limen serve polls for configuration changes every 2 s
    target = marker()
    for _ in range(5):
        answer = attacker.exchange(attacker.build("INVITE", user=user, ruri_user=target))
        assert answer.status == 407
    assert pbx_saw(lab, target) == 0


def test_one_nonce_buys_one_guess(lab: Lab, attacker: UdpPhone) -> None:
    user, target = GATE_USERS[1], marker()
    first = attacker.exchange(attacker.build("INVITE", user=user, ruri_user=target))
    challenge = parse_challenge(first.get_all("Proxy-Authenticate")[0])
    statuses = []
    for n, guess in enumerate([f"guess{i}" for i in range(9)] + [set_password(user)], start=1):
        creds = answer_challenge(
            challenge,
            method="INVITE",
            uri=f"sip:{target}@{PUBLIC_IP}",
            username=user,
            password=guess,
            nc=n,
        )
        header = f"Proxy-Authorization: {format_credentials(creds)}"
        request = attacker.build("INVITE", user=user, ruri_user=target, extra=[header])
        statuses.append(attacker.exchange(request).status)
    assert statuses == [403] + [407] * 9
    assert pbx_saw(lab, target) == 0


def test_an_unauthenticated_invite_costs_one_answer(lab: Lab, attacker: UdpPhone) -> None:
    """No 100 Trying, no retransmitted 407: one packet back per INVITE (not a reflector)."""
    data = attacker.build("INVITE", user=GATE_USERS[2], ruri_user=marker())
    attacker.sock.sendto(data, LIMEN_ADDR)
    got: list[bytes] = []
    attacker.sock.settimeout(0.2)
    deadline = time.monotonic() + 2.5  # Timer G would have retransmitted at 0.5, 1.5 s
    while time.monotonic() < deadline:
        try:
            got.append(attacker.sock.recvfrom(65535)[0])
        except TimeoutError:
            continue
    assert [g.split(b"\r\n", 1)[0] for g in got] == [b"SIP/2.0 407 Proxy Authentication Required"]


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS", "MESSAGE"])
def test_svwar_tells_no_user_apart(lab: Lab, method: str) -> None:
    svwar = require_tool("svwar")
    first, last = 7000, 7999  # 7000-7009 exist, the rest do not
    result = subprocess.run(
        [
            *lab.ns.exec("wan"),
            svwar,
            "-m",
            method,
            f"-e{first}-{last}",
            "-p",
            "5060",
            "-b",
            WAN_IP,
            "--force",
            PUBLIC_IP,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    found = set(re.findall(r"\|\s*(7\d{3})\s*\|", output))
    assert not found & set(GATE_USERS), output[-2000:]
