"""The call controller: Limen as a back-to-back user agent (RFC 3261 §6 "B2BUA", RFC 7092).

Every call (and every SUBSCRIBE dialog, MESSAGE, OPTIONS to a user) is two independent
user-agent legs (:mod:`limen.gateway.legs`): one toward the phone (set side) and one
toward the PBX (ICP side), each with its own Call-ID, tags, branches, CSeq and route set.
A leg turns the SIP of its side into call events (try, ring, early media, connect,
update, refer, info, disconnect, fail; Timer C and the 2xx retransmission as deadline
events); :class:`CallController` maps the events of one leg onto the other as *new*
messages built from that leg's own state, and holds the policy:

- identification and routing of initial requests: :mod:`limen.gateway.routing`;
- topology hiding, identity translation (RAck, Refer-To, Referred-By, Replaces) and
  failure mapping: :mod:`limen.gateway.policy`;
- offer/answer, glare (491) and the media session: the call's
  :class:`~limen.gateway.offeranswer.OfferAnswer`;
- a PBX's digest challenges: :func:`limen.gateway.challenge.answer_icp_challenge`.

What is implemented:

- Initial requests (§8.2 as UAS on one leg, §8.1 as UAC on the other): set-side requests
  of the challenged methods are authenticated with the device's set-side credentials
  (407); the ICP-side request goes to the device's ICP with From = the device's ICP-side
  identity, and PBX challenges (401/407) are answered with the ICP-side credentials.
  PBX → phone: the request goes to the phone's binding (its observed address, over its
  own connection).
- INVITE (§13): provisional responses relayed (early dialogs, 183 early media, RFC 3262
  reliable provisionals with PRACK relayed when ``prack_support`` is on), 2xx relayed and
  retransmitted to the phone until its ACK (§13.3.1.4, RFC 6026 §8.1: T1 doubling to T2,
  given up past 64*T1 with a BYE on both legs, the other leg's 2xx ACKed first); the
  other leg's ACK is built from its dialog (§13.2.2.4) once the caller ACKs (so late
  offers work) and re-sent for 2xx retransmissions. Timer C (§16.6 item 11) cancels an
  unanswered INVITE and answers 408.
- CANCEL (§9): answered 200, the caller gets 487, the other leg is cancelled after its
  first provisional; a 2xx crossing the CANCEL is ACKed and BYEd.
- In-dialog requests (§12.2): BYE (answered at once, relayed), re-INVITE and UPDATE
  (RFC 3311; an offer while one is pending → 491, RFC 3261 §14.2 / RFC 3311 §5.2),
  PRACK (RAck translated), INFO, MESSAGE, NOTIFY, SUBSCRIBE refreshes, REFER (RFC 3515)
  with Refer-To/Replaces translated.
- Failures: ICP unreachable (transport error, timeout) → 503 + Retry-After; Timer C →
  408; unknown dialog → 481; our own request looped back → 482; Max-Forwards decremented;
  unknown user → 404, known but unregistered phone → 480; Request-URI host not allowed →
  403.

Transfer (REFER): relayed to the other leg, and the PBX does the transfer. A Refer-To
URI gets the other side's host; a ``Replaces`` in it that names a dialog of one of *our*
legs (attended transfer, RFC 3891) is rewritten to the identifiers of the paired leg.

Deviations, on purpose: requests on the ICP side always go to the ICP's address and on
the set side to the phone's observed address (an SBC never resolves names from a
dialog). 3xx responses are not relayed (their Contacts name the other side): the caller
gets 480. Forking on the ICP side collapses onto one caller-side dialog (the first To
tag wins; a 2xx from another fork is ACKed and BYEd).
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from limen.gateway.admission import CallAdmission
from limen.gateway.challenge import MAX_AUTH_ROUNDS, answer_icp_challenge, next_seq
from limen.gateway.context import GatewayContext, Side, side_of
from limen.gateway.gate import Authenticator, SetSideGate
from limen.gateway.legs import (
    Call,
    CallState,
    Connect,
    Disconnect,
    Fail,
    Forward,
    Leg,
    NoAck,
    NoAnswer,
    Ring,
    Try,
    Update,
)
from limen.gateway.media import MediaRefused
from limen.gateway.offeranswer import OfferAnswer
from limen.gateway.policy import (
    CALL_EXTENSIONS,
    CONTACT_METHODS,
    DIALOG_METHODS,
    OFFER_METHODS,
    Translation,
    end_to_end_headers,
    failure_headers,
    icp_domain,
    is_sdp,
    map_failure_status,
    other,
    relayed_max_forwards,
    terminated,
    translate_replaces,
    uri_host_allowed,
)
from limen.gateway.respond import respond
from limen.gateway.routing import (
    RETRY_AFTER_UNREACHABLE,
    BindingLookup,
    CallRouter,
    PhoneBinding,
    Refusal,
    Route,
)
from limen.sip.addressing import Destination, Source
from limen.sip.dialog import Dialog, new_call_id, new_tag
from limen.sip.errors import SipError
from limen.sip.headers import NameAddr, Via
from limen.sip.message import Request, Response
from limen.sip.transaction import (
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
    TransportError,
    create_cancel,
)

if TYPE_CHECKING:
    from limen.gateway.stack import ClientEvent
    from limen.store.schemas import DeviceCredentials

log = logging.getLogger("limen.gateway.calls")

LINGER: Final = 32.0  # seconds a finished call stays known (late retransmissions → 481)

SetSideAuthenticator = Authenticator  # :class:`limen.gateway.auth.SetSideAuth`


class CallController:
    """The gateway's call handler (:class:`limen.gateway.gateway.CallHandler`)."""

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        auth: SetSideAuthenticator | None = None,
        registrar: BindingLookup | None = None,
        timer_c: float | None = None,
        admission: CallAdmission | None = None,
    ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.registrar = registrar
        self.admission = admission if admission is not None else CallAdmission()
        self.gate = SetSideGate(ctx, auth, registrar)
        self.router = CallRouter(ctx, self.gate, registrar, self.admission, self._leg_of)
        self.translation = Translation(ctx, self._legs_of)
        self.timer_c = timer_c if timer_c is not None else ctx.settings.sip.timer_c
        self._legs: dict[tuple[str, str], Leg] = {}  # (Call-ID, our tag) → leg
        self._by_call_id: dict[str, list[Leg]] = {}
        self._forwards: dict[ServerTransaction, Forward] = {}
        self.calls_started = 0
        self.calls_failed = 0
        # Told about every call that ends, with its outcome (the console's recent calls).
        self.on_end: Callable[[dict[str, Any]], None] | None = None

    # -- the CallHandler interface -------------------------------------------------------------
    def handle(self, txn: ServerTransaction, request: Request, source: Source, side: Side) -> None:
        try:
            self._handle(txn, request, source, side)
        except SipError as exc:
            log.info("bad %s from %s:%d: %s", request.method, *source.remote, exc)
            status = getattr(exc, "status", None) or 400
            self._answer(txn, request, status, str(exc)[:80], stateless=True)

    def cancel(
        self,
        txn: ServerTransaction,
        request: Request,
        source: Source,
        cancelled: ServerTransaction | None,
    ) -> None:
        fwd = self._forwards.get(cancelled) if cancelled is not None else None
        if fwd is not None and fwd.source_leg.side is not side_of(source, self.ctx.directory):
            fwd = None  # only the side that sent the request may cancel it
        if fwd is None:
            self._answer(txn, request, 481 if cancelled is None else 200, stateless=True)
            return
        self._answer(txn, request, 200)
        call = fwd.call
        call.log.info("CANCEL from the %s side", fwd.source_leg.side)
        if not fwd.final_sent:
            self._final(fwd, fwd.request.create_response(487))
        self._cancel_target(fwd)
        if fwd is call.initial:
            self._end(call, "cancelled", bye=False)
        self._arm(call)

    def ack(self, request: Request, source: Source, side: Side) -> None:
        leg = self._legs.get((request.call_id, request.to_tag or ""))
        if leg is None or leg.side is not side:
            return
        call = leg.call
        for fwd in call.forwards:
            if (
                fwd.source_leg is leg
                and fwd.answered is not None
                and fwd.request.cseq.seq == request.cseq.seq
            ):
                fwd.stop_retransmit()
                if fwd.ack is None and not call.ended:
                    self._send_ack(fwd, request)
                self._arm(call)
                return

    def stray_response(self, response: Response, source: Source, side: Side) -> None:
        """2xx retransmissions after the INVITE client transaction ended (RFC 6026 §8.4):
        re-send our ACK; a 2xx for a call we no longer want is ACKed and BYEd."""
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        leg = self._legs.get((response.call_id, response.from_tag or ""))
        if leg is None:
            return
        for fwd in leg.call.forwards:
            same = fwd.out.cseq.seq == response.cseq.seq
            if fwd.target_leg is leg and fwd.ack is not None and same:
                self._send_stateless(leg, fwd.ack)
                return

    def close(self) -> None:
        """Stop the calls' timers (one per call on the stack's clock)."""
        for leg in self._legs.values():
            if leg.call.timer is not None:
                leg.call.timer.cancel()
                leg.call.timer = None

    def media_timeout(self, key: str) -> None:
        """The relay saw no media for the call ``key`` (``RelayMedia.on_timeout``): BYE on
        both legs, which also deletes the media session."""
        for leg in list(self._legs.values()):
            if leg.call.key == key and not leg.call.ended:
                self._end(leg.call, "media timeout", bye=True)
                return
        self.ctx.media.delete(key)  # no call left: only free the relay's ports

    @property
    def active_calls(self) -> int:
        return len({leg.call for leg in self._legs.values() if not leg.call.ended})

    def snapshot(self) -> list[dict[str, Any]]:
        """The calls and dialogs in progress, with their media statistics (the relay's
        ``query``), for the admin API: one entry per call, oldest first."""
        calls = {leg.call for leg in self._legs.values() if not leg.call.ended}
        return [self._summary(call) for call in sorted(calls, key=lambda c: c.started)]

    def _summary(self, call: Call) -> dict[str, Any]:
        legs = {
            leg.side.value: {"call_id": leg.call_id, "transport": leg.transport.value}
            for leg in call.legs()
        }
        media: dict[str, Any] = {}
        if call.kind == "INVITE":
            try:
                media = self.ctx.media.query(call.key)
            except Exception:  # a relay that lost the call: report no stats
                call.log.debug("media query failed", exc_info=True)
        from_phone = call.a is not None and call.a.side is Side.SET
        return {
            "key": call.key,
            "kind": call.kind,
            "device": call.device.setside_username,
            "direction": "from-phone" if from_phone else "to-phone",
            "state": call.state.value,
            "started": call.started,
            "legs": legs,
            "media": media,
        }

    # -- incoming requests ---------------------------------------------------------------------
    def _handle(self, txn: ServerTransaction, request: Request, source: Source, side: Side) -> None:
        to_tag = request.to_tag
        if to_tag is not None:
            leg = self._legs.get((request.call_id, to_tag))
            # In-dialog requests only inside a dialog we hold, and only from its own side
            # (a phone cannot address the PBX-side leg, nor the PBX the phone's).
            if leg is None or leg.call.ended or leg.dialog is None or leg.side is not side:
                self._answer(txn, request, 481, stateless=True)
                return
            self._in_dialog(leg, txn, request)
            return
        route = self.router.route(txn, request, source, side)
        if isinstance(route, Route):
            self._start(txn, request, source, route)
        elif route is not None:
            self._refuse(txn, request, route)

    # -- starting a call / dialog / transaction (the Try event) --------------------------------
    def _start(
        self, txn: ServerTransaction, request: Request, source: Source, route: Route
    ) -> None:
        if request.method in DIALOG_METHODS and (
            request.contact_star or len(request.contacts) != 1
        ):
            # No dialog can be built with the sender without its one Contact (§8.1.1.8,
            # §12.1.1): refuse before any state exists (an RFC 2543 INVITE, a scanner).
            self._answer(txn, request, 400, "Contact Required", stateless=True)
            return
        call = self._new_call(request, source, route)
        if request.method == "INVITE":
            admitted = self.router.admit(route.device, route.target_side)
            if isinstance(admitted, Refusal):
                self._refuse(txn, request, admitted)
                return
            call.admitted = admitted
        a, b = call.legs()
        body, offer = request.body, False
        if is_sdp(request) and request.method in OFFER_METHODS:
            try:
                body, offer = call.media.request(a.side, request.body)
            except MediaRefused as exc:
                self._release(call)
                self._answer(txn, request, exc.status, exc.reason)
                return
        out = self._initial_request(request, call, route, body)
        fwd = Forward(call, a, b, txn, request, out, offer_in_request=offer)
        call.initial = fwd
        self._index(a)
        self._index(b)
        self.calls_started += 1
        self._on_try(Try(fwd))

    def _on_try(self, event: Try) -> None:
        """A new call (dialog, transaction) from leg ``a``: its request goes out on ``b``."""
        fwd = event.forward
        a, b, request = fwd.source_leg, fwd.target_leg, fwd.request
        fwd.call.log.info(
            "%s %s from the %s side (Call-ID %s) → %s side %s (Call-ID %s)",
            *(request.method, request.uri, a.side, a.call_id),
            *(b.side, fwd.out.uri, b.call_id),
        )
        self._begin(fwd)

    def _new_call(self, request: Request, source: Source, route: Route) -> Call:
        """A call with its two legs: ``a`` toward the sender, ``b`` toward the route."""
        call_id = new_call_id()
        key = call_id[:12]
        device = route.device
        call = Call(key, request.method, device, OfferAnswer(self.ctx.media, key, device.guid))
        call.timer_callback = functools.partial(self._on_call_timer, call)
        a = Leg(
            other(route.target_side),
            call,
            request.call_id,
            new_tag(),
            Destination.reply_to(source),
            is_uas=True,
        )
        b = Leg(route.target_side, call, call_id, new_tag(), route.destination, is_uas=False)
        a.peer, b.peer = b, a
        call.a, call.b = a, b
        phone = a if a.side is Side.SET else b
        call.media.peer = phone.destination.host  # where plain set-side RTP may latch from
        return call

    def _initial_request(self, request: Request, call: Call, route: Route, body: bytes) -> Request:
        """The initial request as the ``b`` leg sends it: its own identifiers, the
        route's identities, end-to-end headers only."""
        b = call.b
        assert b is not None
        method = request.method
        fields: list[tuple[str, object]] = [
            ("Via", self._via(b)),
            ("Max-Forwards", relayed_max_forwards(request)),
            ("From", route.from_.with_tag(b.local_tag)),
            ("To", route.to),
            ("Call-ID", b.call_id),
            ("CSeq", f"{secrets.randbelow(2**16) + 1} {method}"),
        ]
        if method in CONTACT_METHODS:
            fields.append(("Contact", self._contact(b, call.device)))
        fields.extend(self.translation.headers(request, b.side, call.device, None))
        fields.extend(end_to_end_headers(request, prack=self.ctx.options.prack_support))
        fields.extend(self._user_agent())
        return Request(method, route.target_uri, fields, body)

    def _begin(self, fwd: Forward) -> None:
        """Send a forward's request on its target leg (Timer C for an INVITE)."""
        call = fwd.call
        call.forwards.append(fwd)
        self._forwards[fwd.server_txn] = fwd
        if fwd.out.method == "INVITE":
            fwd.timer_c_at = self.ctx.stack.now() + self.timer_c
        self._send(fwd)
        self._arm(call)

    def _contact(self, leg: Leg, device: DeviceCredentials) -> NameAddr:
        user: str | None = None
        if leg.side is Side.ICP:
            user = (
                self.registrar.contact_token(device)
                if self.registrar is not None
                else device.icpside_username
            )
        return self.ctx.addresses.contact(leg.side, leg.transport, user)

    def _user_agent(self) -> list[tuple[str, str]]:
        value = self.ctx.settings.sip.server_header
        return [("User-Agent", value)] if value else []

    def _via(self, leg: Leg) -> Via:
        return self.ctx.addresses.via(leg.side, leg.transport)

    # -- in-dialog requests (update, refer, info, disconnect) ----------------------------------
    def _in_dialog(self, leg: Leg, txn: ServerTransaction, request: Request) -> None:
        event = leg.receive_request(request)
        if isinstance(event, int):
            self._answer(txn, request, event)
            return
        call = leg.call
        peer = leg.peer
        if peer is None or peer.dialog is None or peer.dialog.terminated:
            if isinstance(event, Disconnect):
                self._answer(txn, request, 200)
                self._end(call, "BYE", bye=False)
            else:
                self._answer(txn, request, 481)
            return
        if isinstance(event, Disconnect):
            call.log.info("BYE from the %s side", leg.side)
            self._answer(txn, request, 200)
            self._end(call, f"BYE from the {leg.side} side", bye=True, except_leg=leg)
            return
        if (
            isinstance(event, Update)
            and is_sdp(request)
            and call.media.glare(request.method, call.reinvite_pending())
        ):
            # RFC 3261 §14.2 / RFC 3311 §5.2: an offer while ours is pending.
            self._answer(txn, request, 491, None, [("Retry-After", "1")])
            return
        self._forward_in_dialog(leg, peer, txn, request)

    def _forward_in_dialog(
        self, leg: Leg, peer: Leg, txn: ServerTransaction, request: Request
    ) -> None:
        call = leg.call
        method = request.method
        body, offer = request.body, False
        if is_sdp(request) and method in OFFER_METHODS:
            try:
                body, offer = call.media.request(leg.side, request.body)
            except MediaRefused as exc:
                self._answer(txn, request, exc.status, exc.reason)
                return
        assert peer.dialog is not None
        out = peer.dialog.create_request(method, via=self._via(peer), body=body)
        # create_request wrote its own Max-Forwards: replace it with the relayed one.
        out.remove("Max-Forwards")
        out.add("Max-Forwards", relayed_max_forwards(request))
        invite_cseq = call.invite_cseq()
        for name, value in self.translation.headers(request, peer.side, call.device, invite_cseq):
            out.add(name, value)
        for name, value in end_to_end_headers(request, prack=self.ctx.options.prack_support):
            out.add(name, value)
        for name, value in self._user_agent():
            out.add(name, value)
        fwd = Forward(call, leg, peer, txn, request, out, offer_in_request=offer)
        call.log.debug("%s relayed from the %s side", method, leg.side)
        self._begin(fwd)

    def _legs_of(self, call_id: str) -> list[Leg]:
        return self._by_call_id.get(call_id, [])

    def _leg_of(self, call_id: str, tag: str) -> Leg | None:
        return self._legs.get((call_id, tag))

    # -- sending on the target leg, and what comes back ----------------------------------------
    def _send(self, fwd: Forward) -> None:
        leg = fwd.target_leg
        try:
            fwd.client_txn = self.ctx.stack.send_request(
                fwd.out, leg.destination, lambda event: self._on_event(fwd, event)
            )
        except (SipError, OSError) as exc:
            fwd.call.log.warning("cannot send %s: %s", fwd.out.method, exc)
            self._fail(fwd, 503, "Service Unavailable")

    def _on_event(self, fwd: Forward, event: ClientEvent) -> None:
        if fwd.target_leg.side is Side.ICP and self._icp_outcome(fwd, event):
            return
        if isinstance(event, ResponseReceived):
            self._on_response(fwd, event.response)
        else:
            self._on_no_response(fwd, event)
        self._arm(fwd.call)

    def _on_no_response(self, fwd: Forward, event: TransactionTimeout | TransportError) -> None:
        timeout = isinstance(event, TransactionTimeout)
        side = fwd.target_leg.side
        what = "timeout" if timeout else "transport error"
        fwd.call.log.info("%s on the %s side for %s", what, side, fwd.out.method)
        if side is Side.ICP and fwd is fwd.call.initial:
            self._fail(fwd, 503, "Service Unavailable")
        else:
            self._fail(fwd, 408 if timeout else 503, None)

    def _icp_outcome(self, fwd: Forward, event: ClientEvent) -> bool:
        """Tell the ICP links how the target did; a call's first request that met a
        timeout, a transport error or a 503 before any response goes to the next target
        (RFC 3263 §4.3) as a new transaction. True when it was sent again."""
        links = self.ctx.links
        if links is None:
            return False
        leg = fwd.target_leg
        icp = self.ctx.directory.icp_of(fwd.call.device)
        failed = links.report_event(icp, leg.destination, event)
        if (
            not failed
            or icp is None
            or fwd is not fwd.call.initial
            or fwd.provisional
            or fwd.final_sent
            or fwd.cancel_pending
            or leg.dialog is not None
        ):
            return False
        fwd.failed_over.append(leg.destination)
        alternative = links.alternative(icp, fwd.failed_over)
        if alternative is None:
            return False
        fwd.call.log.info(
            "%s to the ICP failed at %s: failing over to %s",
            fwd.out.method,
            leg.destination,
            alternative,
        )
        leg.destination = alternative
        # The same request at another target: a new transaction, same CSeq (§4.3).
        fwd.out = fwd.out.retry(self._via(leg), seq=fwd.out.cseq.seq)
        self._send(fwd)
        return True

    def _fail(self, fwd: Forward, status: int, reason: str | None) -> None:
        call = fwd.call
        if not fwd.final_sent:
            headers = [("Retry-After", str(RETRY_AFTER_UNREACHABLE))] if status == 503 else []
            self._final(fwd, fwd.request.create_response(status, reason), extra=headers)
        if fwd is call.initial:
            self.calls_failed += 1
            self._end(call, f"failed {status}", bye=False)
        elif fwd.out.method in ("INVITE", "UPDATE") and call.media.pending is not None:
            call.media.withdrawn()

    def _on_response(self, fwd: Forward, response: Response) -> None:
        status = response.status
        if status == 100 or self._sent_again(fwd, response):
            return
        late = fwd.final_sent or fwd.call.ended
        if fwd.out.method == "INVITE" and 200 <= status < 300 and late:
            self._late_2xx(fwd, response)
            return
        if fwd.final_sent:
            return
        event = fwd.target_leg.receive_response(fwd, response, self.ctx.stack.now(), self.timer_c)
        if event is None:
            self._cancel_target(fwd)  # the provisional a pending CANCEL waited for
        elif isinstance(event, Fail):
            self._on_fail(event)
        else:
            self._on_answer(event)

    def _sent_again(self, fwd: Forward, response: Response) -> bool:
        """A challenge answered (401/407 from the ICP), or our SRTP offer refused and
        offered again as plain RTP (488/606): the request went out again."""
        status = response.status
        if status in (401, 407) and fwd.target_leg.side is Side.ICP:
            retry = answer_icp_challenge(fwd, response, self._via(fwd.target_leg))
            if retry is not None:
                fwd.out = retry
                fwd.call.log.debug("answering the ICP's %d for %s", status, retry.method)
                self._send(fwd)
                return True
        return status in (488, 606) and not fwd.final_sent and self._retry_plain(fwd)

    def _retry_plain(self, fwd: Forward) -> bool:
        """The target refused our SRTP offer (488/606): offer the same media once more as
        plain RTP/AVP (issue 5, SRTP "Prefer"; the relay refuses under "Require")."""
        out = fwd.out
        if (
            fwd.plain_retry
            or out.method != "INVITE"
            or not fwd.offer_in_request
            or not is_sdp(out)
            or b"RTP/SAVP" not in out.body
        ):
            return False
        body = fwd.call.media.plain(fwd.source_leg.side, fwd.request.body)
        if body is None:
            return False
        leg = fwd.target_leg
        retry = out.retry(self._via(leg), seq=next_seq(fwd))
        retry.body = body  # the setter keeps Content-Length right
        fwd.out = retry
        fwd.plain_retry = True
        fwd.call.log.info("the %s side refused SRTP: offering plain RTP", leg.side.value)
        self._send(fwd)
        return True

    def _on_fail(self, event: Fail) -> None:
        """A final failure from the target leg → the caller (mapped, §16.7 in spirit)."""
        fwd, response = event.forward, event.response
        call = fwd.call
        if fwd.offer_in_request:
            call.media.withdrawn()
        status = map_failure_status(response.status)
        self._final(fwd, fwd.request.create_response(status), extra=failure_headers(response))
        if fwd is call.initial:
            self.calls_failed += 1
            self._end(call, f"refused {response.status}", bye=False)

    # -- ring / early media / connect: the same on the source leg ------------------------------
    def _on_answer(self, event: Ring | Connect) -> None:
        """A 101-299 from the target leg → the same on the source leg's transaction."""
        fwd, response = event.forward, event.response
        call = fwd.call
        status = response.status
        creating = fwd is call.initial and fwd.out.method in DIALOG_METHODS
        out = self._source_response(fwd, response, creating)
        if creating and response.to_tag is not None:
            self._source_dialog(fwd, out)
        if status < 200:
            self.ctx.stack.respond(fwd.server_txn, out)
            return
        fwd.stop_timer_c()
        fwd.final_sent = True
        if fwd is call.initial and call.state is not CallState.ENDED:
            call.state = CallState.CONFIRMED
        self._forget(fwd)
        self.ctx.stack.respond(fwd.server_txn, out)
        self._answered(fwd, out)

    def _source_response(self, fwd: Forward, response: Response, creating: bool) -> Response:
        call = fwd.call
        body = self._response_body(fwd, response)
        headers: list[tuple[str, object]] = []
        if creating:
            # §12.1.1: our response copies the request's Record-Route (that side's proxies).
            headers.extend(("Record-Route", value) for value in fwd.request.get_all("record-route"))
        if fwd.out.method in CONTACT_METHODS and (creating or response.status >= 200):
            headers.append(("Contact", self._contact(fwd.source_leg, call.device)))
        headers.extend(end_to_end_headers(response, prack=self.ctx.options.prack_support))
        headers.extend(self.ctx.server_headers())
        to_tag = fwd.source_leg.local_tag if fwd.request.to_tag is None else None
        return fwd.request.create_response(
            response.status, response.reason, to_tag=to_tag, headers=headers, body=body
        )

    def _response_body(self, fwd: Forward, response: Response) -> bytes:
        """SDP of a 101-299 through the call's offer/answer (RFC 3264 roles)."""
        media = fwd.call.media
        side = fwd.target_leg.side
        status = response.status
        if not (is_sdp(response) and fwd.out.method in OFFER_METHODS):
            if status >= 200:
                media.no_sdp(side, offered=fwd.offer_in_request)
            return response.body
        settles = status >= 200 or response.get("RSeq") is not None
        return media.response(side, response.body, offered=fwd.offer_in_request, settles=settles)

    @staticmethod
    def _source_dialog(fwd: Forward, out: Response) -> None:
        """The caller-side dialog from our response to its initial request (§12.1.1)."""
        source = fwd.source_leg
        if source.dialog is None:
            source.dialog = Dialog.from_uas(fwd.request, out)
        else:
            source.dialog.response_sent(fwd.request, out)
        call = fwd.call
        if out.status < 200 and call.state is CallState.TRYING:
            call.state = CallState.EARLY

    def _answered(self, fwd: Forward, out: Response) -> None:
        """After a 2xx went to the source leg: retransmit it until the ACK (INVITE), end
        a one-transaction exchange, drop the forward."""
        call = fwd.call
        if fwd.out.method == "INVITE":
            fwd.answered = out
            config = self.ctx.stack.layer.config
            fwd.source_leg.start_retransmit(fwd, self.ctx.stack.now(), config.t1, config.t2)
            return
        if fwd is call.initial:
            if call.kind not in DIALOG_METHODS:
                # MESSAGE, OPTIONS, NOTIFY, INFO ... outside a dialog: one transaction.
                self._end(call, "transaction done", bye=False)
            return
        if fwd in call.forwards:
            call.forwards.remove(fwd)
        if fwd.out.method == "NOTIFY" and call.kind != "INVITE" and terminated(fwd.out):
            # RFC 6665 §4.1.3: a NOTIFY with "terminated" ends the subscription dialog.
            self._end(call, "subscription terminated", bye=False)

    def _late_2xx(self, fwd: Forward, response: Response) -> None:
        """A 2xx to an INVITE we no longer relay (CANCEL crossed it, Timer C, another
        fork, or a retransmission): ACK it; BYE it unless it is the call's own dialog."""
        leg = fwd.target_leg
        call = fwd.call
        same_dialog = leg.dialog is not None and response.to_tag == leg.dialog.remote_tag
        if fwd.ack is not None and same_dialog:
            self._send_stateless(leg, fwd.ack)
            return
        if not call.ended and fwd.answered is not None and same_dialog:
            return  # the caller's ACK has not come yet; we ACK when it does
        dialog = Dialog.from_uac(fwd.out, response)
        self._send_stateless(leg, dialog.create_ack(fwd.out.cseq.seq, via=self._via(leg)))
        bye = dialog.create_request("BYE", via=self._via(leg))
        call.log.info("2xx after the call was given up: ACK + BYE")
        self._send_quiet(leg, bye)

    def _send_ack(self, fwd: Forward, caller_ack: Request) -> None:
        leg = fwd.target_leg
        call = fwd.call
        if leg.dialog is None:
            return
        body = b""
        if is_sdp(caller_ack):
            body = call.media.ack(leg.side, fwd.source_leg.side, caller_ack.body)
        headers: list[tuple[str, object]] = []
        if body:
            headers.append(("Content-Type", "application/sdp"))
        ack = leg.dialog.create_ack(
            fwd.out.cseq.seq, via=self._via(leg), headers=headers, body=body
        )
        fwd.ack = ack
        self._send_stateless(leg, ack)
        if fwd is not call.initial and fwd in call.forwards:
            # Keep it a while for 2xx retransmissions, then drop it.
            self.ctx.stack.later(
                LINGER, lambda: call.forwards.remove(fwd) if fwd in call.forwards else None
            )

    def _ack_unanswered(self, fwd: Forward) -> None:
        """The caller never ACKed: the other leg's 2xx still gets its ACK (§13.2.2.4, a
        UAC ACKs every 2xx) before the BYE; later retransmissions of it are re-ACKed."""
        leg = fwd.target_leg
        if fwd.ack is not None or leg.dialog is None or not leg.dialog.confirmed:
            return
        fwd.ack = leg.dialog.create_ack(fwd.out.cseq.seq, via=self._via(leg))
        self._send_stateless(leg, fwd.ack)

    # -- the legs' deadlines: Timer C, 2xx retransmission --------------------------------------
    def _arm(self, call: Call) -> None:
        """One timer per call on the stack's clock, at its legs' next deadline."""
        deadline = None if call.ended else call.next_deadline()
        timer = call.timer
        if timer is not None:
            if not timer.cancelled and timer.when == deadline:
                return
            timer.cancel()
            call.timer = None
        if deadline is not None and call.timer_callback is not None:
            call.timer = self.ctx.stack.at(deadline, call.timer_callback)

    def _on_call_timer(self, call: Call) -> None:
        call.timer = None
        now = self.ctx.stack.now()
        for leg in call.legs():
            for event in leg.handle_timers(now):
                if call.ended:
                    return
                if isinstance(event, NoAnswer):
                    self._on_no_answer(event.forward)
                elif isinstance(event, NoAck):
                    call.log.info("no ACK for our 2xx: ending the call")
                    self._ack_unanswered(event.forward)
                    self._end(call, "no ACK", bye=True)
                elif event.forward.answered is not None:  # Resend
                    self.ctx.stack.send_stateless(
                        event.forward.answered, event.forward.server_txn.destination
                    )
        self._arm(call)

    def _on_no_answer(self, fwd: Forward) -> None:
        """Timer C (§16.6 item 11): 408 to the caller, CANCEL to the target."""
        if fwd.final_sent:
            return
        fwd.call.log.info("Timer C: no answer on the %s side", fwd.target_leg.side)
        self._final(fwd, fwd.request.create_response(408))
        self._cancel_target(fwd)
        if fwd is fwd.call.initial:
            self._end(fwd.call, "no answer", bye=False)

    def _cancel_target(self, fwd: Forward) -> None:
        txn = fwd.client_txn
        if txn is None or txn.terminated:
            return
        if not fwd.provisional:
            fwd.cancel_pending = True  # §9.1: wait for a provisional before CANCEL
            return
        fwd.cancel_pending = False
        try:
            self.ctx.stack.send_request(create_cancel(fwd.out), txn.destination, lambda e: None)
        except SipError as exc:
            fwd.call.log.info("cannot CANCEL: %s", exc)

    # -- ending (disconnect) -------------------------------------------------------------------
    def _end(self, call: Call, why: str, *, bye: bool, except_leg: Leg | None = None) -> None:
        if call.ended:
            return
        call.log.info("call ends: %s", why)
        reached = call.state
        if self.on_end is not None:
            self._report_end(call, why, reached)
        call.state = CallState.ENDED
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        for fwd in list(call.forwards):
            fwd.stop_retransmit()
            fwd.stop_timer_c()
            if not fwd.final_sent and fwd is not call.initial:
                status = 487 if fwd.out.method == "INVITE" else 481
                self._final(fwd, fwd.request.create_response(status))
        if bye:
            self._bye(call, except_leg)
        self._release(call)
        if call.kind == "INVITE":
            call.media.delete()
        self.ctx.stack.later(LINGER, lambda: self._unindex(call))

    def _bye(self, call: Call, except_leg: Leg | None) -> None:
        """BYE on the call's confirmed legs (but ``except_leg``, which hung up)."""
        for leg in call.legs():
            if leg is except_leg or leg.dialog is None:
                continue
            if leg.dialog.confirmed:
                request = leg.dialog.create_request("BYE", via=self._via(leg))
                for name, value in self._user_agent():
                    request.add(name, value)
                self._send_quiet(leg, request)
            leg.dialog.terminate()

    def _release(self, call: Call) -> None:
        """Uncount the call from admission control."""
        if call.admitted is not None:
            self.admission.release(call.device.guid, call.admitted)
            call.admitted = None

    def _report_end(self, call: Call, why: str, reached: CallState) -> None:
        summary = self._summary(call)
        summary.update(ended=time.time(), outcome=why, answered=reached is CallState.CONFIRMED)
        try:
            assert self.on_end is not None
            self.on_end(summary)
        except Exception:  # the console's bookkeeping must not break call handling
            call.log.exception("on_end hook failed")

    def _unindex(self, call: Call) -> None:
        for leg in call.legs():
            self._legs.pop((leg.call_id, leg.local_tag), None)
            legs = self._by_call_id.get(leg.call_id)
            if legs is not None and leg in legs:
                legs.remove(leg)
                if not legs:
                    del self._by_call_id[leg.call_id]
        for fwd in call.forwards:
            self._forget(fwd)
        call.dispose()

    # -- small helpers -------------------------------------------------------------------------
    def _index(self, leg: Leg) -> None:
        self._legs[(leg.call_id, leg.local_tag)] = leg
        self._by_call_id.setdefault(leg.call_id, []).append(leg)

    def _forget(self, fwd: Forward) -> None:
        if self._forwards.get(fwd.server_txn) is fwd:
            del self._forwards[fwd.server_txn]

    def _final(
        self,
        fwd: Forward,
        response: Response,
        *,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer the source transaction with a final response we make ourselves."""
        if fwd.final_sent:
            return
        fwd.final_sent = True
        fwd.stop_timer_c()
        if fwd.request.to_tag is None and response.to_tag is None:
            response = fwd.request.create_response(
                response.status, response.reason, to_tag=fwd.source_leg.local_tag
            )
        for name, value in [*extra, *self.ctx.server_headers()]:
            response.add(name, value)
        self._forget(fwd)
        try:
            self.ctx.stack.respond(fwd.server_txn, response)
        except SipError as exc:
            fwd.call.log.debug("cannot answer %d: %s", response.status, exc)

    def _refuse(self, txn: ServerTransaction, request: Request, refusal: Refusal) -> None:
        self._answer(
            txn,
            request,
            refusal.status,
            refusal.reason,
            refusal.headers,
            stateless=refusal.stateless,
        )

    def _answer(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        *,
        stateless: bool = False,
    ) -> None:
        """Answer ``request`` ourselves; ``stateless`` for answers to requests that belong
        to nothing we hold (no transaction kept, one packet per request received)."""
        try:
            respond(self.ctx, txn, request, status, reason, headers, stateless=stateless)
        except SipError as exc:
            log.debug("cannot answer %d: %s", status, exc)

    def _send_stateless(self, leg: Leg, message: Request | Response) -> None:
        self.ctx.stack.send_stateless(message, leg.destination)

    def _send_quiet(self, leg: Leg, request: Request) -> None:
        """Send a request whose outcome does not matter (BYE of an abandoned leg)."""
        try:
            self.ctx.stack.send_request(request, leg.destination, lambda e: None)
        except SipError as exc:
            log.debug("cannot send %s: %s", request.method, exc)


__all__ = [
    "CALL_EXTENSIONS",
    "LINGER",
    "MAX_AUTH_ROUNDS",
    "BindingLookup",
    "Call",
    "CallController",
    "CallState",
    "Forward",
    "Leg",
    "PhoneBinding",
    "SetSideAuthenticator",
    "end_to_end_headers",
    "icp_domain",
    "is_sdp",
    "map_failure_status",
    "relayed_max_forwards",
    "translate_replaces",
    "uri_host_allowed",
]
