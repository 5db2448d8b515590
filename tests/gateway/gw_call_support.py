"""Helpers for the call tests (imported by name: test folders have no __init__.py).

A Kamailio proxy + registrar with digest auth from SQLite plays the PBX on 127.0.0.2 (its
subscribers are the devices' ICP-side credentials and the PBX extensions); Limen runs
in-process on 127.0.0.1; SIPp plays phones and PBX extensions (scenarios in
``scenarios/``); a small Python UA sends the requests SIPp cannot shape.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamailio_lab import Kamailio, free_udp_port, launch_kamailio, require_tool

from limen.config import ApiSettings, MediaSettings, ProvisioningSettings, Settings, SipSettings
from limen.sip import Request, Response, parse_message
from limen.sip.digest import answer_challenge, format_credentials, select_challenge

PBX_HOST = "127.0.0.2"  # the "PBX"; phones and Limen use 127.0.0.1
SCENARIOS = Path(__file__).with_name("scenarios")

KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:{host}:{port}
alias="{host}"
server_header="Server: kamailio-pbx"
user_agent_header="User-Agent: kamailio-pbx"
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("ctl", "binrpc", "unix:{run}/kamailio_ctl")
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 60000)
modparam("rr", "append_fromtag", 1)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "sqlite://{db}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
modparam("auth_db", "load_credentials", "")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    force_rport();
    xlog("L_NOTICE", "LIMENTEST-REQ $rm $ru from $si:$sp\\n");
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        sl_send_reply("200", "Keepalive"); exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{ t_check_trans(); exit; }}
        t_check_trans();
    }}
    if (has_totag()) {{
        if (loose_route()) {{ route(RELAY); }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ route(RELAY); }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE|REFER")) {{ record_route(); }}
    if (is_method("REGISTER") || from_uri == myself) {{
        if (!auth_check("$fd", "subscriber", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        if (!is_method("REGISTER|PUBLISH")) {{ consume_credentials(); }}
    }}
    if (is_method("REGISTER")) {{
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if ($rU == $null) {{ sl_send_reply("484", "Address Incomplete"); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


def start_kamailio(folder: Path, subscribers: dict[str, str], *, tcp: bool = False) -> Kamailio:
    """Kamailio on PBX_HOST (UDP; with ``tcp`` also a TCP listener on the same port)."""
    return launch_kamailio(
        folder, KAMAILIO_CFG, subscribers, host=PBX_HOST, domain=PBX_HOST, tcp=tcp
    )


def make_settings(tmp_path: Path, **sip: Any) -> Settings:
    values: dict[str, Any] = {
        "bind": "127.0.0.1",
        "lan_ip": "127.0.0.1",
        "udp_port": 0,
        "tcp_port": 0,
        "tls": False,
        "realm": "limen.test",
        "timer_c": 3.0,
        "server_header": "",
    }
    values.update(sip)
    return Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        sip=SipSettings(**values),
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
        # Signalling tests: SDP passes through (the relay has its own tests).
        media=MediaSettings(relay=False),
    )


def free_media_base(host: str = "127.0.0.1") -> int:
    """A port P with P..P+3 free: SIPp binds ``-mp`` P for audio and P+2 for video (each
    with its RTCP neighbour), so a free P alone let it die on "Address already in use"."""
    for _ in range(50):
        base = free_udp_port(host)
        socks = []
        try:
            for offset in range(4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no four consecutive free UDP ports")


@dataclass
class Sipp:
    """One SIPp run (phone or PBX extension) with its message trace."""

    name: str
    process: asyncio.subprocess.Process
    folder: Path

    @property
    def messages(self) -> str:
        path = self.folder / f"{self.name}.msg"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def errors(self) -> str:
        path = self.folder / f"{self.name}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait(self, timeout: float = 20.0) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            tail = self.messages[-3000:]
            raise AssertionError(f"sipp {self.name} did not finish:\n{tail}") from None

    def explain(self) -> str:
        errors, messages = self.errors[-2000:], self.messages[-4000:]
        stderr_path = self.folder / f"{self.name}.stderr"
        stderr = stderr_path.read_text(errors="replace")[-1000:] if stderr_path.exists() else ""
        return (
            f"--- {self.name} (exit {self.process.returncode}) errors:\n{errors}\n"
            f"--- stderr:\n{stderr}\n--- messages:\n{messages}"
        )


async def sipp(
    folder: Path,
    name: str,
    scenario: str,
    *args: str,
    port: int,
    remote: str | None = None,
    inf: str | None = None,
    calls: int = 1,
) -> Sipp:
    """Start SIPp on 127.0.0.1:``port`` with scenario ``scenarios/<scenario>.xml``."""
    binary = require_tool("sipp")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "-sf", str(SCENARIOS / f"{scenario}.xml")]
    if remote is not None:
        cmd.append(remote)
    cmd += ["-i", "127.0.0.1", "-p", str(port), "-m", str(calls), "-nostdin", "-timeout", "30s"]
    cmd += ["-trace_msg", "-message_file", str(folder / f"{name}.msg")]
    cmd += ["-trace_err", "-error_file", str(folder / f"{name}.err")]
    cmd += ["-mp", str(free_media_base())]
    if inf is not None:
        inf_path = folder / f"{name}.csv"
        inf_path.write_text(f"SEQUENTIAL\n{inf}\n")
        cmd += ["-inf", str(inf_path)]
    cmd += list(args)
    # SIPp's own complaints (a port in use, a bad scenario) go to a file that
    # explain() shows: a SIPp that never started is otherwise invisible.
    with (folder / f"{name}.stderr").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *cmd, cwd=folder, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    return Sipp(name, process, folder)


@dataclass
class UdpUa:
    """A tiny UDP user agent for the requests SIPp cannot shape (and for REGISTER)."""

    user: str
    password: str
    limen: tuple[str, int]
    port: int = 0
    sock: socket.socket = field(init=False)
    received: list[Request | Response] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes | Request) -> None:
        raw = bytes(data)
        await asyncio.get_running_loop().sock_sendto(self.sock, raw, self.limen)

    async def receive(self, timeout: float = 5.0) -> Request | Response:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        message = parse_message(data)
        self.received.append(message)
        return message

    async def final(self, timeout: float = 10.0) -> Response:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            message = await self.receive(max(0.1, end - loop.time()))
            if isinstance(message, Response) and message.status >= 200:
                return message

    def request(
        self,
        method: str,
        ruri: str,
        *,
        to: str | None = None,
        cseq: int = 1,
        call_id: str | None = None,
        from_tag: str = "uatag",
        to_tag: str | None = None,
        extra: list[str] | None = None,
        body: bytes = b"",
        branch: str | None = None,
    ) -> Request:
        branch = branch or "z9hG4bK" + os.urandom(6).hex()
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@127.0.0.1>;tag={from_tag}",
            f"To: <{to or ruri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id or os.urandom(8).hex()}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
            *(extra or []),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(message, Request)
        return message

    def authorised(self, request: Request, challenge_response: Response) -> Request:
        """``request`` again with credentials for the 401/407 and CSeq + 1."""
        proxy = challenge_response.status == 407
        offered = (
            challenge_response.proxy_authenticate if proxy else challenge_response.www_authenticate
        )
        challenge = select_challenge(offered)
        assert challenge is not None
        creds = answer_challenge(
            challenge,
            method=request.method,
            uri=str(request.uri),
            username=self.user,
            password=self.password,
        )
        retry = request.copy()
        retry.set("CSeq", f"{request.cseq.seq + 1} {request.method}")
        retry.set(
            "Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport"
        )
        retry.add("Proxy-Authorization" if proxy else "Authorization", format_credentials(creds))
        return retry

    async def ack_failure(self, request: Request, response: Response) -> None:
        from limen.sip.transaction import create_non_2xx_ack

        await self.send(create_non_2xx_ack(request, response))

    async def transact(self, request: Request, timeout: float = 10.0) -> tuple[Request, Response]:
        """Send, answer one challenge, ACK a non-2xx INVITE answer; (last request, final)."""
        await self.send(request)
        response = await self.final(timeout)
        if response.status in (401, 407):
            if request.method == "INVITE":
                await self.ack_failure(request, response)
            request = self.authorised(request, response)
            await self.send(request)
            response = await self.final(timeout)
        if request.method == "INVITE" and response.status >= 300:
            await self.ack_failure(request, response)
        return request, response

    async def register(self) -> Response:
        request = self.request(
            "REGISTER",
            f"sip:{self.limen[0]}:{self.limen[1]}",
            to=f"sip:{self.user}@127.0.0.1",
            extra=["Expires: 300"],
        )
        _, response = await self.transact(request)
        return response


SDP = (
    b"v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


async def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
