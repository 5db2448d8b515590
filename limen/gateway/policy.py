"""The B2BUA's policy between the two legs: what crosses, and how it is translated.

Pure functions and one small class, no I/O, no call state of their own:

- **Topology hiding** (RFC 7092 §2): :func:`end_to_end_headers` copies only the header
  fields that do not name one side (``_NOT_COPIED``); Max-Forwards is decremented
  (:func:`relayed_max_forwards`, §16.6 item 3).
- **Failure mapping**: :func:`map_failure_status` (3xx → 480, an unanswerable 401/407 →
  403) and :func:`failure_headers` (what a relayed failure keeps).
- **Identity translation** (:class:`Translation`): RAck (RFC 3262) to the other leg's
  CSeq, Refer-To (RFC 3515) and Referred-By (RFC 3892) re-hosted to the other side's
  names, Replaces (RFC 3891) naming one of our legs rewritten to the paired leg's dialog
  (:func:`translate_replaces`).
- Allowed Request-URI names (:func:`uri_host_allowed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import quote, unquote

from limen.gateway.context import GatewayContext, Side
from limen.sip.addressing import bracket
from limen.sip.errors import SipError
from limen.sip.headers import NameAddr, Replaces, parse_replaces
from limen.sip.message import Request, Response
from limen.sip.uri import SipUri, Uri

if TYPE_CHECKING:
    from limen.sip.dialog import Dialog
    from limen.store.schemas import DeviceCredentials, IcpRecord

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
CONTACT_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Methods whose bodies are session descriptions in offer/answer (RFC 3264, 3262, 3311).
OFFER_METHODS: Final = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})
# Initial requests that create a dialog on both legs (RFC 3261 §12, RFC 6665, RFC 3515).
DIALOG_METHODS: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
# Option tags a call may Require that the legs relay end to end (RFC 3262, 4028, 3891,
# 4488): what the gateway passes to check_request as supported.
CALL_EXTENSIONS: Final = frozenset({"100rel", "timer", "replaces", "norefersub"})
# What a relayed failure keeps (Warning names the other side's host: dropped).
_FAILURE_KEPT: Final = ("Retry-After", "Reason", "Unsupported", "Min-SE", "Allow")


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


def failure_headers(response: Response) -> list[tuple[str, str]]:
    """What a relayed failure keeps of the other leg's response."""
    out = []
    for name in _FAILURE_KEPT:
        value = response.get(name)
        if value is not None:
            out.append((name, value))
    return out


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


def terminated(request: Request) -> bool:
    """A NOTIFY whose Subscription-State is "terminated" (RFC 6665 §4.1.3)."""
    try:
        state = request.subscription_state
    except SipError:
        return False
    return state is not None and state.state == "terminated"


def icp_domain(icp: IcpRecord) -> str:
    """The host of ICP-side identities: the ICP's SIP domain, else its address."""
    return icp.domain or bracket(icp.address)


def other(side: Side) -> Side:
    return Side.ICP if side is Side.SET else Side.SET


# --- identity translation -------------------------------------------------------------------


class DialogLeg(Protocol):
    """What Replaces translation reads of a leg (:class:`limen.gateway.legs.Leg`)."""

    @property
    def call_id(self) -> str: ...

    @property
    def local_tag(self) -> str: ...

    @property
    def dialog(self) -> Dialog | None: ...

    @property
    def peer(self) -> DialogLeg | None: ...


def translate_replaces(
    replaces: Replaces, legs: Callable[[str], Iterable[DialogLeg]]
) -> Replaces | None:
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


class Translation:
    """Identifiers of one leg rewritten for the other: RAck, Refer-To, Referred-By,
    Replaces. ``legs`` finds our legs by Call-ID (for Replaces)."""

    def __init__(self, ctx: GatewayContext, legs: Callable[[str], Iterable[DialogLeg]]) -> None:
        self.ctx = ctx
        self.legs = legs

    def headers(
        self,
        request: Request,
        side: Side,
        device: DeviceCredentials,
        invite_cseq: int | None,
    ) -> list[tuple[str, object]]:
        """The translated header fields for ``request`` sent on the ``side`` leg;
        ``invite_cseq``: the CSeq of the call's INVITE on that leg (for RAck)."""
        out: list[tuple[str, object]] = []
        rack = request.rack
        if rack is not None:
            cseq = invite_cseq if invite_cseq is not None else rack.cseq
            out.append(("RAck", f"{rack.rseq} {cseq} {rack.method}"))
        refer_to = request.refer_to
        if refer_to is not None:
            out.append(("Refer-To", self.refer_to(refer_to, side, device)))
        referred_by = request.referred_by
        if referred_by is not None:
            out.append(("Referred-By", self.referred_by(referred_by, side, device)))
        replaces = request.replaces
        if replaces is not None:
            mapped = translate_replaces(replaces, self.legs)
            out.append(("Replaces", mapped if mapped is not None else replaces))
        return out

    def refer_to(self, refer_to: NameAddr, side: Side, device: DeviceCredentials) -> NameAddr:
        uri = refer_to.uri
        if not isinstance(uri, SipUri):
            return refer_to
        headers = uri.headers
        if headers:
            headers = "&".join(self._uri_header(part) for part in headers.split("&"))
        host, port = self.host_for(side, device)
        rehosted = SipUri(host, uri.scheme, uri.user, None, port, uri.params, headers)
        return refer_to.with_uri(rehosted)

    def _uri_header(self, part: str) -> str:
        """One ``name=value`` of a Refer-To URI's headers: a Replaces naming our leg is
        rewritten to the paired leg's dialog (attended transfer, RFC 3891)."""
        name, _, value = part.partition("=")
        if name.lower() != "replaces":
            return part
        try:
            parsed = parse_replaces(unquote(value))
        except SipError:
            return part
        mapped = translate_replaces(parsed, self.legs)
        return part if mapped is None else f"{name}={quote(str(mapped), safe='')}"

    def referred_by(self, addr: NameAddr, side: Side, device: DeviceCredentials) -> NameAddr:
        """Referred-By (RFC 3892) names the referrer. Toward the PBX the referrer is the
        device, known there only by its ICP-side identity; toward the phone, the device's
        own ICP-side identity reads as its set-side one. Other users keep their name."""
        rehosted = self._rehost(addr, side, device)
        uri = rehosted.uri
        if not isinstance(uri, SipUri):
            return rehosted
        if side is Side.ICP:
            user: str | None = device.icpside_username
        elif uri.user == device.icpside_username:
            user = device.setside_username
        else:
            return rehosted
        return rehosted.with_uri(uri._replace(user=user))

    def _rehost(self, addr: NameAddr, side: Side, device: DeviceCredentials) -> NameAddr:
        uri = addr.uri
        if not isinstance(uri, SipUri):
            return addr
        host, port = self.host_for(side, device)
        return addr.with_uri(SipUri(host, uri.scheme, uri.user, None, port, uri.params))

    def host_for(self, side: Side, device: DeviceCredentials) -> tuple[str, int | None]:
        """The host naming ``side`` in identities: the ICP's domain, or Limen's."""
        if side is Side.ICP:
            icp = self.ctx.directory.icp_of(device)
            if icp is not None:
                return icp_domain(icp), None
            return bracket(self.ctx.addresses.icp_host), None
        return bracket(self.ctx.addresses.set_host), None


__all__ = [
    "CALL_EXTENSIONS",
    "CONTACT_METHODS",
    "DIALOG_METHODS",
    "OFFER_METHODS",
    "Translation",
    "bracket",
    "end_to_end_headers",
    "failure_headers",
    "icp_domain",
    "is_sdp",
    "map_failure_status",
    "other",
    "relayed_max_forwards",
    "terminated",
    "translate_replaces",
    "uri_host_allowed",
]
