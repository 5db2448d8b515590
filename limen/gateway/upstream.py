"""ICP-side registrations: Limen registers each registered phone with its PBX itself.

For every device with a set-side binding, Limen keeps exactly one registration at the
device's ICP (RFC 3261 §10.2, Limen acting as the UA):

- From/To ``sip:<icpside_username>@<ICP domain or address>``, Request-URI the ICP domain,
  sent to the ICP's current target (:func:`~limen.gateway.context.icp_destination`: an
  IP literal, or a name located by RFC 3263 in :mod:`limen.gateway.icplink`);
- Contact ``sip:<token>@<lan address>:<port>`` where the token is per device
  (:meth:`Registrar.contact_token`), so the PBX's INVITE maps back to the phone;
- 401/407 answered with the ICP-side credentials (:class:`~limen.sip.digest.DigestClient`:
  nc counted per nonce, a nonce answered once per request unless stale, at most
  ``MAX_AUTH_ROUNDS`` per request; refreshes carry the held challenge's credentials from
  the start); 423 answered with the PBX's Min-Expires;
- refreshed on its own schedule (``icpside_reg_expiry``, granted value from the 200,
  refresh at 80-90 % with random jitter so restarts do not storm the PBX);
- removed (``Expires: 0``) when the phone de-registers or its binding goes away.

A timeout, a transport error or a 503 at one target fails over to the next one at once
(RFC 3263 §4.3); refreshes stay with the target that answered until it fails. Failures
(timeout, transport error, 4xx-6xx) that no target avoids are logged, recorded as one
alarm event per failure streak, and retried with exponential backoff plus jitter. Closing
Limen does not de-register: a restart resumes the registrations (the PBX keeps the binding
meanwhile).
"""

from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass, field
from enum import StrEnum

from limen.gateway.context import GatewayContext, Side, icp_destination
from limen.gateway.stack import ClientEvent
from limen.gateway.timers import TimerHandle
from limen.sip.addressing import Destination, Transport, bracket
from limen.sip.digest import DigestClient
from limen.sip.errors import SipParseError
from limen.sip.message import Request, Response
from limen.sip.transaction import ResponseReceived, TransactionTimeout
from limen.store.schemas import DeviceCredentials, IcpRecord

log = logging.getLogger("limen.gateway.upstream")

MAX_AUTH_ROUNDS = 2  # a challenge, then possibly one stale / new-nonce challenge


class UpstreamState(StrEnum):
    PENDING = "pending"  # waiting for the first (or a resumed) REGISTER to go out
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # waiting to retry
    UNREGISTERING = "unregistering"


@dataclass(slots=True)
class UpstreamRegistration:
    """The ICP-side registration of one device (slotted: one per registered phone)."""

    device: DeviceCredentials
    token: str
    call_id: str
    from_tag: str
    cseq: int = 0
    state: UpstreamState = UpstreamState.PENDING
    expires: int = 0  # granted by the PBX
    failures: int = 0
    auth: DigestClient = field(init=False)  # the ICP's challenge, answered with the device's
    timer: TimerHandle | None = None  # on the stack's clock (limen.gateway.timers)
    requested: int = 0
    dest: Destination | None = None  # the target that answered: refreshes stick to it
    tried: list[Destination] = field(default_factory=list)  # failed over from, this round

    def __post_init__(self) -> None:
        self.auth = DigestClient(
            self.device.icpside_username,
            self.device.icpside_password,
            max_rounds=MAX_AUTH_ROUNDS,
        )


class UpstreamRegistrar:
    """One ICP-side registration per registered device."""

    def __init__(
        self,
        ctx: GatewayContext,
        *,
        backoff_base: float = 5.0,
        backoff_max: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.ctx = ctx
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = rng if rng is not None else random.Random()
        self._regs: dict[str, UpstreamRegistration] = {}
        self.sent = 0  # REGISTER requests sent to ICPs (counting challenge answers)
        self.closed = False

    # -- API used by the registrar ---------------------------------------------------------
    def is_bound(self, device_guid: str) -> bool:
        return device_guid in self._regs

    def state(self, device_guid: str) -> UpstreamState | None:
        reg = self._regs.get(device_guid)
        return None if reg is None else reg.state

    def registrations(self) -> list[UpstreamRegistration]:
        return list(self._regs.values())

    def bind(self, device: DeviceCredentials, token: str, *, delay: float = 0.0) -> None:
        """Start (after ``delay`` seconds) keeping ``device`` registered at its ICP."""
        if device.guid in self._regs or self.closed:
            return
        reg = UpstreamRegistration(
            device=device,
            token=token,
            call_id=f"{secrets.token_hex(12)}@limen",
            from_tag=secrets.token_hex(6),
        )
        self._regs[device.guid] = reg
        if delay > 0:
            self._schedule(reg, delay)
        else:
            self._register(reg)

    def unbind(self, device_guid: str) -> None:
        """Remove the device's ICP-side registration (``Expires: 0``)."""
        reg = self._regs.pop(device_guid, None)
        if reg is None:
            return
        self._cancel(reg)
        if reg.state in (UpstreamState.PENDING, UpstreamState.FAILED) and reg.cseq == 0:
            return  # nothing ever reached the PBX
        reg.state = UpstreamState.UNREGISTERING
        reg.auth.new_request()
        self._send(reg, expires=0)

    def close(self) -> None:
        """Stop refreshing (without de-registering: a restart resumes)."""
        self.closed = True
        for reg in self._regs.values():
            self._cancel(reg)
        self._regs.clear()

    # -- the REGISTER client ------------------------------------------------------------------
    def _register(self, reg: UpstreamRegistration) -> None:
        if self._regs.get(reg.device.guid) is not reg:
            return
        reg.timer = None
        reg.state = UpstreamState.REGISTERING
        reg.auth.new_request()
        self._send(reg, expires=self.ctx.options.icpside_reg_expiry)

    def _icp(self, reg: UpstreamRegistration) -> IcpRecord | None:
        return self.ctx.directory.icp_of(reg.device)

    def build_request(
        self, reg: UpstreamRegistration, icp: IcpRecord, dest: Destination, expires: int
    ) -> Request:
        domain = bracket(icp.domain or icp.address)
        aor = f"sip:{reg.device.icpside_username}@{domain}"
        contact = self.ctx.addresses.contact(Side.ICP, dest.transport, user=reg.token)
        reg.cseq += 1
        headers: list[tuple[str, object]] = [
            ("Via", self.ctx.addresses.via(Side.ICP, dest.transport)),
            ("Max-Forwards", "70"),
            ("From", f"<{aor}>;tag={reg.from_tag}"),
            ("To", f"<{aor}>"),
            ("Call-ID", reg.call_id),
            ("CSeq", f"{reg.cseq} REGISTER"),
            ("Contact", str(contact)),
            ("Expires", str(expires)),
        ]
        if self.ctx.settings.sip.server_header:
            headers.append(("User-Agent", self.ctx.settings.sip.server_header))
        request = Request("REGISTER", f"sip:{domain}", headers)
        # Every REGISTER is built afresh (a new CSeq and Via, and the target may have
        # changed), so Request.retry has nothing to add here.
        answer = reg.auth.authorization("REGISTER", str(request.uri))
        if answer is not None:
            request.add(answer.name, answer.value)
        return request

    def _send(self, reg: UpstreamRegistration, expires: int) -> None:
        icp = self._icp(reg)
        if icp is None:
            log.warning("device %s has no ICP; not registering upstream", reg.device.guid)
            reg.state = UpstreamState.FAILED
            return
        links = self.ctx.links
        dest = icp_destination(icp, links, sticky=reg.dest)
        if dest is None:
            self._failed(reg, f"{icp.address} does not resolve (yet)", expires == 0)
            return
        reg.requested = expires
        request = self.build_request(reg, icp, dest, expires)
        if links is not None and dest.transport is Transport.UDP:
            # RFC 3261 §18.1.1: too big for UDP → TCP when the ICP has it.
            sized = links.destination(icp, size=len(bytes(request)), sticky=dest)
            if sized is not None and sized != dest:
                dest = sized
                request = self.build_request(reg, icp, dest, expires)
        reg.dest = dest
        self.sent += 1
        self.ctx.stack.send_request(
            request, dest, lambda event: self._on_event(reg, expires, event, dest)
        )

    def _failover(
        self, reg: UpstreamRegistration, expires: int, event: ClientEvent, dest: Destination
    ) -> bool:
        """Report the outcome to the link state; on a timeout, transport error or 503,
        send again at the next target (RFC 3263 §4.3). True when it did."""
        links = self.ctx.links
        icp = self._icp(reg)
        if links is None or icp is None:
            return False
        if not links.report_event(icp, dest, event):
            if isinstance(event, ResponseReceived) and event.response.status >= 200:
                reg.tried.clear()
            return False
        reg.tried.append(dest)
        alternative = links.alternative(icp, reg.tried)
        if alternative is None:
            reg.tried.clear()
            reg.dest = None
            return False
        log.info(
            "ICP-side registration of %s: failing over from %s to %s",
            reg.device.icpside_username,
            dest,
            alternative,
        )
        reg.dest = alternative
        reg.auth.reset()  # a new server, a new challenge
        self._send(reg, expires)
        return True

    def _on_event(
        self, reg: UpstreamRegistration, expires: int, event: ClientEvent, dest: Destination
    ) -> None:
        unregistering = expires == 0
        if not unregistering and self._regs.get(reg.device.guid) is not reg:
            return  # unbound meanwhile: the de-REGISTER owns this registration now
        if self._failover(reg, expires, event, dest):
            return
        if not isinstance(event, ResponseReceived):
            what = "timeout" if isinstance(event, TransactionTimeout) else "transport error"
            self._failed(reg, what, unregistering)
            return
        response = event.response
        status = response.status
        if status < 200:
            return
        if 200 <= status < 300:
            reg.failures = 0
            if unregistering:
                log.info("ICP-side registration of %s removed", reg.device.icpside_username)
                return
            reg.state = UpstreamState.REGISTERED
            reg.expires = self._granted(reg, response, expires)
            self._schedule(reg, self.refresh_delay(reg.expires))
            return
        if status in (401, 407) and reg.auth.on_challenge(response):
            self._send(reg, expires)
            return
        if status == 423 and not unregistering:
            try:
                minimum = int(response.get("Min-Expires") or "0")
            except ValueError:
                minimum = 0
            if minimum > expires:
                reg.auth.new_request()
                self._send(reg, minimum)
                return
        self._failed(reg, f"{status} {response.reason}", unregistering)

    def _granted(self, reg: UpstreamRegistration, response: Response, requested: int) -> int:
        try:
            for contact in response.contacts:
                uri = contact.uri
                if getattr(uri, "user", None) == reg.token and contact.expires is not None:
                    return contact.expires
            if response.expires is not None:
                return response.expires
        except SipParseError:
            pass
        return requested

    def refresh_delay(self, granted: int) -> float:
        """Refresh at 80-90 % of the granted time (jitter spreads the herd)."""
        return max(1.0, granted * self._rng.uniform(0.8, 0.9))

    def backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, failures - 1))
        return delay * self._rng.uniform(0.8, 1.2)

    def _failed(self, reg: UpstreamRegistration, what: str, unregistering: bool) -> None:
        who = f"{reg.device.icpside_username} (device {reg.device.setside_username})"
        if unregistering:
            log.warning("ICP-side de-registration of %s failed: %s", who, what)
            return
        reg.failures += 1
        reg.state = UpstreamState.FAILED
        reg.auth.reset()
        delay = self.backoff(reg.failures)
        log.warning("ICP-side registration of %s failed: %s; retry in %.0f s", who, what, delay)
        if reg.failures == 1:
            self._event(f"ICP-side registration of {who} failed: {what}")
        self._schedule(reg, delay)

    def _event(self, message: str) -> None:
        store = self.ctx.store
        if store is None:
            return
        loop = self.ctx.stack.loop
        if loop is None:  # a stack on a manual clock (tests): no thread to write from
            return

        def record() -> None:
            try:
                store.events.add(message, severity="minor", source="sip-registration")
            except Exception:
                log.exception("could not record event")

        loop.run_in_executor(None, record)

    def _schedule(self, reg: UpstreamRegistration, delay: float) -> None:
        self._cancel(reg)
        reg.timer = self.ctx.stack.later(delay, lambda: self._register(reg))

    @staticmethod
    def _cancel(reg: UpstreamRegistration) -> None:
        if reg.timer is not None:
            reg.timer.cancel()
            reg.timer = None
