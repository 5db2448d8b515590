"""Phones over TCP and TLS calling a PBX extension through Limen (Kamailio + SIPp as PBX).

SIPp (no TLS in this build) plays the TCP phone; a small Python stream UA plays the TLS
(and a second TCP) phone. Responses and in-dialog requests toward the phone must travel
on the phone's own connection: the PBX extension hangs up, and Limen's BYE must arrive
on that connection.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest
import test_gw_feat_dialogs as feat
from gw_call_support import PBX_HOST, SDP, Kamailio, free_udp_port, sipp
from test_gw_feat_dialogs import (
    StartLimen,
    assert_hidden,
    both,
    call_ids,
    phone_inf,
    register_extension,
    set_password,
)

from limen.app import RunningApp
from limen.sip import Request, Response, Transport, parse_message
from limen.sip.digest import answer_challenge, format_credentials, select_challenge
from limen.sip.transaction import create_non_2xx_ack

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

# The Kamailio and Limen fixtures of the dialog tests.
kamailio = feat.kamailio
limen = feat.limen
limen_factory = feat.limen_factory


async def test_tcp_phone_sipp_call(tmp_path: Path, limen: RunningApp, kamailio: Kamailio) -> None:
    ext_port = await register_extension(kamailio, "ext3107")
    callee = await sipp(tmp_path, "ext", "uas_rr", port=ext_port)
    caller = await sipp(
        tmp_path,
        "phone",
        "call_uac",
        "-t",
        "t1",
        port=free_udp_port(),
        remote=f"127.0.0.1:{limen.port(Transport.TCP)}",
        inf=phone_inf("2101", "ext3107"),
    )
    await both(caller, callee)
    phone_side = caller.messages
    assert "TCP message received" in phone_side and "UDP message" not in phone_side
    assert "SIP/2.0 407" in phone_side and "SIP/2.0 200 OK" in phone_side
    assert_hidden(phone_side, callee.messages, kamailio)
    assert "Via: SIP/2.0/TCP" not in callee.messages  # the ICP leg stays UDP


class StreamUa:
    """A phone on one TCP or TLS connection (RFC 3261 §18.3 framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool):
        self.reader, self.writer = reader, writer
        self.transport = "TLS" if tls else "TCP"
        self.port = writer.get_extra_info("sockname")[1]
        self.received: list[Request | Response] = []

    @classmethod
    async def connect(cls, port: int, tls: bool) -> StreamUa:
        context = None
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        return cls(reader, writer, tls)

    def close(self) -> None:
        self.writer.close()

    async def send(self, message: Request | Response) -> None:
        self.writer.write(bytes(message))
        await self.writer.drain()

    async def receive(self, timeout: float = 10.0) -> Request | Response:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip())
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        message = parse_message(head + body)
        self.received.append(message)
        return message

    async def final(self) -> Response:
        while True:
            message = await self.receive()
            if isinstance(message, Response) and message.status >= 200:
                return message

    def invite(self, user: str, callee: str, cseq: int, extra: list[str]) -> Request:
        lines = [
            f"INVITE sip:{callee}@127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/{self.transport} 127.0.0.1:{self.port};branch=z9hG4bK"
            f"{os.urandom(6).hex()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@127.0.0.1>;tag=streamua",
            f"To: <sip:{callee}@127.0.0.1>",
            f"Call-ID: stream-{self.port}",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:{user}@127.0.0.1:{self.port};transport={self.transport.lower()}>",
            *extra,
            "Content-Type: application/sdp",
            f"Content-Length: {len(SDP)}",
        ]
        message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + SDP)
        assert isinstance(message, Request)
        return message

    def in_dialog(self, method: str, answer: Response, cseq: int) -> Request:
        contact = answer.get("Contact")
        assert contact is not None
        target = contact.strip().split(";", 1)[0] if not contact.startswith("<") else contact
        target = target.strip("<>").split(">")[0]
        lines = [
            f"{method} {target} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} 127.0.0.1:{self.port};branch=z9hG4bK"
            f"{os.urandom(6).hex()};rport",
            "Max-Forwards: 70",
            f"From: {answer.get('From')}",
            f"To: {answer.get('To')}",
            f"Call-ID: {answer.call_id}",
            f"CSeq: {cseq} {method}",
            "Content-Length: 0",
        ]
        message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert isinstance(message, Request)
        return message


async def stream_call(app: RunningApp, kamailio: Kamailio, tmp_path: Path, tls: bool) -> None:
    """The phone calls; the extension (SIPp, uas_183_bye) answers and then hangs up."""
    ext_port = await register_extension(kamailio, "ext3108" if tls else "ext3109")
    callee = await sipp(tmp_path, "ext", "uas_183_bye", port=ext_port)
    port = app.port(Transport.TLS if tls else Transport.TCP)
    ua = await StreamUa.connect(port, tls)
    try:
        callee_user = "ext3108" if tls else "ext3109"
        invite = ua.invite("2101", callee_user, 1, [])
        await ua.send(invite)
        challenge = await ua.final()
        assert challenge.status == 407
        # ACK the 407 (§17.1.1.3) and retry with credentials.
        await ua.send(create_non_2xx_ack(invite, challenge))
        creds = answer_challenge(
            select_challenge(challenge.proxy_authenticate),  # type: ignore[arg-type]
            method="INVITE",
            uri=str(invite.uri),
            username="2101",
            password=set_password("2101"),
        )
        retry = ua.invite(
            "2101", callee_user, 2, [f"Proxy-Authorization: {format_credentials(creds)}"]
        )
        await ua.send(retry)
        answer = await ua.final()
        assert answer.status == 200, answer
        await ua.send(ua.in_dialog("ACK", answer, 2))
        # The extension hangs up: Limen's BYE arrives on this connection.
        bye = await ua.receive()
        assert isinstance(bye, Request) and bye.method == "BYE"
        await ua.send(bye.create_response(200))
    finally:
        await asyncio.sleep(0.2)
        ua.close()
    rc = await callee.wait()
    assert rc == 0, callee.explain()
    seen = [m for m in ua.received if isinstance(m, Response)]
    assert any(m.status == 183 for m in seen)
    for message in ua.received:
        text = bytes(message).decode(errors="replace")
        assert PBX_HOST not in text and "kamailio-pbx" not in text
    assert not call_ids(callee.messages) & {f"stream-{ua.port}"}


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_stream_phone_call_and_bye_on_its_connection(
    tmp_path: Path, limen_factory: StartLimen, kamailio: Kamailio, tls: bool
) -> None:
    app = await limen_factory(tls=True, tls_port=0)
    await stream_call(app, kamailio, tmp_path, tls)
