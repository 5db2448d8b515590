"""More call features through Limen (the B2BUA) against Kamailio (the PBX, 127.0.0.2).

Both ends are small Python user agents (:class:`Peer`) so that the timing SIPp cannot
shape is exact: phones talk to Limen (127.0.0.1), PBX extensions register at Kamailio
and talk through it (record-routed). Verified, each asserting what both ends saw:

- attended transfer: a REFER whose Refer-To carries ``?Replaces=`` naming one of the
  phone's legs reaches the PBX naming the paired ICP leg (RFC 3891 tags as the transfer
  target sees them), Referred-By with the device's ICP-side identity; an INVITE with
  Replaces from the PBX reaches the phone naming the phone's own dialog;
- CANCEL crossing a 200: the phone gets 487, the answered PBX leg is ACKed and BYEd;
- re-INVITE glare: both ends re-INVITE at once, both get 491, a retry then works;
- session timers (RFC 4028): Session-Expires / Min-SE end to end, 422 with Min-SE relayed,
  an UPDATE refresh relayed;
- (2xx retransmission to a phone that never ACKs: on a manual clock, test_gw_timers.py);
- the ICP over TCP (Kamailio with a TCP listener): both call directions, in-dialog
  requests both ways, each over TCP toward the PBX.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from gw_call_support import (
    PBX_HOST,
    SDP,
    Kamailio,
    UdpUa,
    make_settings,
    start_kamailio,
    wait_for,
)

from limen.app import RunningApp, prepare, start
from limen.sip import Request, Response, Transport
from limen.sip.dialog import Dialog, new_tag
from limen.sip.headers import parse_replaces, parse_via
from limen.sip.transaction import create_cancel
from limen.store import open_store
from limen.store.schemas import DeviceCreate, IcpCreate

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

PHONES = ["2201", "2202", "2203", "2204", "2205", "2206"]
EXTENSIONS = [f"ext32{n:02d}" for n in range(1, 16)]
HOLD_SDP = SDP.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n")


def set_password(user: str) -> str:
    return f"set-{user}"


def icp_user(user: str) -> str:
    return f"icp{user}"


def ext_password(ext: str) -> str:
    return f"pw-{ext}"


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    subscribers = {icp_user(u): f"icp-pw-{u}" for u in PHONES}
    subscribers.update({e: ext_password(e) for e in EXTENSIONS})
    kam = start_kamailio(tmp_path_factory.mktemp("kamailio"), subscribers, tcp=True)
    try:
        yield kam
    finally:
        kam.stop()


StartLimen = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def limen_factory(tmp_path: Path, kamailio: Kamailio) -> AsyncIterator[StartLimen]:
    apps: list[RunningApp] = []

    async def make(icp_transport: str = "udp", **sip: Any) -> RunningApp:
        settings = make_settings(tmp_path / f"limen{len(apps)}", **sip)
        prepare(settings)
        store = open_store(settings)
        try:
            store.icps.create(
                IcpCreate(name="pbx", address=PBX_HOST, port=kamailio.port, transport=icp_transport)
            )
            for user in PHONES:
                store.devices.create(
                    DeviceCreate(
                        setside_username=user,
                        setside_password=set_password(user),
                        icp="pbx",
                        icpside_username=icp_user(user),
                        icpside_password=f"icp-pw-{user}",
                    )
                )
            store.options.set({"sip_udp": True, "options_keepalive": "Never"})
        finally:
            store.close()
        app = await start(settings)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            await app.close()


@pytest.fixture
async def limen(limen_factory: StartLimen) -> RunningApp:
    return await limen_factory()


# --- the Python peers ------------------------------------------------------------------------


class Peer(UdpUa):
    """A UDP user agent whose next hop is ``limen`` (Limen for a phone, Kamailio for a PBX
    extension). Messages it does not wait for yet are kept until asked for."""

    def __init__(self, user: str, password: str, hop: tuple[str, int]) -> None:
        super().__init__(user, password, hop)
        self.inbox: list[Request | Response] = []

    async def expect(
        self, method: str, status: int | None = None, timeout: float = 8.0
    ) -> Request | Response:
        """The next request ``method`` (status None) or response ``status`` to ``method``
        (status 0: any final response)."""

        def match(m: Request | Response) -> bool:
            if status is None:
                return isinstance(m, Request) and m.method == method
            if not isinstance(m, Response) or m.cseq.method != method:
                return False
            return m.status >= 200 if status == 0 else m.status == status

        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for n, message in enumerate(self.inbox):
                if match(message):
                    return self.inbox.pop(n)
            left = end - loop.time()
            if left <= 0:
                got = [_brief(m) for m in self.inbox]
                raise AssertionError(f"{self.user}: no {method} {status} (inbox {got})")
            try:
                self.inbox.append(await self.receive(left))
            except TimeoutError:
                continue

    async def request_(self, method: str) -> Request:
        message = await self.expect(method)
        assert isinstance(message, Request)
        return message

    async def response(self, method: str, status: int = 0) -> Response:
        message = await self.expect(method, status)
        assert isinstance(message, Response)
        return message

    def seen(self, method: str) -> list[Request]:
        return [m for m in self.received if isinstance(m, Request) and m.method == method]

    def via(self) -> Any:
        return parse_via(f"SIP/2.0/UDP 127.0.0.1:{self.port};rport")

    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

    async def reply(
        self,
        request: Request,
        status: int,
        *,
        tag: str | None = None,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> Response:
        headers: list[tuple[str, object]] = []
        if request.to_tag is None and status > 100:
            headers += [("Record-Route", v) for v in request.get_all("record-route")]
        if request.method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER") and status < 300:
            headers.append(("Contact", self.contact()))
        headers += extra or []
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = request.create_response(status, to_tag=tag, headers=headers, body=body)
        await self.send(response)
        return response

    async def in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        headers: list[tuple[str, object]] = list(extra or [])
        if body:
            headers.append(("Content-Type", "application/sdp"))
        request = dialog.create_request(method, via=self.via(), headers=headers, body=body)
        await self.send(request)
        return request

    async def ack(self, dialog: Dialog, invite: Request) -> None:
        await self.send(dialog.create_ack(invite.cseq.seq, via=self.via()))

    async def invite(
        self,
        ruri: str,
        *,
        extra: list[str] | None = None,
        body: bytes = SDP,
        challenged: bool = True,
    ) -> tuple[Request, Response | None]:
        """An INVITE, ``challenged`` (a phone's, by Limen) or not (an extension's: its
        From is not Kamailio's domain); returns the INVITE sent last and, if one came
        already, its first response (100s skipped)."""
        invite = self.request(
            "INVITE",
            ruri,
            call_id=os.urandom(8).hex(),
            from_tag=new_tag(),
            extra=extra,
            body=body,
        )
        await self.send(invite)
        if not challenged:
            return invite, None
        first = await self.non_trying(invite)
        if first.status == 407:
            await self.ack_failure(invite, first)
            invite = self.authorised(invite, first)
            await self.send(invite)
            return invite, None
        return invite, first

    async def non_trying(self, invite: Request) -> Response:
        while True:
            message = await self.expect_any_response("INVITE", invite.cseq.seq)
            if message.status != 100:
                return message

    async def expect_any_response(self, method: str, seq: int | None = None) -> Response:
        """The next response to ``method`` (with CSeq number ``seq`` if given)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 8.0
        while True:
            for n, message in enumerate(self.inbox):
                if (
                    isinstance(message, Response)
                    and message.cseq.method == method
                    and (seq is None or message.cseq.seq == seq)
                ):
                    popped = self.inbox.pop(n)
                    assert isinstance(popped, Response)
                    return popped
            left = end - loop.time()
            assert left > 0, f"{self.user}: no response to {method}"
            try:
                self.inbox.append(await self.receive(left))
            except TimeoutError:
                continue

    async def until_final(self, invite: Request, first: Response | None) -> Response:
        response = first
        while response is None or response.status < 200:
            response = await self.expect_any_response(invite.method, invite.cseq.seq)
        return response


def _brief(message: Request | Response) -> str:
    if isinstance(message, Request):
        return message.method
    return f"{message.status} {message.cseq.method}"


def limen_udp(app: RunningApp) -> tuple[str, int]:
    return ("127.0.0.1", app.port(Transport.UDP))


async def registered_ext(kamailio: Kamailio, ext: str) -> Peer:
    peer = Peer(ext, ext_password(ext), (PBX_HOST, kamailio.port))
    response = await peer.register()
    assert response.status == 200, response
    peer.inbox.clear()
    return peer


async def registered_phone(app: RunningApp, kamailio: Kamailio, user: str) -> Peer:
    peer = Peer(user, set_password(user), limen_udp(app))
    response = await peer.register()
    assert response.status == 200, response
    peer.inbox.clear()
    await wait_for(lambda: bool(kamailio.contacts(icp_user(user))), timeout=10, step=0.2)
    return peer


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.close()


async def phone_to_ext(phone: Peer, ext: Peer) -> tuple[Dialog, Dialog, Request]:
    """Phone → Limen → Kamailio → extension, answered and ACKed. Returns (phone's dialog,
    the extension's dialog, the extension's INVITE)."""
    invite, first = await phone.invite(f"sip:{ext.user}@127.0.0.1")
    incoming = await ext.request_("INVITE")
    tag = new_tag()
    answer = await ext.reply(incoming, 200, tag=tag, body=SDP)
    ok = await phone.until_final(invite, first)
    assert ok.status == 200, ok
    phone_dialog = Dialog.from_uac(invite, ok)
    await phone.ack(phone_dialog, invite)
    await ext.request_("ACK")
    return phone_dialog, Dialog.from_uas(incoming, answer), incoming


async def ext_to_phone(ext: Peer, phone: Peer, extra: list[str] | None = None) -> Any:
    """Extension → Kamailio → Limen → phone (the phone's ICP-side number), answered and
    ACKed. Returns (ext's dialog, phone's dialog, the phone's INVITE)."""
    invite, first = await ext.invite(
        f"sip:{icp_user(phone.user)}@{PBX_HOST}", extra=extra, challenged=False
    )
    incoming = await phone.request_("INVITE")
    answer = await phone.reply(incoming, 200, tag=new_tag(), body=SDP)
    ok = await ext.until_final(invite, first)
    assert ok.status == 200, ok
    ext_dialog = Dialog.from_uac(invite, ok)
    await ext.ack(ext_dialog, invite)
    await phone.request_("ACK")
    return ext_dialog, Dialog.from_uas(incoming, answer), incoming


async def hang_up(caller: Peer, dialog: Dialog, callee: Peer) -> None:
    await caller.in_dialog(dialog, "BYE")
    bye = await callee.request_("BYE")
    await callee.reply(bye, 200)
    assert (await caller.response("BYE")).status == 200


def idle(app: RunningApp) -> Callable[[], bool]:
    return lambda: app.calls is not None and app.calls.active_calls == 0


def assert_no_leak(phone: Peer, kamailio: Kamailio) -> None:
    for message in phone.received:
        text = bytes(message).decode(errors="replace")
        for leak in (PBX_HOST, f":{kamailio.port}", "kamailio-pbx", "Record-Route"):
            assert leak not in text, (leak, text)


# --- attended transfer (REFER with Replaces, INVITE with Replaces) --------------------------


async def test_attended_transfer_refer_with_replaces(
    limen: RunningApp, kamailio: Kamailio, peers: list[Peer]
) -> None:
    phone = Peer("2201", set_password("2201"), limen_udp(limen))
    transferee = await registered_ext(kamailio, "ext3201")
    target = await registered_ext(kamailio, "ext3202")
    peers += [phone, transferee, target]
    d1, transferee_dialog, _ = await phone_to_ext(phone, transferee)
    d2, target_dialog, _ = await phone_to_ext(phone, target)
    # The phone (transferor) refers the transferee to the target, replacing call 2. The
    # Replaces tags are the target's view: to-tag = its tag, from-tag = ours (RFC 3891).
    replaces = f"{d2.call_id};to-tag={d2.remote_tag};from-tag={d2.local_tag}"
    refer_to = f"<sip:{target.user}@127.0.0.1?Replaces={quote(replaces, safe='')}>"
    await phone.in_dialog(
        d1,
        "REFER",
        extra=[("Refer-To", refer_to), ("Referred-By", "<sip:2201@127.0.0.1>")],
    )
    refer = await transferee.request_("REFER")
    await transferee.reply(refer, 202)
    assert (await phone.response("REFER")).status == 202
    # At the PBX: the target's own dialog, the PBX's host, the device's ICP-side identity.
    seen_to = refer.get("Refer-To")
    assert seen_to is not None
    match = re.fullmatch(rf"<sip:{target.user}@{re.escape(PBX_HOST)}\?Replaces=([^>]+)>", seen_to)
    assert match, seen_to
    mapped = parse_replaces(unquote(match.group(1)))
    assert mapped.call_id == target_dialog.call_id != d2.call_id
    assert mapped.to_tag == target_dialog.local_tag
    assert mapped.from_tag == target_dialog.remote_tag
    assert refer.get("Referred-By") == f"<sip:{icp_user('2201')}@{PBX_HOST}>"
    # The implicit subscription's NOTIFY comes back; then the transfer completes: the
    # target hangs up the replaced call, the transferee the referring one.
    await transferee.in_dialog(
        transferee_dialog,
        "NOTIFY",
        extra=[
            ("Event", "refer"),
            ("Subscription-State", "terminated;reason=noresource"),
            ("Content-Type", "message/sipfrag"),
        ],
        body=b"SIP/2.0 200 OK\r\n",
    )
    notify = await phone.request_("NOTIFY")
    assert notify.body == b"SIP/2.0 200 OK\r\n" and notify.call_id == d1.call_id
    await phone.reply(notify, 200)
    assert (await transferee.response("NOTIFY")).status == 200
    await hang_up(target, target_dialog, phone)
    await hang_up(transferee, transferee_dialog, phone)
    assert_no_leak(phone, kamailio)
    await wait_for(idle(limen))


async def test_pbx_invite_with_replaces_names_the_phones_dialog(
    limen: RunningApp, kamailio: Kamailio, peers: list[Peer]
) -> None:
    phone = await registered_phone(limen, kamailio, "2202")
    first_ext = await registered_ext(kamailio, "ext3203")
    second_ext = await registered_ext(kamailio, "ext3204")
    peers += [phone, first_ext, second_ext]
    ext_dialog, phone_dialog, _ = await ext_to_phone(first_ext, phone)
    # The PBX replaces the call (e.g. a call pickup / attended transfer on its side): the
    # new INVITE names the ICP leg as the receiver (Limen) sees it.
    replaces = (
        f"{ext_dialog.call_id};to-tag={ext_dialog.remote_tag};from-tag={ext_dialog.local_tag}"
    )
    invite, first = await second_ext.invite(
        f"sip:{icp_user(phone.user)}@{PBX_HOST}",
        extra=[f"Replaces: {replaces}", "Supported: replaces"],
        challenged=False,
    )
    incoming = await phone.request_("INVITE")
    value = incoming.get("Replaces")
    assert value is not None
    mapped = parse_replaces(value)
    # The phone's own dialog, to-tag = the phone's tag (RFC 3891 §3: the receiver's).
    assert mapped.call_id == phone_dialog.call_id
    assert mapped.to_tag == phone_dialog.local_tag
    assert mapped.from_tag == phone_dialog.remote_tag
    await phone.reply(incoming, 200, tag=new_tag(), body=SDP)
    ok = await second_ext.until_final(invite, first)
    assert ok.status == 200
    new_ext_dialog = Dialog.from_uac(invite, ok)
    await second_ext.ack(new_ext_dialog, invite)
    await phone.request_("ACK")
    # The phone ends the replaced dialog; the first extension gets the BYE.
    await hang_up(phone, phone_dialog, first_ext)
    await hang_up(second_ext, new_ext_dialog, phone)
    assert_no_leak(phone, kamailio)
    await wait_for(idle(limen))


# --- CANCEL crossing a 200 -------------------------------------------------------------------


async def test_cancel_crossing_the_pbx_200(
    limen: RunningApp, kamailio: Kamailio, peers: list[Peer]
) -> None:
    phone = Peer("2203", set_password("2203"), limen_udp(limen))
    ext = await registered_ext(kamailio, "ext3205")
    peers += [phone, ext]
    invite, first = await phone.invite(f"sip:{ext.user}@127.0.0.1")
    incoming = await ext.request_("INVITE")
    tag = new_tag()
    await ext.reply(incoming, 180, tag=tag)
    while first is None or first.status != 180:
        first = await phone.expect_any_response("INVITE", invite.cseq.seq)
    await phone.send(create_cancel(invite))
    assert (await phone.response("CANCEL")).status == 200
    final = await phone.response("INVITE")
    assert final.status == 487
    await phone.ack_failure(invite, final)
    # The extension answers although the CANCEL is on its way (it crosses the 200).
    cancel = await ext.request_("CANCEL")
    await ext.reply(incoming, 200, tag=tag, body=SDP)
    await ext.reply(cancel, 200)
    # Limen ACKs the answered PBX leg and hangs it up.
    ack = await ext.request_("ACK")
    assert ack.cseq.seq == incoming.cseq.seq and ack.to_tag == tag
    bye = await ext.request_("BYE")
    assert bye.call_id == incoming.call_id and bye.to_tag == tag
    await ext.reply(bye, 200)
    # The phone never saw a 200 nor anything after its 487.
    await asyncio.sleep(0.3)
    invite_statuses = {
        m.status for m in phone.received if isinstance(m, Response) and m.cseq.method == "INVITE"
    }
    assert 487 in invite_statuses and not {s for s in invite_statuses if 200 <= s < 300}
    assert not [m for m in phone.received if isinstance(m, Request)]
    await wait_for(idle(limen))


# --- re-INVITE glare -------------------------------------------------------------------------


async def test_re_invite_glare_both_get_491_then_retry_works(
    limen: RunningApp, kamailio: Kamailio, peers: list[Peer]
) -> None:
    phone = Peer("2204", set_password("2204"), limen_udp(limen))
    ext = await registered_ext(kamailio, "ext3206")
    peers += [phone, ext]
    phone_dialog, ext_dialog, _ = await phone_to_ext(phone, ext)
    # Both ends put the call on hold at the same moment.
    phone_reinvite, ext_reinvite = await asyncio.gather(
        phone.in_dialog(phone_dialog, "INVITE", body=HOLD_SDP),
        ext.in_dialog(ext_dialog, "INVITE", body=HOLD_SDP),
    )

    async def glare_end(peer: Peer, own: Request) -> Response:
        """Answer the other side's re-INVITE (if it gets through) 491 while ours is out."""
        final: Response | None = None
        loop = asyncio.get_running_loop()
        end = loop.time() + 3.0
        while loop.time() < end:
            try:
                message = await peer.receive(max(0.05, end - loop.time()))
            except TimeoutError:
                break
            if isinstance(message, Request) and message.method == "INVITE":
                await peer.reply(message, 491)
            elif (
                isinstance(message, Response)
                and message.cseq.seq == own.cseq.seq
                and message.status >= 200
            ):
                final = message
                await peer.ack_failure(own, message)
        assert final is not None, f"{peer.user}: no final response to its re-INVITE"
        return final

    phone_final, ext_final = await asyncio.gather(
        glare_end(phone, phone_reinvite), glare_end(ext, ext_reinvite)
    )
    assert (phone_final.status, ext_final.status) == (491, 491)
    # RFC 3261 §14.1: one side retries after a while; now it goes through.
    retry = await phone.in_dialog(phone_dialog, "INVITE", body=HOLD_SDP)
    incoming = await ext.request_("INVITE")
    assert b"a=sendonly" in incoming.body
    await ext.reply(
        incoming, 200, body=SDP.replace(b"PCMU/8000\r\n", b"PCMU/8000\r\na=recvonly\r\n")
    )
    ok = await phone.response("INVITE")
    assert ok.status == 200 and b"a=recvonly" in ok.body
    await phone.ack(phone_dialog, retry)
    await ext.request_("ACK")
    await hang_up(ext, ext_dialog, phone)
    await wait_for(idle(limen))


# --- session timers (RFC 4028) ---------------------------------------------------------------


async def test_session_timers_passed_through_and_422_relayed(
    limen: RunningApp, kamailio: Kamailio, peers: list[Peer]
) -> None:
    phone = Peer("2205", set_password("2205"), limen_udp(limen))
    ext = await registered_ext(kamailio, "ext3207")
    peers += [phone, ext]
    timer = ["Supported: timer", "Session-Expires: 90", "Min-SE: 90"]
    invite, first = await phone.invite(f"sip:{ext.user}@127.0.0.1", extra=timer)
    incoming = await ext.request_("INVITE")
    assert incoming.get("Session-Expires") == "90" and incoming.get("Min-SE") == "90"
    assert "timer" in incoming.supported
    # Too small for the PBX: 422 with its Min-SE, relayed to the phone with it.
    await ext.reply(incoming, 422, tag=new_tag(), extra=[("Min-SE", "1800")])
    await ext.request_("ACK")
    final = await phone.until_final(invite, first)
    assert final.status == 422 and final.get("Min-SE") == "1800"
    await phone.ack_failure(invite, final)
    # The phone retries with the PBX's minimum; the 200 carries the negotiated timer.
    timer = ["Supported: timer", "Session-Expires: 1800", "Min-SE: 1800"]
    invite, first = await phone.invite(f"sip:{ext.user}@127.0.0.1", extra=timer)
    incoming = await ext.request_("INVITE")
    assert incoming.get("Session-Expires") == "1800" and incoming.get("Min-SE") == "1800"
    tag = new_tag()
    answer = await ext.reply(
        incoming,
        200,
        tag=tag,
        body=SDP,
        extra=[("Session-Expires", "1800;refresher=uac"), ("Require", "timer")],
    )
    ok = await phone.until_final(invite, first)
    assert ok.status == 200
    assert ok.get("Session-Expires") == "1800;refresher=uac" and "timer" in ok.require
    phone_dialog = Dialog.from_uac(invite, ok)
    await phone.ack(phone_dialog, invite)
    await ext.request_("ACK")
    # The refresher (the phone, uac) refreshes with an UPDATE without SDP (§7.4).
    await phone.in_dialog(phone_dialog, "UPDATE", extra=[("Session-Expires", "1800;refresher=uac")])
    update = await ext.request_("UPDATE")
    assert update.get("Session-Expires") == "1800;refresher=uac" and not update.body
    await ext.reply(update, 200, extra=[("Session-Expires", "1800;refresher=uac")])
    refreshed = await phone.response("UPDATE")
    assert refreshed.status == 200 and refreshed.get("Session-Expires") == "1800;refresher=uac"
    await hang_up(ext, Dialog.from_uas(incoming, answer), phone)
    await wait_for(idle(limen))


# 2xx retransmission until the ACK (T1 doubling to T2, ACK + BYE past 64*T1) is checked to
# the exact instant on a manual clock in test_gw_timers.py.


# --- the ICP over TCP -------------------------------------------------------------------------


def limen_via_transport(request: Request) -> str:
    """The transport of Limen's Via in a request Kamailio relayed (the second Via)."""
    vias = request.via
    assert len(vias) >= 2, vias
    return vias[1].transport


async def test_icp_over_tcp_both_directions_with_in_dialog_requests(
    limen_factory: StartLimen, kamailio: Kamailio, peers: list[Peer]
) -> None:
    app = await limen_factory(icp_transport="tcp")
    phone = await registered_phone(app, kamailio, "2203")
    ext = await registered_ext(kamailio, "ext3209")
    peers += [phone, ext]
    contacts = kamailio.contacts(icp_user("2203"))
    assert contacts and all("transport=tcp" in c for c in contacts), contacts
    # Phone → PBX: INVITE, hold re-INVITE (phone side), BYE from the PBX side.
    phone_dialog, ext_dialog, incoming = await phone_to_ext(phone, ext)
    assert limen_via_transport(incoming) == "TCP"
    hold = await phone.in_dialog(phone_dialog, "INVITE", body=HOLD_SDP)
    reinvite = await ext.request_("INVITE")
    assert limen_via_transport(reinvite) == "TCP" and b"a=sendonly" in reinvite.body
    await ext.reply(reinvite, 200, body=SDP)
    assert (await phone.response("INVITE", 200)).status == 200
    await phone.ack(phone_dialog, hold)
    assert limen_via_transport(await ext.request_("ACK")) == "TCP"
    await hang_up(ext, ext_dialog, phone)  # Kamailio → Limen over TCP, answered on it
    # PBX → phone: INVITE over TCP from Kamailio, INFO from the PBX, BYE from the phone.
    ext2 = await registered_ext(kamailio, "ext3210")
    peers.append(ext2)
    ext2_dialog, phone2_dialog, _ = await ext_to_phone(ext2, phone)
    await ext2.in_dialog(
        ext2_dialog,
        "INFO",
        extra=[("Content-Type", "application/dtmf-relay")],
        body=b"Signal=5\r\nDuration=160\r\n",
    )
    info = await phone.request_("INFO")
    assert b"Signal=5" in info.body
    await phone.reply(info, 200)
    assert (await ext2.response("INFO")).status == 200
    await phone.in_dialog(phone2_dialog, "BYE")
    bye = await ext2.request_("BYE")
    assert limen_via_transport(bye) == "TCP"
    await ext2.reply(bye, 200)
    assert (await phone.response("BYE")).status == 200
    # Kamailio saw every request of Limen's over TCP (its log: "from <addr>:<port>" with
    # Limen's TCP port), none over UDP from Limen's UDP port.
    udp_port = app.port(Transport.UDP)
    assert f"from 127.0.0.1:{udp_port}\n" not in kamailio.log()
    assert_no_leak(phone, kamailio)
    await wait_for(idle(app))
