"""The gate: who may send what from the set side (DESIGN.md, "The edge").

Every request from the internet is an attacker's until proven otherwise. A set-side request
that starts a transaction outside a dialog and claims a device (its From user is the
device's set-side username) is let through to the ICP only if

1. it carries valid digest credentials for a device (``Proxy-Authorization``, checked by
   :class:`~limen.gateway.auth.SetSideAuth`; the request then acts as *that* device), or
2. it arrives from the claimed device's current registration binding — the same TLS/TCP
   connection, or the same UDP source address and port — and its method is not one that
   is always challenged (the device's ``challenge_methods``, else the global option).

Everything else gets a challenge (407) or a 403 from Limen itself, sent statelessly, with
the same status, headers and work whether the claimed user exists or not (no user
enumeration, RFC 3261 §26.3.2.4 in spirit). A device's ICP-side credentials are therefore
never used for a request that was neither authenticated nor bound: no configuration of the
challenge list can open a path to the PBX, because an empty list only waives the challenge
for requests that come from a binding.

Why binding rather than "always challenge": phones do not expect MESSAGE, INFO, OPTIONS or
NOTIFY to be challenged (MBG's default challenges INVITE and SUBSCRIBE only), and a request
over the phone's own registered connection is as good as authenticated: the connection (or
the UDP 5-tuple) was the one that passed digest at REGISTER time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from limen.gateway.respond import respond
from limen.sip.addressing import Source, Transport
from limen.sip.message import Request
from limen.sip.transaction import ServerTransaction
from limen.sip.uri import SipUri

if TYPE_CHECKING:
    from limen.gateway.context import GatewayContext
    from limen.store.schemas import DeviceCredentials


class Authenticator(Protocol):
    """What the gate needs of :class:`~limen.gateway.auth.SetSideAuth`."""

    def check(
        self, txn: ServerTransaction, request: Request, source: Source, *, proxy: bool
    ) -> DeviceCredentials | None: ...

    def challenged_methods(self, device: DeviceCredentials) -> frozenset[str]: ...


class BoundSource(Protocol):
    """A registration binding, as far as the gate cares: where the phone registered from."""

    @property
    def source(self) -> Source: ...


class Bindings(Protocol):
    def binding_for(self, device_guid: str) -> BoundSource | None: ...


def same_flow(binding: Source, source: Source) -> bool:
    """Did ``source`` arrive on the flow the phone registered over (RFC 5626 §3's "flow")?

    UDP: the same remote address and port on the same local socket. TCP/TLS: the very
    connection (its id is never reused within a process) from the same remote address;
    a binding resumed after a restart has no connection yet and matches nothing until
    the phone registers again.
    """
    if binding.transport is not source.transport or binding.remote != source.remote:
        return False
    if source.transport is Transport.UDP:
        return binding.local[1] == source.local[1]
    return binding.conn_id is not None and binding.conn_id == source.conn_id


class SetSideGate:
    """Admit or refuse an out-of-dialog set-side request (see the module docstring)."""

    def __init__(
        self,
        ctx: GatewayContext,
        auth: Authenticator | None,
        bindings: Bindings | None,
    ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.bindings = bindings
        self.admitted_bound = 0  # requests let through on their binding alone
        self.refused = 0  # requests answered by the gate without relaying

    def claimed_device(self, request: Request) -> DeviceCredentials | None:
        uri = request.from_.uri
        user = uri.user if isinstance(uri, SipUri) else None
        return self.ctx.directory.device_by_setside(user) if user else None

    def always_challenged(self, device: DeviceCredentials | None) -> frozenset[str]:
        if device is not None and self.auth is not None:
            return self.auth.challenged_methods(device)
        return frozenset(m.upper() for m in self.ctx.options.challenge_methods)

    def bound(self, device: DeviceCredentials, source: Source) -> bool:
        binding = self.bindings.binding_for(device.guid) if self.bindings is not None else None
        return binding is not None and same_flow(binding.source, source)

    def admit(
        self, txn: ServerTransaction, request: Request, source: Source
    ) -> DeviceCredentials | None:
        """The device the request acts for, or None after the gate answered it."""
        claimed = self.claimed_device(request)
        method = request.method
        if (
            claimed is not None
            and method not in self.always_challenged(claimed)
            and self.bound(claimed, source)
        ):
            self.admitted_bound += 1
            return claimed
        if self.auth is None:
            self.refused += 1
            self._refuse(txn, request)
            return None
        device = self.auth.check(txn, request, source, proxy=True)
        if device is None:
            self.refused += 1
        return device

    def _refuse(self, txn: ServerTransaction, request: Request) -> None:
        respond(self.ctx, txn, request, 403, stateless=True)
