"""The whole gateway on a manual clock (imported by name: test folders have no __init__).

The real :class:`~limen.gateway.stack.SipStack` (transaction layer included), the real
:class:`~limen.gateway.gateway.Gateway`, registrar, set-side auth and
:class:`~limen.gateway.calls.CallController`, built with a clock the test sets and a
sender that records what would go on the wire. No event loop, no sockets, no sleeps:
:meth:`ManualGateway.advance` fires every deadline up to a time, one by one, at its exact
instant, so a test can assert *when* Timer C, Timer B or a 2xx retransmission happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from limen.config import Settings, SipSettings
from limen.gateway.auth import SetSideAuth
from limen.gateway.calls import CALL_EXTENSIONS, CallController
from limen.gateway.context import Directory, GatewayContext, LocalAddresses
from limen.gateway.gateway import Gateway
from limen.gateway.media import PassthroughMedia
from limen.gateway.registrar import Binding, Registrar
from limen.gateway.stack import SipStack
from limen.sip import Destination, Request, Response, Source, Transport, parse_message
from limen.sip.dialog import new_tag
from limen.sip.headers import parse_name_addr
from limen.sip.transaction import TimerConfig, TransactionLayer
from limen.store import GlobalOptions
from limen.store.schemas import DeviceCredentials, IcpRecord

START = 1000.0
LIMEN = ("203.0.113.10", 5060)
PHONE = Source(Transport.UDP, LIMEN, ("198.51.100.7", 40000))
ICP = IcpRecord(
    guid="i-1",
    name="pbx",
    address="10.0.0.2",
    port=5060,
    transport="udp",
    type="x",
    sip_capabilities=["udp"],
    link_enabled=True,
    xml_listen_port=4445,
    xml_destination_port=4445,
    tls=False,
    hashes=[],
    domain="",
    description="",
    device_count=1,
)
PBX = Source(Transport.UDP, ("10.0.0.1", 5060), (ICP.address, ICP.port))
DEVICE = DeviceCredentials(
    guid="d-7000",
    setside_username="7000",
    setside_password="setpw",
    icpside_username="icp7000",
    icpside_password="icppw",
    icp="pbx",
    clientid=None,
)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.168.1.5\r\ns=-\r\nc=IN IP4 192.168.1.5\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Wire:
    """The stack's sender: every datagram, parsed back, with where and when it went."""

    clock: Clock
    sent: list[tuple[float, Request | Response, Destination]] = field(default_factory=list)

    def send(self, data: bytes, dest: Destination) -> None:
        message = parse_message(data)
        assert isinstance(message, Request | Response)
        self.sent.append((self.clock.now, message, dest))


class ManualGateway:
    def __init__(self, *, timer_c: float = 180.0, t1: float = 0.5, t2: float = 4.0) -> None:
        self.clock = Clock()
        self.wire = Wire(self.clock)
        layer = TransactionLayer(TimerConfig(t1=t1, t2=t2), auto_trying=False)
        self.stack = SipStack(self.wire, layer, clock=self.clock)
        directory = Directory(
            # No method challenged: the phone's own binding gets through without digest.
            options=GlobalOptions(sip_udp=True, challenge_methods=[]),
            icps={ICP.guid: ICP},
            devices={DEVICE.guid: DEVICE},
        )
        directory._by_setside = {DEVICE.setside_username: DEVICE}
        directory._icp_by_host = {ICP.address: ICP}  # what Directory.reload builds
        self.ctx = GatewayContext(
            settings=Settings(sip=SipSettings(realm="limen.test", server_header="", t1=t1)),
            stack=self.stack,
            directory=directory,
            addresses=LocalAddresses(LIMEN[0], "10.0.0.1", {Transport.UDP: 5060}),
            media=PassthroughMedia(),
        )
        auth = SetSideAuth(self.ctx, clock=self.clock)
        self.registrar = Registrar(self.ctx, auth)
        self.calls = CallController(self.ctx, auth=auth, registrar=self.registrar, timer_c=timer_c)
        self.stack.tu = Gateway(
            self.ctx, registrar=self.registrar, calls=self.calls, supported=CALL_EXTENSIONS
        )
        binding = Binding(
            device_guid=DEVICE.guid,
            aor=DEVICE.setside_username,
            contact=parse_name_addr("<sip:7000@192.168.1.5:5060>"),
            source=PHONE,
            expires_at=START + 3600,
            nat=True,
        )
        self.registrar.add_binding(binding, DEVICE)

    # -- time ----------------------------------------------------------------------------------
    def advance(self, to: float) -> None:
        """Fire every deadline up to ``to`` (relative to START), each at its own time."""
        until = START + to
        while (deadline := self.stack.next_deadline()) is not None and deadline <= until:
            self.clock.now = max(self.clock.now, deadline)
            self.stack.handle_timers(self.clock.now)
        self.clock.now = max(self.clock.now, until)

    @property
    def elapsed(self) -> float:
        return self.clock.now - START

    # -- the wire ------------------------------------------------------------------------------
    def receive(self, message: Request | Response, source: Source) -> None:
        self.stack.receive(parse_message(bytes(message)), source)  # type: ignore[arg-type]

    def sent_to(self, host: str, *, since: int = 0) -> list[tuple[float, Request | Response]]:
        return [(t - START, m) for t, m, d in self.wire.sent[since:] if d.host == host]

    def to_phone(self, **kw: Any) -> list[tuple[float, Request | Response]]:
        return self.sent_to(PHONE.remote[0], **kw)

    def to_pbx(self, **kw: Any) -> list[tuple[float, Request | Response]]:
        return self.sent_to(ICP.address, **kw)

    # -- the peers -----------------------------------------------------------------------------
    def phone_invite(self) -> Request:
        """An INVITE from the registered phone to extension 3001 (received by Limen)."""
        invite = Request(
            "INVITE",
            "sip:3001@203.0.113.10",
            [
                ("Via", "SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-phone-1;rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:7000@203.0.113.10>;tag={new_tag()}"),
                ("To", "<sip:3001@203.0.113.10>"),
                ("Call-ID", "manual-call-1@192.168.1.5"),
                ("CSeq", "1 INVITE"),
                ("Contact", "<sip:7000@192.168.1.5:5060>"),
                ("Content-Type", "application/sdp"),
            ],
            SDP,
        )
        self.receive(invite, PHONE)
        return invite

    def relayed_invite(self) -> Request:
        invites = [m for _, m in self.to_pbx() if isinstance(m, Request) and m.method == "INVITE"]
        assert invites, "no INVITE reached the PBX"
        return invites[0]

    def pbx_answers(self, request: Request, status: int, *, tag: str, body: bytes = b"") -> None:
        headers: list[tuple[str, object]] = [("Contact", "<sip:3001@10.0.0.2:5060>")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = request.create_response(status, to_tag=tag, headers=headers, body=body)
        self.receive(response, PBX)


def statuses(messages: list[tuple[float, Request | Response]]) -> list[tuple[float, int]]:
    return [(t, m.status) for t, m in messages if isinstance(m, Response)]


def requests(messages: list[tuple[float, Request | Response]], method: str) -> list[float]:
    return [t for t, m in messages if isinstance(m, Request) and m.method == method]
