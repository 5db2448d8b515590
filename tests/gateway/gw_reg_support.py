"""Helpers for the registration tests (imported by name: test folders have no
__init__.py): a Kamailio registrar with digest auth from SQLite playing the PBX, a tiny
SIP phone over UDP, and settings for an in-process Limen."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamailio_lab import Kamailio, launch_kamailio

from limen.config import ApiSettings, ProvisioningSettings, Settings, SipSettings
from limen.sip import Request, Response, parse_message
from limen.sip.digest import answer_challenge, format_credentials, select_challenge

KAMAILIO_HOST = "127.0.0.2"  # the "PBX"; phones and Limen use 127.0.0.1
DOMAIN = "127.0.0.2"


KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:{host}:{port}
alias="{host}"
server_header="Server: kamailio-pbx"
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
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
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "sqlite://{db}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
modparam("auth_db", "load_credentials", "")

request_route {{
    force_rport();
    if (is_method("REGISTER")) {{
        xlog("L_NOTICE", "LIMENTEST-REGISTER $fU expires=$hdr(Expires) auth=$au\\n");
        if (!auth_check("$fd", "subscriber", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "Keepalive"); exit; }}
    sl_send_reply("404", "Not here");
}}
"""


def start_kamailio(folder: Path, subscribers: dict[str, str]) -> Kamailio:
    return launch_kamailio(folder, KAMAILIO_CFG, subscribers, host=KAMAILIO_HOST, domain=DOMAIN)


def make_settings(tmp_path: Path, **sip: Any) -> Settings:
    values: dict[str, Any] = {
        "bind": "127.0.0.1",
        "lan_ip": "127.0.0.1",
        "udp_port": 0,
        "tcp_port": 0,
        "tls": False,
        "realm": "limen.test",
    }
    values.update(sip)
    return Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_ip="127.0.0.1",
        sip=SipSettings(**values),
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
    )


@dataclass
class Phone:
    """A minimal SIP phone over UDP: REGISTER with digest, answers OPTIONS (or not)."""

    user: str
    password: str
    limen: tuple[str, int]
    sock: socket.socket = field(init=False)
    answer_options: bool = True
    options_seen: int = 0
    _cseq: int = 0
    call_id: str = ""

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.call_id = f"{os.urandom(6).hex()}@phone"

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def close(self) -> None:
        self.sock.close()

    def register_request(self, expires: int | None, auth: str | None = None) -> bytes:
        self._cseq += 1
        lines = [
            f"REGISTER sip:{self.limen[0]}:{self.limen[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@limen.test>;tag=p{self.port}",
            f"To: <sip:{self.user}@limen.test>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self._cseq} REGISTER",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth:
            lines.append(auth)
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    async def receive(self, timeout: float = 5.0) -> Request | Response:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        message = parse_message(data)
        if isinstance(message, Request):
            await self._answer(message)
        return message

    async def _answer(self, request: Request) -> None:
        if request.method == "OPTIONS":
            self.options_seen += 1
            if not self.answer_options:
                return
        response = request.create_response(200, to_tag="phone")
        via = request.top_via
        dest = (via.host, via.rport or via.port or 5060)
        await asyncio.get_running_loop().sock_sendto(self.sock, bytes(response), dest)

    async def transact(self, data: bytes) -> Response:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, self.limen)
        while True:
            message = await self.receive()
            if isinstance(message, Response) and message.status >= 200:
                return message

    async def register(
        self, expires: int | None = 300, password: str | None = None
    ) -> tuple[Response, Response | None]:
        """(first response, response to the authenticated retry if challenged)."""
        first = await self.transact(self.register_request(expires))
        if first.status != 401:
            return first, None
        challenge = select_challenge(first.www_authenticate)
        assert challenge is not None
        creds = answer_challenge(
            challenge,
            method="REGISTER",
            uri=f"sip:{self.limen[0]}:{self.limen[1]}",
            username=self.user,
            password=password if password is not None else self.password,
        )
        second = await self.transact(
            self.register_request(expires, f"Authorization: {format_credentials(creds)}")
        )
        return first, second

    async def serve(self, seconds: float) -> None:
        """Answer (or ignore) what Limen sends for ``seconds``."""
        end = asyncio.get_running_loop().time() + seconds
        while (left := end - asyncio.get_running_loop().time()) > 0:
            try:
                await self.receive(timeout=left)
            except TimeoutError:
                return


async def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
