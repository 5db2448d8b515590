"""Identification and routing of a call's initial request: which device, which side,
which ICP, where to, under which identities; and whether it may start at all.

:class:`CallRouter` answers, for a request outside any dialog:

- **from a phone** (set side): the Request-URI host must be allowed; the gate admits the
  device (its binding, or digest: :class:`~limen.gateway.gate.SetSideGate`); the request
  goes to the device's ICP (RFC 3263 target from the ICP links), From = the device's
  ICP-side identity, To = the dialled user at the ICP's domain;
- **from the PBX** (ICP side): the Request-URI's user names the device (Limen's
  per-device contact token, a set-side or an ICP-side username); a request that is our
  own coming back for the very device that sent it is a loop (482); the device must be
  registered (480); the request goes to the phone's binding, From/To hosted at Limen's
  set-side name;
- **admission** (:mod:`limen.gateway.admission`): per-device, per-ICP and total limits.

The answer is a :class:`Route`, a :class:`Refusal` (the status to answer), or None when
the gate already answered (a challenge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from limen.gateway.admission import CallAdmission, Limits
from limen.gateway.context import GatewayContext, Side, icp_destination
from limen.gateway.gate import SetSideGate
from limen.gateway.policy import icp_domain, uri_host_allowed
from limen.sip.addressing import Destination, Source, bracket
from limen.sip.headers import NameAddr
from limen.sip.message import Request
from limen.sip.uri import SipUri, Uri

if TYPE_CHECKING:
    from limen.gateway.legs import Leg
    from limen.sip.transaction import ServerTransaction
    from limen.store.schemas import DeviceCredentials

log = logging.getLogger("limen.gateway.calls")

RETRY_AFTER_UNREACHABLE: Final = 30  # seconds, in 503s for an unreachable ICP


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


@dataclass(slots=True)
class Route:
    """Where an initial request goes, and as whom."""

    device: DeviceCredentials
    target_side: Side
    destination: Destination
    target_uri: Uri
    from_: NameAddr
    to: NameAddr


@dataclass(slots=True)
class Refusal:
    """The request does not go anywhere: answer it ``status``."""

    status: int
    reason: str | None = None
    headers: Iterable[tuple[str, str]] = ()
    stateless: bool = False


class CallRouter:
    """Initial requests → :class:`Route` (see the module)."""

    def __init__(
        self,
        ctx: GatewayContext,
        gate: SetSideGate,
        registrar: BindingLookup | None,
        admission: CallAdmission,
        leg_of: Callable[[str, str], Leg | None],
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        self.registrar = registrar
        self.admission = admission
        self.leg_of = leg_of  # (Call-ID, our tag) → one of our legs

    def route(
        self, txn: ServerTransaction, request: Request, source: Source, side: Side
    ) -> Route | Refusal | None:
        if side is Side.SET:
            return self.from_phone(txn, request, source)
        return self.from_pbx(request)

    # -- phone → PBX ---------------------------------------------------------------------------
    def from_phone(
        self, txn: ServerTransaction, request: Request, source: Source
    ) -> Route | Refusal | None:
        ctx = self.ctx
        options = ctx.options
        own = (ctx.settings.public_fqdn, ctx.settings.public_ip, ctx.addresses.set_host)
        if not uri_host_allowed(request.uri, options.allowed_uri_names, own):
            return Refusal(403, "Domain Not Allowed", stateless=True)
        device = self.gate.admit(txn, request, source)
        if device is None:
            return None
        if request.method == "INVITE" and not options.prack_support and "100rel" in request.require:
            return Refusal(420, None, [("Unsupported", "100rel")])
        icp = ctx.directory.icp_of(device)
        if icp is None:
            return Refusal(503, "No ICP For Device")
        user = request.uri.user if isinstance(request.uri, SipUri) else None
        if user is None:
            return Refusal(404)
        domain = icp_domain(icp)
        target = SipUri(domain, "sip", user)
        destination = icp_destination(icp, ctx.links, size=len(request.body) + 1024)
        if destination is None:  # a name that has not resolved (yet)
            retry = [("Retry-After", str(RETRY_AFTER_UNREACHABLE))]
            return Refusal(503, "ICP Unreachable", retry)
        from_ = NameAddr(SipUri(domain, "sip", device.icpside_username), request.from_.display_name)
        to = NameAddr(target, request.to.display_name)
        return Route(device, Side.ICP, destination, target, from_, to)

    # -- PBX → phone ---------------------------------------------------------------------------
    def from_pbx(self, request: Request) -> Route | Refusal:
        user = request.uri.user_unescaped if isinstance(request.uri, SipUri) else None
        device = self.device_for(user) if user is not None else None
        if device is None:
            return Refusal(404)
        if self.looped(request, device):
            return Refusal(482)
        binding = self.registrar.binding_for(device.guid) if self.registrar is not None else None
        if binding is None:
            return Refusal(480, "Not Registered")
        host = bracket(self.ctx.addresses.set_host)
        caller = request.from_
        caller_user = caller.uri.user if isinstance(caller.uri, SipUri) else None
        from_ = NameAddr(SipUri(host, "sip", caller_user), caller.display_name)
        to = NameAddr(SipUri(host, "sip", device.setside_username), request.to.display_name)
        return Route(device, Side.SET, binding.destination(), binding.request_uri(), from_, to)

    def device_for(self, user: str) -> DeviceCredentials | None:
        """The device a PBX request names: Limen's contact token, else a set-side, else
        an ICP-side username."""
        directory = self.ctx.directory
        device = None
        if self.registrar is not None:
            device = self.registrar.device_for_contact_user(user)
        if device is None:
            device = directory.device_by_setside(user)
        if device is None:
            device = next(
                (d for d in directory.devices.values() if d.icpside_username == user), None
            )
        return device

    def looped(self, request: Request, device: DeviceCredentials) -> bool:
        """Loop detection (§16.3 item 4 in a B2BUA's terms): the request is one we sent on
        an ICP leg (our Call-ID and From tag, our Via still in it) coming back for the very
        device that made it. A proxying PBX legitimately returns our Call-ID for *another*
        phone (phone → PBX → phone, a spiral), so the device decides."""
        leg = self.leg_of(request.call_id, request.from_tag or "")
        if leg is None or leg.is_uas or leg.side is not Side.ICP:
            return False
        ours = {self.ctx.addresses.icp_host.lower().strip("[]")}
        own_via = any(v.host.strip("[]").lower() in ours for v in request.via)
        return own_via and leg.call.device.guid == device.guid

    # -- admission -----------------------------------------------------------------------------
    def admit(self, device: DeviceCredentials, target_side: Side) -> str | Refusal:
        """Call admission control: per-device limits for calls a phone makes, ICP and
        total limits for every call. The ICP key the call is counted under, or 503."""
        options = self.ctx.options
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
        if refused is None:
            return icp_key
        log.info(
            "call from %s refused: %s limit (%s)",
            device.setside_username,
            refused,
            "phone" if from_phone else "PBX",
        )
        return Refusal(503, "Call Limit Reached", [("Retry-After", "10")])


__all__ = [
    "RETRY_AFTER_UNREACHABLE",
    "BindingLookup",
    "CallRouter",
    "PhoneBinding",
    "Refusal",
    "Route",
]
