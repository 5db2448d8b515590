"""The call controller: Limen as a back-to-back user agent (RFC 3261 §6 "B2BUA", RFC 7092).

Every call (and every SUBSCRIBE dialog, MESSAGE, OPTIONS to a user) is two independent
user-agent legs joined here: a :class:`Leg` toward the phone (set side) and one toward the
PBX (ICP side). Each leg has its own Call-ID, tags, branches, CSeq and route set (a
:class:`~limen.sip.dialog.Dialog`); the controller passes what one leg receives to the
other as a *new* message built from that leg's own state, copying only end-to-end
headers (:func:`end_to_end_headers`). Nothing that names one side (Via, Record-Route,
Route, Contact, Call-ID, tags, Server/User-Agent) reaches the other: topology hiding.

What is implemented, and where:

- Initial requests (§8.2 as UAS on one leg, §8.1 as UAC on the other): set-side requests
  of the challenged methods are authenticated with the device's set-side credentials
  (:class:`SetSideAuthenticator`, 407); the ICP-side request goes to the device's ICP with
  From = the device's ICP-side identity, and PBX challenges (401/407) are answered with
  the ICP-side credentials, once per challenge (§22.2/§22.3). PBX → phone: the
  Request-URI's user is Limen's per-device contact token (or a set-side username); the
  request goes to the phone's binding: its observed address, over its own connection.
- INVITE (§13): provisional responses relayed (early dialogs, 183 early media, RFC 3262
  reliable provisionals with PRACK relayed when ``prack_support`` is on), 2xx relayed and
  retransmitted to the phone until its ACK (§13.3.1.4, RFC 6026 §8.1: T1 doubling to T2,
  given up at 64*T1 with a BYE on both legs, the other leg's 2xx ACKed first); the other
  leg's ACK is built from its dialog (§13.2.2.4) once the caller ACKs (so late offers
  work) and re-sent for 2xx retransmissions. Timer C (§16.6 item 11) cancels an
  unanswered INVITE and answers 408.
- CANCEL (§9): answered 200, the caller gets 487, the other leg is cancelled after its
  first provisional; a 2xx crossing the CANCEL is ACKed and BYEd.
- In-dialog requests (§12.2): BYE (answered at once, relayed), re-INVITE and UPDATE
  (RFC 3311; hold/resume and codec changes are just new offers; an offer while one is
  pending → 491, RFC 3261 §14.2 / RFC 3311 §5.2), PRACK (RAck translated), INFO, MESSAGE,
  NOTIFY, SUBSCRIBE refreshes, REFER (RFC 3515) with Refer-To/Replaces translated.
- SDP goes through :class:`~limen.gateway.media.MediaController` offer/answer; a
  :class:`~limen.gateway.media.MediaRefused` becomes its status; ``delete`` at call end.
- Failures: ICP unreachable (transport error, timeout) → 503 + Retry-After; Timer C →
  408; unknown dialog → 481; our own Via seen again → 482; Max-Forwards decremented
  (0 is refused 483 by :func:`limen.sip.validate.check_request`); unknown user → 404,
  known but unregistered phone → 480; Request-URI host not allowed → 403.

Transfer (REFER), the choice made: the REFER is relayed to the other leg and the PBX
does the transfer. A Refer-To URI gets the other side's host; a ``Replaces`` in it that
names a dialog of one of *our* legs (attended transfer, RFC 3891) is rewritten to the
identifiers of the paired leg, so the PBX finds its own dialog. NOTIFYs of the implicit
subscription travel back in the REFER's dialog like any in-dialog request. Referred-By
toward the PBX names the device by its ICP-side identity (the only one the PBX knows).

Deviations, on purpose: requests on the ICP side always go to the ICP's address and on
the set side to the phone's observed address (the route sets are still written, so
proxies in between see what they expect; an SBC never resolves names from a dialog).
3xx responses are not relayed (their Contacts name the other side): the caller gets 480.
Forking on the ICP side collapses onto one caller-side dialog (the first To tag wins;
a 2xx from another fork is ACKed and BYEd).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote, unquote

from limen.gateway.admission import CallAdmission, Limits
from limen.gateway.context import GatewayContext, Side, icp_destination, side_of
from limen.gateway.gate import Authenticator, SetSideGate
from limen.gateway.media import MediaRefused, PassthroughMedia
from limen.sip.addressing import Destination, Source, Transport
from limen.sip.dialog import Dialog, new_call_id, new_tag
from limen.sip.digest import answer_challenge, format_credentials, select_challenge
from limen.sip.errors import SipError
from limen.sip.headers import NameAddr, Replaces, parse_replaces
from limen.sip.message import Request, Response
from limen.sip.transaction import (
    ClientTransaction,
    ResponseReceived,
    ServerTransaction,
    TransactionTimeout,
    TransportError,
    create_cancel,
)
from limen.sip.uri import SipUri, Uri

if TYPE_CHECKING:
    from limen.gateway.stack import ClientEvent
    from limen.gateway.timers import TimerHandle
    from limen.store.schemas import DeviceCredentials, IcpRecord

log = logging.getLogger("limen.gateway.calls")

# Headers that name one side, belong to one hop or one transaction, or are rebuilt per
# leg: never copied from one leg to the other (topology hiding, RFC 7092 §2).
_NOT_COPIED: Final = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "call-id",
        "from",
        "to",
        "cseq",
        "max-forwards",
        "content-length",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "authentication-info",
        "proxy-authentication-info",
        "server",
        "user-agent",
        "warning",
        "path",
        "service-route",
        "p-asserted-identity",
        "p-preferred-identity",
        "remote-party-id",
        "x-real-ip",
        "rack",  # translated (PRACK)
        "refer-to",  # translated (REFER)
        "referred-by",  # translated (REFER)
        "replaces",  # translated (INVITE with Replaces)
        "retry-after",  # set by us where we answer for the other side
    }
)
# Methods whose requests and 1xx/2xx responses carry a Contact (§8.1.1.8, RFC 6665).
_CONTACT_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Methods whose bodies are session descriptions in offer/answer (RFC 3264, 3262, 3311).
_OFFER_METHODS: Final = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})
# Initial requests that create a dialog on both legs (RFC 3261 §12, RFC 6665, RFC 3515).
_DIALOG_METHODS: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
RETRY_AFTER_UNREACHABLE: Final = 30  # seconds, in 503s for an unreachable ICP
LINGER: Final = 32.0  # seconds a finished call stays known (late retransmissions → 481)
# Option tags a call may Require that the legs relay end to end (RFC 3262, 4028, 3891,
# 4488): what the gateway passes to check_request as supported.
CALL_EXTENSIONS: Final = frozenset({"100rel", "timer", "replaces", "norefersub"})
MAX_AUTH_ROUNDS: Final = 2  # ICP challenges answered per request (a new nonce each time)


# --- what the controller needs from the registration side ---------------------------------


SetSideAuthenticator = Authenticator  # :class:`limen.gateway.auth.SetSideAuth`


class PhoneBinding(Protocol):
    """:class:`limen.gateway.registrar.Binding`."""

    @property
    def device_guid(self) -> str: ...

    @property
    def source(self) -> Source: ...

    def destination(self) -> Destination: ...

    def request_uri(self) -> Uri: ...


class BindingLookup(Protocol):
    """:class:`limen.gateway.registrar.Registrar`."""

    def binding_for(self, device_guid: str) -> PhoneBinding | None: ...

    def device_for_contact_user(self, user: str) -> DeviceCredentials | None: ...

    def contact_token(self, device: DeviceCredentials) -> str: ...


# --- pure helpers ---------------------------------------------------------------------------


def end_to_end_headers(message: Request | Response, *, prack: bool = True) -> list[tuple[str, str]]:
    """The header fields the other leg may see (see ``_NOT_COPIED``). Without PRACK
    support, ``100rel`` is removed from Supported/Require (RFC 3262 §3 then never
    applies on either leg)."""
    out: list[tuple[str, str]] = []
    for f in message.fields:
        if f.key in _NOT_COPIED:
            continue
        if not prack and f.key in ("supported", "require"):
            tags = [t.strip() for t in f.value.split(",") if t.strip()]
            kept = [t for t in tags if t.lower() != "100rel"]
            if not kept:
                continue
            out.append((f.name, ", ".join(kept)))
            continue
        out.append((f.name, f.value))
    return out


def relayed_max_forwards(message: Request) -> int:
    """§16.6 item 3: one less than received (70 when absent)."""
    value = message.max_forwards
    return 69 if value is None else max(0, value - 1)


def is_sdp(message: Request | Response) -> bool:
    if not message.body:
        return False
    try:
        ctype = message.content_type
    except SipError:
        return False
    return ctype is not None and ctype.mime == "application/sdp"


def map_failure_status(status: int) -> int:
    """The status the caller gets for a final non-2xx from the other leg: 3xx (Contacts of
    the other side) → 480; 401/407 we could not answer → 403; the rest unchanged."""
    if 300 <= status < 400:
        return 480
    if status in (401, 407):
        return 403
    return status


def uri_host_allowed(uri: Uri, allowed: Iterable[str], own: Iterable[str]) -> bool:
    """Allowed URI names: when ``allowed`` is empty everything is; else the Request-URI
    host must be one of them or one of Limen's own names/addresses."""
    names = {n.lower().strip("[]") for n in allowed if n}
    if not names:
        return True
    if not isinstance(uri, SipUri):
        return False
    host = uri.host_lower.strip("[]")
    return host in names or host in {n.lower().strip("[]") for n in own if n}


def translate_replaces(replaces: Replaces, legs: Callable[[str], Iterable[Leg]]) -> Replaces | None:
    """A Replaces naming one of our legs' dialogs, rewritten to the paired leg's (RFC 3891
    §3: to-tag / from-tag as the receiver of the INVITE sees them). None: not ours."""
    for leg in legs(replaces.call_id):
        peer = leg.peer
        if leg.dialog is None or peer is None or peer.dialog is None:
            continue
        tags = {leg.local_tag, leg.dialog.remote_tag}
        if {replaces.to_tag, replaces.from_tag} != tags:
            continue
        mapping = {leg.local_tag: peer.dialog.remote_tag, leg.dialog.remote_tag: peer.local_tag}
        to_tag, from_tag = mapping[replaces.to_tag], mapping[replaces.from_tag]
        params = replaces.params.with_("to-tag", to_tag).with_("from-tag", from_tag)
        return Replaces(peer.call_id, to_tag, from_tag, replaces.early_only, params)
    return None


# --- the model ------------------------------------------------------------------------------


class CallState(Enum):
    TRYING = "trying"  # initial request relayed, nothing back yet
    EARLY = "early"  # a provisional relayed
    CONFIRMED = "confirmed"  # 2xx relayed
    ENDED = "ended"


@dataclass(eq=False)
class Leg:
    """One user-agent leg: our dialog with the phone or with the PBX."""

    side: Side
    call: Call
    call_id: str
    local_tag: str
    destination: Destination
    is_uas: bool  # we received this leg's initial request
    dialog: Dialog | None = None
    peer: Leg | None = None

    @property
    def transport(self) -> Transport:
        return self.destination.transport


@dataclass(eq=False)
class Relay:
    """A request received on one leg and sent on the other: the two transactions."""

    call: Call
    source_leg: Leg
    target_leg: Leg
    server_txn: ServerTransaction
    request: Request  # as received
    out: Request  # as sent (the last attempt)
    client_txn: ClientTransaction | None = None
    provisional: bool = False  # a 1xx arrived (CANCEL may go now, §9.1)
    final_sent: bool = False
    answered: Response | None = None  # the 2xx relayed (INVITE)
    ack: Request | None = None  # our ACK on the target leg (INVITE 2xx)
    offer_in_request: bool = False
    auth_rounds: int = 0
    answered_nonces: set[str] = field(default_factory=set)
    plain_retry: bool = False  # our SRTP offer was refused; sent again as plain RTP/AVP
    cancel_pending: bool = False
    timer_c: TimerHandle | None = None
    retransmit: TimerHandle | None = None
    retransmit_interval: float = 0.0
    retransmit_deadline: float = 0.0
    failed_over: list[Destination] = field(default_factory=list)  # ICP targets that failed


@dataclass(eq=False)
class Call:
    """Two legs and what is in flight between them."""

    key: str
    kind: str  # the initial method: INVITE, SUBSCRIBE, REFER, MESSAGE ...
    device: DeviceCredentials
    a: Leg | None = None  # the leg the initial request came in on
    b: Leg | None = None
    state: CallState = CallState.TRYING
    initial: Relay | None = None
    relays: list[Relay] = field(default_factory=list)
    # RFC 3264 offer/answer: the side whose offer awaits an answer (None: no offer out).
    offer_from: Side | None = None
    started: float = field(default_factory=time.time)  # epoch seconds, for the API
    admitted: str | None = None  # the ICP guid it was counted under (call admission)
    log: CallLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = CallLog(log, {"call": self.key, "leg": "-"})

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED


class CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Per-call log lines: ``[call key leg] message`` (STYLE.md: Call-ID, leg)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra.get('call')}] {msg}", kwargs


# --- the controller ---------------------------------------------------------------------------


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
        self.timer_c = timer_c if timer_c is not None else ctx.settings.sip.timer_c
        self._legs: dict[tuple[str, str], Leg] = {}  # (Call-ID, our tag) → leg
        self._by_call_id: dict[str, list[Leg]] = {}
        self._relays: dict[ServerTransaction, Relay] = {}
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
        relay = self._relays.get(cancelled) if cancelled is not None else None
        if relay is not None and relay.source_leg.side is not side_of(source, self.ctx.directory):
            relay = None  # only the side that sent the request may cancel it
        if relay is None:
            self._answer(txn, request, 481 if cancelled is None else 200, stateless=True)
            return
        self._answer(txn, request, 200)
        call = relay.call
        call.log.info("CANCEL from the %s side", relay.source_leg.side)
        if not relay.final_sent:
            self._final(relay, relay.request.create_response(487))
        self._cancel_target(relay)
        if relay is call.initial:
            self._end(call, "cancelled", bye=False)

    def ack(self, request: Request, source: Source, side: Side) -> None:
        leg = self._legs.get((request.call_id, request.to_tag or ""))
        if leg is None or leg.side is not side:
            return
        call = leg.call
        for relay in call.relays:
            if (
                relay.source_leg is leg
                and relay.answered is not None
                and relay.request.cseq.seq == request.cseq.seq
            ):
                self._stop_retransmit(relay)
                if relay.ack is None and not call.ended:
                    self._send_ack(relay, request)
                return

    def stray_response(self, response: Response, source: Source, side: Side) -> None:
        """2xx retransmissions after the INVITE client transaction ended (RFC 6026 §8.4):
        re-send our ACK; a 2xx for a call we no longer want is ACKed and BYEd."""
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        leg = self._legs.get((response.call_id, response.from_tag or ""))
        if leg is None:
            return
        for relay in leg.call.relays:
            same = relay.out.cseq.seq == response.cseq.seq
            if relay.target_leg is leg and relay.ack is not None and same:
                self._send_stateless(leg, relay.ack)
                return

    def close(self) -> None:
        """Stop the calls' timers (they live on the stack's clock, :meth:`_later`)."""
        for relay in self._relays.values():
            self._stop_timers(relay)

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
        out: list[dict[str, Any]] = []
        for call in sorted(calls, key=lambda c: c.started):
            out.append(self._summary(call))
        return out

    def _summary(self, call: Call) -> dict[str, Any]:
        legs = {
            leg.side.value: {"call_id": leg.call_id, "transport": leg.transport.value}
            for leg in (call.a, call.b)
            if leg is not None
        }
        media: dict[str, Any] = {}
        if call.kind == "INVITE":
            try:
                media = self.ctx.media.query(call.key)
            except Exception:  # a relay that lost the call: report no stats
                call.log.debug("media query failed", exc_info=True)
        return {
            "key": call.key,
            "kind": call.kind,
            "device": call.device.setside_username,
            "direction": "from-phone"
            if call.a is not None and call.a.side is Side.SET
            else "to-phone",
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
        if side is Side.SET:
            self._from_phone(txn, request, source)
        else:
            self._from_pbx(txn, request, source)

    def _looped(self, request: Request, device: DeviceCredentials) -> bool:
        """Loop detection (§16.3 item 4 in a B2BUA's terms): the request is one we sent on
        an ICP leg (our Call-ID and From tag, our Via still in it) coming back for the very
        device that made it. A proxying PBX legitimately returns our Call-ID for *another*
        phone (phone → PBX → phone, a spiral), so the device decides."""
        leg = self._legs.get((request.call_id, request.from_tag or ""))
        if leg is None or leg.is_uas or leg.side is not Side.ICP:
            return False
        ours = {self.ctx.addresses.icp_host.lower().strip("[]")}
        own_via = any(v.host.strip("[]").lower() in ours for v in request.via)
        return own_via and leg.call.device.guid == device.guid

    def _from_phone(self, txn: ServerTransaction, request: Request, source: Source) -> None:
        ctx = self.ctx
        method = request.method
        options = ctx.options
        own = (ctx.settings.public_fqdn, ctx.settings.public_ip, ctx.addresses.set_host)
        if not uri_host_allowed(request.uri, options.allowed_uri_names, own):
            self._answer(txn, request, 403, "Domain Not Allowed", stateless=True)
            return
        device = self.gate.admit(txn, request, source)
        if device is None:
            return
        if method == "INVITE" and not options.prack_support and "100rel" in request.require:
            self._answer(txn, request, 420, None, [("Unsupported", "100rel")])
            return
        icp = ctx.directory.icp_of(device)
        if icp is None:
            self._answer(txn, request, 503, "No ICP For Device")
            return
        user = request.uri.user if isinstance(request.uri, SipUri) else None
        if user is None:
            self._answer(txn, request, 404)
            return
        domain = icp_domain(icp)
        target = SipUri(domain, "sip", user)
        destination = icp_destination(icp, ctx.links, size=len(request.body) + 1024)
        if destination is None:  # a name that has not resolved (yet)
            self._answer(
                txn,
                request,
                503,
                "ICP Unreachable",
                [("Retry-After", str(RETRY_AFTER_UNREACHABLE))],
            )
            return
        from_ = NameAddr(SipUri(domain, "sip", device.icpside_username), request.from_.display_name)
        to = NameAddr(target, request.to.display_name)
        self._start(txn, request, source, device, Side.ICP, destination, target, from_, to)

    def _from_pbx(self, txn: ServerTransaction, request: Request, source: Source) -> None:
        ctx = self.ctx
        user = request.uri.user_unescaped if isinstance(request.uri, SipUri) else None
        device = None
        if user is not None and self.registrar is not None:
            device = self.registrar.device_for_contact_user(user)
        if device is None and user is not None:
            device = ctx.directory.device_by_setside(user)
        if device is None and user is not None:
            device = next(
                (d for d in ctx.directory.devices.values() if d.icpside_username == user), None
            )
        if device is None:
            self._answer(txn, request, 404)
            return
        if self._looped(request, device):
            self._answer(txn, request, 482)
            return
        binding = self.registrar.binding_for(device.guid) if self.registrar is not None else None
        if binding is None:
            self._answer(txn, request, 480, "Not Registered")
            return
        host = ctx.addresses.set_host
        caller = request.from_
        caller_user = caller.uri.user if isinstance(caller.uri, SipUri) else None
        from_ = NameAddr(SipUri(_bracket(host), "sip", caller_user), caller.display_name)
        to = NameAddr(
            SipUri(_bracket(host), "sip", device.setside_username), request.to.display_name
        )
        self._start(
            txn,
            request,
            source,
            device,
            Side.SET,
            binding.destination(),
            binding.request_uri(),
            from_,
            to,
        )

    # -- starting a call / dialog / transaction relay ------------------------------------------
    def _start(
        self,
        txn: ServerTransaction,
        request: Request,
        source: Source,
        device: DeviceCredentials,
        target_side: Side,
        destination: Destination,
        target_uri: Uri,
        from_: NameAddr,
        to: NameAddr,
    ) -> None:
        ctx = self.ctx
        if request.method in _DIALOG_METHODS and (
            request.contact_star or len(request.contacts) != 1
        ):
            # No dialog can be built with the sender without its one Contact (§8.1.1.8,
            # §12.1.1): refuse before any state exists (an RFC 2543 INVITE, a scanner).
            self._answer(txn, request, 400, "Contact Required", stateless=True)
            return
        call_id = new_call_id()
        call = Call(key=call_id[:12], kind=request.method, device=device)
        if request.method == "INVITE" and not self._admit(call, target_side, txn, request):
            return
        a = Leg(
            side=_other(target_side),
            call=call,
            call_id=request.call_id,
            local_tag=new_tag(),
            destination=Destination.reply_to(source),
            is_uas=True,
        )
        b = Leg(
            side=target_side,
            call=call,
            call_id=call_id,
            local_tag=new_tag(),
            destination=destination,
            is_uas=False,
        )
        a.peer, b.peer = b, a
        call.a, call.b = a, b
        body = request.body
        offer = False
        if is_sdp(request) and request.method in _OFFER_METHODS:
            try:
                body = ctx.media.offer(
                    call.key, a.side, request.body, device=device.guid, peer=_phone_host(call)
                )
            except MediaRefused as exc:
                if call.admitted is not None:
                    self.admission.release(device.guid, call.admitted)
                self._answer(txn, request, exc.status, exc.reason)
                return
            offer = True
            call.offer_from = a.side
        method = request.method
        fields: list[tuple[str, object]] = [
            ("Via", ctx.addresses.via(b.side, b.transport)),
            ("Max-Forwards", relayed_max_forwards(request)),
            ("From", from_.with_tag(b.local_tag)),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{secrets.randbelow(2**16) + 1} {method}"),
        ]
        if method in _CONTACT_METHODS:
            fields.append(("Contact", self._contact(b, device)))
        fields.extend(self._translated_headers(request, b))
        fields.extend(end_to_end_headers(request, prack=ctx.options.prack_support))
        fields.extend(self._user_agent())
        out = Request(method, target_uri, fields, body)
        relay = Relay(call, a, b, txn, request, out, offer_in_request=offer)
        call.initial = relay
        self._index(a)
        self._index(b)
        call.relays.append(relay)
        self._relays[txn] = relay
        self.calls_started += 1
        call.log.info(
            "%s %s from the %s side (Call-ID %s) → %s side %s (Call-ID %s)",
            method,
            request.uri,
            a.side,
            a.call_id,
            b.side,
            target_uri,
            b.call_id,
        )
        if method == "INVITE":
            relay.timer_c = self._later(self.timer_c, lambda: self._on_timer_c(relay))
        self._send(relay)

    def _admit(
        self, call: Call, target_side: Side, txn: ServerTransaction, request: Request
    ) -> bool:
        """Call admission control (:mod:`limen.gateway.admission`): per-device limits for
        calls a phone makes, ICP and total limits for every call; 503 when refused."""
        options = self.ctx.options
        device = call.device
        icp = self.ctx.directory.icp_of(device)
        icp_key = icp.guid if icp is not None else device.icp
        from_phone = target_side is Side.ICP
        per_device = (
            device.max_calls if device.max_calls is not None else options.max_calls_per_device
        )
        attempts = (
            device.max_call_attempts
            if device.max_call_attempts is not None
            else options.max_call_attempts_per_minute
        )
        limits = Limits(
            per_device=per_device if from_phone else 0,
            attempts_per_minute=attempts if from_phone else 0,
            per_icp=options.max_calls_per_icp,
            total=options.max_calls,
            media_kbps=options.max_media_kbps,
        )
        refused = self.admission.admit(device.guid, icp_key, time.time(), limits)
        if refused is not None:
            log.info(
                "call from %s refused: %s limit (%s)",
                device.setside_username,
                refused,
                "phone" if from_phone else "PBX",
            )
            self._answer(txn, request, 503, "Call Limit Reached", [("Retry-After", "10")])
            return False
        call.admitted = icp_key
        return True

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

    # -- in-dialog requests --------------------------------------------------------------------
    def _in_dialog(self, leg: Leg, txn: ServerTransaction, request: Request) -> None:
        call = leg.call
        dialog = leg.dialog
        peer = leg.peer
        assert dialog is not None
        refused = dialog.receive_request(request)
        if refused is not None:
            self._answer(txn, request, refused)
            return
        method = request.method
        if peer is None or peer.dialog is None or peer.dialog.terminated:
            if method == "BYE":
                self._answer(txn, request, 200)
                self._end(call, "BYE", bye=False)
            else:
                self._answer(txn, request, 481)
            return
        if method == "BYE":
            call.log.info("BYE from the %s side", leg.side)
            self._answer(txn, request, 200)
            self._end(call, f"BYE from the {leg.side} side", bye=True, except_leg=leg)
            return
        if method in ("INVITE", "UPDATE") and is_sdp(request):
            pending_invite = any(
                r.out.method == "INVITE" and not r.final_sent and r is not call.initial
                for r in call.relays
            )
            if call.offer_from is not None or (method == "INVITE" and pending_invite):
                # RFC 3261 §14.2 / RFC 3311 §5.2: an offer while ours is pending.
                self._answer(txn, request, 491, None, [("Retry-After", "1")])
                return
        body = request.body
        offer = False
        if is_sdp(request) and method in _OFFER_METHODS:
            try:
                if call.offer_from is not None and call.offer_from is not leg.side:
                    body = self.ctx.media.answer(
                        call.key, leg.side, request.body, device=call.device.guid
                    )
                    call.offer_from = None
                else:
                    body = self.ctx.media.offer(
                        call.key,
                        leg.side,
                        request.body,
                        device=call.device.guid,
                        peer=_phone_host(call),
                    )
                    call.offer_from = leg.side
                    offer = True
            except MediaRefused as exc:
                self._answer(txn, request, exc.status, exc.reason)
                return
        headers: list[tuple[str, object]] = [("Max-Forwards", relayed_max_forwards(request))]
        headers.extend(self._translated_headers(request, peer))
        headers.extend(end_to_end_headers(request, prack=self.ctx.options.prack_support))
        headers.extend(self._user_agent())
        out = peer.dialog.create_request(
            method, via=self.ctx.addresses.via(peer.side, peer.transport), body=body
        )
        # create_request wrote its own Max-Forwards: replace it with the relayed one.
        out.remove("Max-Forwards")
        for name, value in headers:
            out.add(name, value)
        relay = Relay(call, leg, peer, txn, request, out, offer_in_request=offer)
        call.relays.append(relay)
        self._relays[txn] = relay
        call.log.debug("%s relayed from the %s side", method, leg.side)
        if method == "INVITE":
            relay.timer_c = self._later(self.timer_c, lambda: self._on_timer_c(relay))
        self._send(relay)

    def _translated_headers(self, request: Request, target: Leg) -> list[tuple[str, object]]:
        """RAck (PRACK), Refer-To / Referred-By (REFER), Replaces (INVITE): rewritten to
        the target leg's identifiers."""
        out: list[tuple[str, object]] = []
        rack = request.rack
        if rack is not None:
            relay = self._initial_invite_relay(target.call)
            cseq = relay.out.cseq.seq if relay is not None else rack.cseq
            out.append(("RAck", f"{rack.rseq} {cseq} {rack.method}"))
        refer_to = request.refer_to
        if refer_to is not None:
            out.append(("Refer-To", self._translate_refer_to(refer_to, target)))
        referred_by = request.referred_by
        if referred_by is not None:
            out.append(("Referred-By", self._referred_by(referred_by, target)))
        replaces = request.replaces
        if replaces is not None:
            mapped = translate_replaces(replaces, self._legs_of)
            out.append(("Replaces", mapped if mapped is not None else replaces))
        return out

    def _initial_invite_relay(self, call: Call) -> Relay | None:
        relay = call.initial
        return relay if relay is not None and relay.out.method == "INVITE" else None

    def _translate_refer_to(self, refer_to: NameAddr, target: Leg) -> NameAddr:
        uri = refer_to.uri
        if not isinstance(uri, SipUri):
            return refer_to
        headers = uri.headers
        if headers:
            parts = []
            for part in headers.split("&"):
                name, _, value = part.partition("=")
                if name.lower() == "replaces":
                    try:
                        parsed = parse_replaces(unquote(value))
                    except SipError:
                        parts.append(part)
                        continue
                    mapped = translate_replaces(parsed, self._legs_of)
                    if mapped is not None:
                        part = f"{name}={quote(str(mapped), safe='')}"
                parts.append(part)
            headers = "&".join(parts)
        host, port = self._host_for(target)
        rehosted = SipUri(host, uri.scheme, uri.user, None, port, uri.params, headers)
        return refer_to.with_uri(rehosted)

    def _rehost(self, addr: NameAddr, target: Leg) -> NameAddr:
        uri = addr.uri
        if not isinstance(uri, SipUri):
            return addr
        host, port = self._host_for(target)
        return addr.with_uri(SipUri(host, uri.scheme, uri.user, None, port, uri.params))

    def _referred_by(self, addr: NameAddr, target: Leg) -> NameAddr:
        """Referred-By (RFC 3892) names the referrer. Toward the PBX the referrer is the
        device, known there only by its ICP-side identity; toward the phone, the device's
        own ICP-side identity reads as its set-side one. Other users keep their name."""
        rehosted = self._rehost(addr, target)
        uri = rehosted.uri
        if not isinstance(uri, SipUri):
            return rehosted
        device = target.call.device
        if target.side is Side.ICP:
            user: str | None = device.icpside_username
        elif uri.user == device.icpside_username:
            user = device.setside_username
        else:
            return rehosted
        return rehosted.with_uri(uri._replace(user=user))

    def _host_for(self, leg: Leg) -> tuple[str, int | None]:
        if leg.side is Side.ICP:
            icp = self.ctx.directory.icp_of(leg.call.device)
            if icp is not None:
                return icp_domain(icp), None
            return _bracket(self.ctx.addresses.icp_host), None
        return _bracket(self.ctx.addresses.set_host), None

    def _legs_of(self, call_id: str) -> list[Leg]:
        return self._by_call_id.get(call_id, [])

    # -- sending on the target leg -------------------------------------------------------------
    def _send(self, relay: Relay) -> None:
        leg = relay.target_leg
        try:
            relay.client_txn = self.ctx.stack.send_request(
                relay.out, leg.destination, lambda event: self._on_event(relay, event)
            )
        except (SipError, OSError) as exc:
            relay.call.log.warning("cannot send %s: %s", relay.out.method, exc)
            self._fail(relay, 503, "Service Unavailable")

    def _on_event(self, relay: Relay, event: ClientEvent) -> None:
        if relay.target_leg.side is Side.ICP and self._icp_outcome(relay, event):
            return
        if isinstance(event, ResponseReceived):
            self._on_response(relay, event.response)
            return
        what = "timeout" if isinstance(event, TransactionTimeout) else "transport error"
        relay.call.log.info(
            "%s on the %s side for %s", what, relay.target_leg.side, relay.out.method
        )
        if isinstance(event, TransactionTimeout | TransportError):
            if relay.target_leg.side is Side.ICP and relay is relay.call.initial:
                self._fail(relay, 503, "Service Unavailable")
            else:
                self._fail(relay, 408 if isinstance(event, TransactionTimeout) else 503, None)

    def _icp_outcome(self, relay: Relay, event: ClientEvent) -> bool:
        """Tell the ICP links how the target did; a call's first request that met a
        timeout, a transport error or a 503 before any response goes to the next target
        (RFC 3263 §4.3) as a new transaction. True when it was sent again."""
        links = self.ctx.links
        if links is None:
            return False
        leg = relay.target_leg
        icp = self.ctx.directory.icp_of(relay.call.device)
        failed = links.report_event(icp, leg.destination, event)
        if (
            not failed
            or icp is None
            or relay is not relay.call.initial
            or relay.provisional
            or relay.final_sent
            or relay.cancel_pending
            or leg.dialog is not None
        ):
            return False
        relay.failed_over.append(leg.destination)
        alternative = links.alternative(icp, relay.failed_over)
        if alternative is None:
            return False
        relay.call.log.info(
            "%s to the ICP failed at %s: failing over to %s",
            relay.out.method,
            leg.destination,
            alternative,
        )
        leg.destination = alternative
        retry = relay.out.copy()
        retry.set("Via", self.ctx.addresses.via(leg.side, leg.transport))
        relay.out = retry
        self._send(relay)
        return True

    def _fail(self, relay: Relay, status: int, reason: str | None) -> None:
        call = relay.call
        if not relay.final_sent:
            headers = [("Retry-After", str(RETRY_AFTER_UNREACHABLE))] if status == 503 else []
            self._final(relay, relay.request.create_response(status, reason), extra=headers)
        if relay is call.initial:
            self.calls_failed += 1
            self._end(call, f"failed {status}", bye=False)
        elif relay.out.method in ("INVITE", "UPDATE") and call.offer_from is not None:
            call.offer_from = None

    def _on_response(self, relay: Relay, response: Response) -> None:
        status = response.status
        call = relay.call
        leg = relay.target_leg
        if status == 100:
            return
        if (
            status in (401, 407)
            and leg.side is Side.ICP
            and self._answer_challenge(relay, response)
        ):
            return
        if status in (488, 606) and not relay.final_sent and self._retry_plain(relay):
            return
        if (
            relay.out.method == "INVITE"
            and 200 <= status < 300
            and (relay.final_sent or call.ended)
        ):
            self._late_2xx(relay, response)
            return
        if relay.final_sent:
            return
        if status < 200:
            relay.provisional = True
            if relay.cancel_pending:
                self._cancel_target(relay)
                return
            if relay.timer_c is not None and relay.out.method == "INVITE":
                relay.timer_c.cancel()
                relay.timer_c = self._later(self.timer_c, lambda: self._on_timer_c(relay))
        self._update_target_dialog(relay, response)
        if status >= 300:
            status = map_failure_status(status)
            if relay.offer_in_request:
                call.offer_from = None
            self._final(
                relay, relay.request.create_response(status), extra=self._failure_headers(response)
            )
            if relay is call.initial:
                self.calls_failed += 1
                self._end(call, f"refused {response.status}", bye=False)
            return
        self._relay_response(relay, response)

    def _failure_headers(self, response: Response) -> list[tuple[str, str]]:
        """What a relayed failure keeps (Warning names the other side's host: dropped)."""
        out = []
        for name in ("Retry-After", "Reason", "Unsupported", "Min-SE", "Allow"):
            value = response.get(name)
            if value is not None:
                out.append((name, value))
        return out

    def _response_body(self, relay: Relay, response: Response) -> bytes:
        """SDP of a 101-299 through the media controller (RFC 3264 roles, see module)."""
        call = relay.call
        side = relay.target_leg.side
        status = response.status
        if not (is_sdp(response) and relay.out.method in _OFFER_METHODS):
            if status >= 200 and relay.offer_in_request and call.offer_from is not side:
                call.offer_from = None  # answered without SDP: no offer is pending now
            return response.body
        media = self.ctx.media
        try:
            if relay.offer_in_request:
                body = media.answer(call.key, side, response.body, device=call.device.guid)
                if status >= 200 or response.get("RSeq") is not None:
                    call.offer_from = None
                return body
            # A late offer (INVITE without SDP): the answer comes in the ACK or PRACK.
            body = media.offer(
                call.key, side, response.body, device=call.device.guid, peer=_phone_host(call)
            )
            call.offer_from = side
            return body
        except MediaRefused as exc:
            call.log.warning("media refused the session: %s", exc.reason)
            return b""

    def _answer_challenge(self, relay: Relay, response: Response) -> bool:
        """Answer a PBX challenge with the device's ICP-side credentials: once per nonce,
        at most MAX_AUTH_ROUNDS times per request (§22.2, RFC 7616 §3.3 stale)."""
        challenges = (
            response.proxy_authenticate if response.status == 407 else response.www_authenticate
        )
        challenge = select_challenge(challenges)
        if challenge is None or relay.auth_rounds >= MAX_AUTH_ROUNDS:
            return False
        if challenge.nonce in relay.answered_nonces and not challenge.stale:
            return False
        device = relay.call.device
        out = relay.out
        seq = out.cseq.seq + 1
        leg = relay.target_leg
        if leg.dialog is not None and leg.dialog.local_seq is not None:
            seq = max(seq, leg.dialog.local_seq + 1)
            leg.dialog.local_seq = seq
        retry = out.copy()
        retry.set("CSeq", f"{seq} {out.method}")
        retry.set("Via", self.ctx.addresses.via(leg.side, leg.transport))
        credentials = answer_challenge(
            challenge,
            method=out.method,
            uri=str(out.uri),
            username=device.icpside_username,
            password=device.icpside_password,
            body=out.body,
        )
        header = "Proxy-Authorization" if response.status == 407 else "Authorization"
        retry.remove(header)
        retry.add(header, format_credentials(credentials))
        relay.out = retry
        relay.auth_rounds += 1
        relay.answered_nonces.add(challenge.nonce)
        relay.call.log.debug("answering the ICP's %d for %s", response.status, out.method)
        self._send(relay)
        return True

    def _retry_plain(self, relay: Relay) -> bool:
        """The target refused our SRTP offer (488/606): offer the same media once more as
        plain RTP/AVP (issue 5, SRTP "Prefer"; the relay refuses under "Require")."""
        out = relay.out
        if (
            relay.plain_retry
            or out.method != "INVITE"
            or not relay.offer_in_request
            or not is_sdp(out)
            or b"RTP/SAVP" not in out.body
            or isinstance(self.ctx.media, PassthroughMedia)
        ):
            return False
        call = relay.call
        try:
            body = self.ctx.media.offer(  # type: ignore[call-arg]
                call.key,
                relay.source_leg.side,
                relay.request.body,
                device=call.device.guid,
                plain=True,
                peer=_phone_host(call),
            )
        except MediaRefused:
            return False
        leg = relay.target_leg
        seq = out.cseq.seq + 1
        if leg.dialog is not None and leg.dialog.local_seq is not None:
            seq = max(seq, leg.dialog.local_seq + 1)
            leg.dialog.local_seq = seq
        retry = out.copy()
        retry.set("CSeq", f"{seq} INVITE")
        retry.set("Via", self.ctx.addresses.via(leg.side, leg.transport))
        retry.body = body
        retry.set("Content-Length", str(len(body)))
        relay.out = retry
        relay.plain_retry = True
        call.log.info("the %s side refused SRTP: offering plain RTP", leg.side.value)
        self._send(relay)
        return True

    def _update_target_dialog(self, relay: Relay, response: Response) -> None:
        """Dialog state of the target leg from a response to what we sent on it."""
        leg = relay.target_leg
        status = response.status
        creating = relay is relay.call.initial and relay.out.method in _DIALOG_METHODS
        if creating and 101 <= status < 300 and response.to_tag is not None:
            dialog = leg.dialog
            if dialog is None or (dialog.early and dialog.remote_tag != response.to_tag):
                leg.dialog = Dialog.from_uac(relay.out, response)
            else:
                dialog.receive_response(relay.out, response)
        elif leg.dialog is not None:
            leg.dialog.receive_response(relay.out, response)

    def _relay_response(self, relay: Relay, response: Response) -> None:
        """A 101-299 from the target leg → the same on the source leg's transaction."""
        call = relay.call
        source = relay.source_leg
        status = response.status
        body = self._response_body(relay, response)
        headers: list[tuple[str, object]] = []
        dialog_creating = relay is call.initial and relay.out.method in _DIALOG_METHODS
        if dialog_creating:
            # §12.1.1: our response copies the request's Record-Route (that side's proxies).
            headers.extend(
                ("Record-Route", value) for value in relay.request.get_all("record-route")
            )
        if relay.out.method in _CONTACT_METHODS and (dialog_creating or status >= 200):
            headers.append(("Contact", self._contact(source, call.device)))
        headers.extend(end_to_end_headers(response, prack=self.ctx.options.prack_support))
        headers.extend(self.ctx.server_headers())
        to_tag = source.local_tag if relay.request.to_tag is None else None
        out = relay.request.create_response(
            status, response.reason, to_tag=to_tag, headers=headers, body=body
        )
        if dialog_creating and response.to_tag is not None:
            if source.dialog is None:
                source.dialog = Dialog.from_uas(relay.request, out)
            else:
                source.dialog.response_sent(relay.request, out)
            if status < 200 and call.state is CallState.TRYING:
                call.state = CallState.EARLY
        if status < 200:
            self.ctx.stack.respond(relay.server_txn, out)
            return
        if relay.timer_c is not None:
            relay.timer_c.cancel()
            relay.timer_c = None
        relay.final_sent = True
        if relay is call.initial and call.state is not CallState.ENDED:
            call.state = CallState.CONFIRMED
        self._forget_relay(relay)
        self.ctx.stack.respond(relay.server_txn, out)
        if relay.out.method == "INVITE":
            relay.answered = out
            self._start_retransmit(relay)
            return
        if relay is call.initial:
            if call.kind not in _DIALOG_METHODS:
                # MESSAGE, OPTIONS, NOTIFY, INFO ... outside a dialog: one transaction.
                self._end(call, "transaction done", bye=False)
            return
        if relay in call.relays:
            call.relays.remove(relay)
        if relay.out.method == "NOTIFY" and call.kind != "INVITE" and _terminated(relay.out):
            # RFC 6665 §4.1.3: a NOTIFY with "terminated" ends the subscription dialog.
            self._end(call, "subscription terminated", bye=False)

    def _late_2xx(self, relay: Relay, response: Response) -> None:
        """A 2xx to an INVITE we no longer relay (CANCEL crossed it, Timer C, another
        fork, or a retransmission): ACK it; BYE it unless it is the call's own dialog."""
        leg = relay.target_leg
        call = relay.call
        same_dialog = leg.dialog is not None and response.to_tag == leg.dialog.remote_tag
        if relay.ack is not None and same_dialog:
            self._send_stateless(leg, relay.ack)
            return
        if (
            not call.ended
            and relay.answered is not None
            and leg.dialog is not None
            and response.to_tag == leg.dialog.remote_tag
        ):
            return  # the caller's ACK has not come yet; we ACK when it does
        dialog = Dialog.from_uac(relay.out, response)
        via = self.ctx.addresses.via(leg.side, leg.transport)
        self._send_stateless(leg, dialog.create_ack(relay.out.cseq.seq, via=via))
        bye = dialog.create_request("BYE", via=self.ctx.addresses.via(leg.side, leg.transport))
        call.log.info("2xx after the call was given up: ACK + BYE")
        self._send_quiet(leg, bye)

    def _send_ack(self, relay: Relay, caller_ack: Request) -> None:
        leg = relay.target_leg
        call = relay.call
        if leg.dialog is None:
            return
        body = b""
        if is_sdp(caller_ack) and call.offer_from is leg.side:
            try:
                body = self.ctx.media.answer(
                    call.key, relay.source_leg.side, caller_ack.body, device=call.device.guid
                )
            except MediaRefused:
                body = b""
            call.offer_from = None
        headers: list[tuple[str, object]] = []
        if body:
            headers.append(("Content-Type", "application/sdp"))
        ack = leg.dialog.create_ack(
            relay.out.cseq.seq,
            via=self.ctx.addresses.via(leg.side, leg.transport),
            headers=headers,
            body=body,
        )
        relay.ack = ack
        self._send_stateless(leg, ack)
        if relay is not call.initial and relay in call.relays:
            # Keep it a while for 2xx retransmissions, then drop it.
            self._later(LINGER, lambda: call.relays.remove(relay) if relay in call.relays else None)

    # -- 2xx retransmission to the caller (§13.3.1.4, RFC 6026 §8.1) ---------------------------
    def _start_retransmit(self, relay: Relay) -> None:
        if relay.source_leg.transport.reliable:
            return
        t1 = self.ctx.stack.layer.config.t1
        relay.retransmit_interval = t1
        relay.retransmit_deadline = self.ctx.stack.now() + 64 * t1
        relay.retransmit = self._later(t1, lambda: self._retransmit(relay))

    def _retransmit(self, relay: Relay) -> None:
        relay.retransmit = None
        if relay.answered is None or relay.call.ended:
            return
        stack = self.ctx.stack
        if stack.now() >= relay.retransmit_deadline:
            relay.call.log.info("no ACK for our 2xx: ending the call")
            self._ack_unanswered(relay)
            self._end(relay.call, "no ACK", bye=True)
            return
        stack.send_stateless(relay.answered, relay.server_txn.destination)
        relay.retransmit_interval = min(2 * relay.retransmit_interval, stack.layer.config.t2)
        relay.retransmit = self._later(relay.retransmit_interval, lambda: self._retransmit(relay))

    def _ack_unanswered(self, relay: Relay) -> None:
        """The caller never ACKed: the other leg's 2xx still gets its ACK (§13.2.2.4, a
        UAC ACKs every 2xx) before the BYE; later retransmissions of it are re-ACKed."""
        leg = relay.target_leg
        if relay.ack is not None or leg.dialog is None or not leg.dialog.confirmed:
            return
        via = self.ctx.addresses.via(leg.side, leg.transport)
        relay.ack = leg.dialog.create_ack(relay.out.cseq.seq, via=via)
        self._send_stateless(leg, relay.ack)

    def _stop_retransmit(self, relay: Relay) -> None:
        if relay.retransmit is not None:
            relay.retransmit.cancel()
            relay.retransmit = None

    def _stop_timers(self, relay: Relay) -> None:
        self._stop_retransmit(relay)
        if relay.timer_c is not None:
            relay.timer_c.cancel()
            relay.timer_c = None

    # -- Timer C, CANCEL -----------------------------------------------------------------------
    def _on_timer_c(self, relay: Relay) -> None:
        relay.timer_c = None
        if relay.final_sent:
            return
        relay.call.log.info("Timer C: no answer on the %s side", relay.target_leg.side)
        self._final(relay, relay.request.create_response(408))
        self._cancel_target(relay)
        if relay is relay.call.initial:
            self._end(relay.call, "no answer", bye=False)

    def _cancel_target(self, relay: Relay) -> None:
        txn = relay.client_txn
        if txn is None or txn.terminated:
            return
        if not relay.provisional:
            relay.cancel_pending = True  # §9.1: wait for a provisional before CANCEL
            return
        relay.cancel_pending = False
        try:
            self.ctx.stack.send_request(create_cancel(relay.out), txn.destination, lambda e: None)
        except SipError as exc:
            relay.call.log.info("cannot CANCEL: %s", exc)

    # -- ending --------------------------------------------------------------------------------
    def _end(self, call: Call, why: str, *, bye: bool, except_leg: Leg | None = None) -> None:
        if call.ended:
            return
        call.log.info("call ends: %s", why)
        reached = call.state
        if self.on_end is not None:
            self._report_end(call, why, reached)
        call.state = CallState.ENDED
        for relay in list(call.relays):
            self._stop_retransmit(relay)
            if relay.timer_c is not None:
                relay.timer_c.cancel()
                relay.timer_c = None
            if not relay.final_sent and relay is not call.initial:
                self._final(
                    relay,
                    relay.request.create_response(487 if relay.out.method == "INVITE" else 481),
                )
        if bye:
            for leg in (call.a, call.b):
                if leg is None or leg is except_leg or leg.dialog is None:
                    continue
                if leg.dialog.confirmed:
                    request = leg.dialog.create_request(
                        "BYE", via=self.ctx.addresses.via(leg.side, leg.transport)
                    )
                    for name, value in self._user_agent():
                        request.add(name, value)
                    self._send_quiet(leg, request)
                leg.dialog.terminate()
        if call.admitted is not None:
            self.admission.release(call.device.guid, call.admitted)
            call.admitted = None
        if call.kind == "INVITE":
            try:
                self.ctx.media.delete(call.key)
            except Exception:  # the relay's failure must not keep the call alive
                call.log.exception("media delete failed")
        self._later(LINGER, lambda: self._unindex(call))

    def _report_end(self, call: Call, why: str, reached: CallState) -> None:
        summary = self._summary(call)
        summary.update(ended=time.time(), outcome=why, answered=reached is CallState.CONFIRMED)
        try:
            assert self.on_end is not None
            self.on_end(summary)
        except Exception:  # the console's bookkeeping must not break call handling
            call.log.exception("on_end hook failed")

    def _unindex(self, call: Call) -> None:
        for leg in (call.a, call.b):
            if leg is None:
                continue
            self._legs.pop((leg.call_id, leg.local_tag), None)
            legs = self._by_call_id.get(leg.call_id)
            if legs is not None and leg in legs:
                legs.remove(leg)
                if not legs:
                    del self._by_call_id[leg.call_id]
        for relay in call.relays:
            self._forget_relay(relay)

    # -- small helpers -------------------------------------------------------------------------
    def _index(self, leg: Leg) -> None:
        self._legs[(leg.call_id, leg.local_tag)] = leg
        self._by_call_id.setdefault(leg.call_id, []).append(leg)

    def _forget_relay(self, relay: Relay) -> None:
        if self._relays.get(relay.server_txn) is relay:
            del self._relays[relay.server_txn]

    def _final(
        self,
        relay: Relay,
        response: Response,
        *,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer the source transaction with a final response we make ourselves."""
        if relay.final_sent:
            return
        relay.final_sent = True
        if relay.timer_c is not None:
            relay.timer_c.cancel()
            relay.timer_c = None
        if relay.request.to_tag is None and response.to_tag is None:
            response = relay.request.create_response(
                response.status, response.reason, to_tag=relay.source_leg.local_tag
            )
        for name, value in [*extra, *self.ctx.server_headers()]:
            response.add(name, value)
        self._forget_relay(relay)
        try:
            self.ctx.stack.respond(relay.server_txn, response)
        except SipError as exc:
            relay.call.log.debug("cannot answer %d: %s", response.status, exc)

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
        to_tag = None if request.to_tag is not None else secrets.token_hex(6)
        response = request.create_response(
            status, reason, to_tag=to_tag, headers=[*headers, *self.ctx.server_headers()]
        )
        try:
            if stateless:
                self.ctx.stack.respond_stateless(txn, response)
            else:
                self.ctx.stack.respond(txn, response)
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

    def _later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """A deadline on the stack's clock (a callback that raises is logged there)."""
        return self.ctx.stack.later(delay, callback)


def _phone_host(call: Call) -> str | None:
    """The phone's signalling address (its observed SIP source, NAT included): where a
    plain set-side media stream may latch from, besides its SDP address."""
    for leg in (call.a, call.b):
        if leg is not None and leg.side is Side.SET:
            return leg.destination.host
    return None


def icp_domain(icp: IcpRecord) -> str:
    """The host of ICP-side identities: the ICP's SIP domain, else its address."""
    return icp.domain or _bracket(icp.address)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _terminated(request: Request) -> bool:
    try:
        state = request.subscription_state
    except SipError:
        return False
    return state is not None and state.state == "terminated"


def _other(side: Side) -> Side:
    return Side.ICP if side is Side.SET else Side.SET


__all__ = [
    "CALL_EXTENSIONS",
    "BindingLookup",
    "Call",
    "CallController",
    "CallState",
    "Leg",
    "PhoneBinding",
    "Relay",
    "SetSideAuthenticator",
    "end_to_end_headers",
    "icp_domain",
    "is_sdp",
    "map_failure_status",
    "relayed_max_forwards",
    "translate_replaces",
    "uri_host_allowed",
]
