"""SIP dialogs, both roles: RFC 3261 §12 (with §13.2.2.4 and §13.3.1.4 for INVITE).

- §12.1.1 (UAS) and §12.1.2 (UAC): dialog state from the request and the response that
  creates the dialog: id, route set, remote target, sequence numbers, secure flag.
- §12.2.1.1: building requests inside a dialog, loose and strict routing.
- §12.2.1.2: responses to in-dialog requests (target refresh, 481/408 end the dialog).
- §12.2.2: received in-dialog requests (CSeq ordering, target refresh).
- §12.3 / §13.2.2.4: early → confirmed → terminated.

Target refresh requests are INVITE (§12.2), UPDATE (RFC 3311 §5.1), SUBSCRIBE and
NOTIFY (RFC 6665 §4.1.2.4 / §4.2.1.4). The remote target is refreshed when the request
arrives (§12.2.2), as RFC 3261 says; RFC 6141 §3.4 refines this for re-INVITEs that then
fail, which the call controller handles.

Sans-IO like the rest of ``limen.sip``: a :class:`Dialog` is plain state; it builds
:class:`Request` objects and the caller hands them to the transaction layer.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final

from limen.sip.errors import SipParseError, SipUsageError
from limen.sip.headers import MAX_UINT32, NameAddr, Via
from limen.sip.message import Request, Response
from limen.sip.transaction import new_branch
from limen.sip.uri import SipUri, Uri

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
    "new_call_id",
    "new_tag",
]

# Requests that may change the remote target (see the module docstring).
TARGET_REFRESH_METHODS: Final = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
# Requests that carry a Contact (target refreshes, and REFER: RFC 3515 §2.4.1 via 6665).
_CONTACT_METHODS: Final = TARGET_REFRESH_METHODS | {"REFER"}
DEFAULT_MAX_FORWARDS: Final = 70
# §8.1.1.5: an initial CSeq must be below 2**31.
_MAX_INITIAL_CSEQ: Final = 2**31 - 1


def new_tag() -> str:
    """A From/To tag: 64 random bits (§19.3 asks for at least 32)."""
    return secrets.token_hex(8)


def new_call_id(host: str | None = None) -> str:
    """A globally unique Call-ID (§8.1.1.4): 128 random bits, optionally ``@host``."""
    value = secrets.token_hex(16)
    return f"{value}@{host}" if host else value


def _initial_cseq() -> int:
    return secrets.randbelow(_MAX_INITIAL_CSEQ) + 1


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag, remote tag. An RFC 2543 peer may send no From tag; it is
    then the empty string ("considered to have a value of null", §12.1.1)."""

    call_id: str
    local_tag: str
    remote_tag: str


def _without_tag(addr: NameAddr) -> NameAddr:
    return addr.with_params(addr.params.without("tag"))


def _contact_uri(message: Request | Response) -> Uri | None:
    contacts = message.contacts
    return contacts[0].uri if contacts else None


def _strip_for_request_uri(uri: Uri) -> Uri:
    """§12.2.1.1 strict routing: drop what a Request-URI may not carry (§19.1.1 table 1:
    the ``method`` parameter and headers)."""
    if not isinstance(uri, SipUri):
        return uri
    params = uri.params.without("method")
    return SipUri(uri.host, uri.scheme, uri.user, uri.password, uri.port, params, None)


class Dialog:
    """One dialog (§12), seen from our side: local = us, remote = the peer.

    Build it with :meth:`from_uac` (we sent the request) or :meth:`from_uas` (we received
    it). ``route_set`` is in the order Route headers must be written; ``remote_target``
    is where requests go (the peer's Contact). ``local_seq`` / ``remote_seq`` are None
    while empty.
    """

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_party: NameAddr,
        remote_party: NameAddr,
        remote_target: Uri,
        route_set: Iterable[NameAddr] = (),
        local_seq: int | None = None,
        remote_seq: int | None = None,
        local_target: Uri | None = None,
        secure: bool = False,
        is_uac: bool = True,
        state: DialogState = DialogState.EARLY,
        creating_method: str = "INVITE",
        creating_cseq: int | None = None,
    ) -> None:
        self.id = DialogId(call_id, local_tag, remote_tag)
        self.local_party = _without_tag(local_party)
        self.remote_party = _without_tag(remote_party)
        self.remote_target = remote_target
        self.route_set: list[NameAddr] = list(route_set)
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_target = local_target
        self.secure = secure
        self.is_uac = is_uac
        self.state = state
        self.creating_method = creating_method
        self.creating_cseq = creating_cseq

    # -- construction (§12.1) ------------------------------------------------------------
    @classmethod
    def from_uac(cls, request: Request, response: Response, *, tls: bool = False) -> Dialog:
        """§12.1.2: the dialog a 101-299 response with a To tag creates for the UAC.

        ``tls``: the request was sent over TLS (with a SIPS Request-URI this sets the
        secure flag). Route set: the response's Record-Route, reversed.
        """
        status = response.status
        if not 101 <= status <= 299:
            raise SipUsageError(f"a {status} response creates no dialog")
        remote_tag = response.to_tag
        if remote_tag is None:
            raise SipParseError("dialog-creating response without To tag")
        local_tag = request.from_tag
        if local_tag is None:
            raise SipUsageError("our request has no From tag")
        # §12.1.2: remote target from the response's Contact. A 1xx (or a broken 2xx)
        # may lack one; we then keep the Request-URI so that the dialog stays usable.
        remote_target = _contact_uri(response) or request.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=request.from_,
            remote_party=request.to,
            remote_target=remote_target,
            route_set=reversed(response.record_routes),
            local_seq=request.cseq.seq,
            remote_seq=None,
            local_target=_contact_uri(request),
            secure=tls and _is_sips(request.uri),
            is_uac=True,
            state=DialogState.EARLY if status < 200 else DialogState.CONFIRMED,
            creating_method=request.method,
            creating_cseq=request.cseq.seq,
        )

    @classmethod
    def from_uas(
        cls,
        request: Request,
        response: Response,
        *,
        tls: bool = False,
        local_seq: int | None = None,
    ) -> Dialog:
        """§12.1.1: the dialog our 101-299 response (with our To tag) creates.

        Route set: the request's Record-Route in order. ``local_seq`` stays empty (None)
        until our first request, unless given.
        """
        status = response.status
        if not 101 <= status <= 299:
            raise SipUsageError(f"a {status} response creates no dialog")
        local_tag = response.to_tag
        if local_tag is None:
            raise SipUsageError("our dialog-creating response needs a To tag")
        remote_target = _contact_uri(request)
        if remote_target is None:
            # §12.1.1 relies on the request's Contact (mandatory in INVITE, §8.1.1.8).
            raise SipParseError("dialog-creating request without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_party=request.to,
            remote_party=request.from_,
            remote_target=remote_target,
            route_set=request.record_routes,
            local_seq=local_seq,
            remote_seq=request.cseq.seq,
            local_target=_contact_uri(response),
            secure=tls and _is_sips(request.uri),
            is_uac=False,
            state=DialogState.EARLY if status < 200 else DialogState.CONFIRMED,
            creating_method=request.method,
            creating_cseq=request.cseq.seq,
        )

    # -- views ---------------------------------------------------------------------------
    @property
    def call_id(self) -> str:
        return self.id.call_id

    @property
    def local_tag(self) -> str:
        return self.id.local_tag

    @property
    def remote_tag(self) -> str:
        return self.id.remote_tag

    @property
    def local_uri(self) -> Uri:
        return self.local_party.uri

    @property
    def remote_uri(self) -> Uri:
        return self.remote_party.uri

    @property
    def early(self) -> bool:
        return self.state is DialogState.EARLY

    @property
    def confirmed(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    @property
    def next_hop(self) -> Uri:
        """The URI to resolve (RFC 3263) for the next in-dialog request: the first route
        (loose or strict, it is the next hop either way) or the remote target."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- requests we send (§12.2.1.1) ----------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        via: Via | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> Request:
        """A request inside the dialog (§12.2.1.1), with the next local CSeq.

        ``via``: our Via; it gets a fresh branch unless it has one. Without it the caller
        adds the Via. ACK for a 2xx is :meth:`create_ack`; CANCEL is built from the request
        it cancels (``limen.sip.transaction.create_cancel``): neither takes a new CSeq.
        """
        if method in ("ACK", "CANCEL"):
            raise SipUsageError(f"{method} reuses the CSeq of its request; see create_ack")
        if self.terminated:
            raise SipUsageError(f"dialog {self.id} is terminated")
        if self.local_seq is None:
            seq = _initial_cseq()  # §12.2.1.1: empty → an initial value per §8.1.1.5
        elif self.local_seq >= MAX_UINT32:
            raise SipUsageError("local CSeq exhausted")
        else:
            seq = self.local_seq + 1
        self.local_seq = seq
        return self._build(method, seq, via, headers, body)

    def create_ack(
        self,
        invite_cseq: int,
        *,
        via: Via | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> Request:
        """The ACK for a 2xx to the INVITE with CSeq ``invite_cseq`` (§13.2.2.4): built like
        any in-dialog request, same CSeq number, method ACK, a new branch (it is a new
        transaction of its own, §17)."""
        return self._build("ACK", invite_cseq, via, headers, body)

    def _build(
        self,
        method: str,
        seq: int,
        via: Via | None,
        headers: Iterable[tuple[str, object]],
        body: bytes,
    ) -> Request:
        request_uri, routes = self._request_uri_and_routes()
        fields: list[tuple[str, object]] = []
        if via is not None:
            if via.branch is None:
                via = via.with_params(via.params.with_("branch", new_branch()))
            fields.append(("Via", via))
        fields.extend(("Route", route) for route in routes)
        remote = self.remote_party
        if self.remote_tag:
            remote = remote.with_tag(self.remote_tag)
        fields.extend(
            [
                ("Max-Forwards", DEFAULT_MAX_FORWARDS),
                ("From", self.local_party.with_tag(self.local_tag)),
                ("To", remote),
                ("Call-ID", self.call_id),
                ("CSeq", f"{seq} {method}"),
            ]
        )
        if method in _CONTACT_METHODS and self.local_target is not None:
            fields.append(("Contact", NameAddr(self.local_target)))
        fields.extend(headers)
        return Request(method, request_uri, fields, body)

    def _request_uri_and_routes(self) -> tuple[Uri, list[NameAddr]]:
        route_set = self.route_set
        if not route_set:
            return self.remote_target, []
        first = route_set[0]
        if isinstance(first.uri, SipUri) and first.uri.lr:
            # Loose routing (§12.2.1.1): Request-URI = remote target, Route = route set.
            return self.remote_target, list(route_set)
        # Strict routing (RFC 2543 next hop): the first route becomes the Request-URI and
        # the remote target goes last in Route.
        return (
            _strip_for_request_uri(first.uri),
            [*route_set[1:], NameAddr(self.remote_target)],
        )

    # -- responses to our requests (§12.2.1.2, §13.2.2.4) ---------------------------------
    def receive_response(self, request: Request, response: Response) -> None:
        """Update the dialog from a response to ``request``, a request we sent in it (or
        the request that created it)."""
        if self.terminated:
            return
        status = response.status
        creating = self._is_creating(request)
        if creating and self.early:
            if 101 <= status <= 299:
                # Early-dialog responses refresh the remote target (§12.1.2 applies per
                # response); the 2xx also recomputes the route set and confirms
                # (§13.2.2.4).
                self._refresh_target(response)
                if status >= 200:
                    self.route_set = list(reversed(response.record_routes))
                    self.state = DialogState.CONFIRMED
            elif status >= 300:
                # §12.3: a non-2xx final response ends the early dialog.
                self.state = DialogState.TERMINATED
            return
        if status in (408, 481):
            # §12.2.1.2: the peer lost the dialog, or the request timed out.
            self.state = DialogState.TERMINATED
            return
        if 200 <= status < 300 and request.method in TARGET_REFRESH_METHODS:
            self._refresh_target(response)

    # -- responses we send (UAS side) -----------------------------------------------------
    def response_sent(self, request: Request, response: Response) -> None:
        """Record a response we sent to ``request`` in this dialog: a 2xx to the creating
        request confirms the dialog, a non-2xx final one ends it while early (§12.3)."""
        if self.terminated or not self._is_creating(request) or not self.early:
            return
        if 200 <= response.status < 300:
            self.state = DialogState.CONFIRMED
            if self.local_target is None:
                self.local_target = _contact_uri(response)
        elif response.status >= 300:
            self.state = DialogState.TERMINATED

    # -- requests we receive (§12.2.2) -----------------------------------------------------
    def receive_request(self, request: Request) -> int | None:
        """Check and apply an in-dialog request. Returns the status to refuse it with
        (500 when out of order, §12.2.2; 481 when the dialog is over), or None."""
        method = request.method
        if method in ("ACK", "CANCEL"):
            # ACK and CANCEL reuse the CSeq of their request and get no ordering check.
            return None
        if self.terminated:
            return 481
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return 500
        self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)
        return None

    # -- helpers --------------------------------------------------------------------------
    def _is_creating(self, request: Request) -> bool:
        cseq = request.cseq
        return cseq.method == self.creating_method and cseq.seq == self.creating_cseq

    def _refresh_target(self, message: Request | Response) -> None:
        target = _contact_uri(message)
        if target is not None:
            self.remote_target = target

    def __repr__(self) -> str:
        role = "UAC" if self.is_uac else "UAS"
        return f"<Dialog {role} {self.id.call_id} {self.state.value}>"


def _is_sips(uri: Uri) -> bool:
    return isinstance(uri, SipUri) and uri.secure


class DialogTable:
    """Dialogs by id, with the lookups of §12.2.2 (requests) and §12.2.1.2 (responses).

    Both legs of a B2BUA may share one table: our local tags differ between legs.
    """

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Dialog):
            return self._dialogs.get(item.id) is item
        return item in self._dialogs

    def add(self, dialog: Dialog) -> None:
        if dialog.id in self._dialogs:
            raise SipUsageError(f"dialog {dialog.id} already in the table")
        self._dialogs[dialog.id] = dialog

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def remove(self, dialog: Dialog | DialogId) -> Dialog | None:
        key = dialog.id if isinstance(dialog, Dialog) else dialog
        return self._dialogs.pop(key, None)

    @staticmethod
    def request_id(request: Request) -> DialogId | None:
        """Id of the dialog a received request belongs to (§12.2.2): Call-ID, To tag
        (ours), From tag (theirs). None without a To tag: not an in-dialog request."""
        local_tag = request.to_tag
        if local_tag is None:
            return None
        return DialogId(request.call_id, local_tag, request.from_tag or "")

    @staticmethod
    def response_id(response: Response) -> DialogId | None:
        """Id of the dialog a received response belongs to: Call-ID, From tag (ours),
        To tag (theirs)."""
        local_tag = response.from_tag
        remote_tag = response.to_tag
        if local_tag is None or remote_tag is None:
            return None
        return DialogId(response.call_id, local_tag, remote_tag)

    def match_request(self, request: Request) -> Dialog | None:
        dialog_id = self.request_id(request)
        return None if dialog_id is None else self._dialogs.get(dialog_id)

    def match_response(self, response: Response) -> Dialog | None:
        dialog_id = self.response_id(response)
        return None if dialog_id is None else self._dialogs.get(dialog_id)

    def for_call_id(self, call_id: str) -> list[Dialog]:
        """Every dialog of a Call-ID (the early dialogs of a forked INVITE, §12.1.2)."""
        return [d for d in self._dialogs.values() if d.call_id == call_id]
