"""The gate (issue 9): what an unauthenticated set-side request can and cannot reach.

Driven through the whole :class:`~limen.gateway.gateway.Gateway` (request checks,
registrar, call controller) on a fake stack that records what would be sent: explicit
time, no sockets. The network proof with real tools is tests/acceptance/test_acc_gate.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from test_gw_reg_logic import ICP  # one PBX record for the gateway's pure tests

from limen.config import Settings, SipSettings
from limen.gateway.auth import SetSideAuth
from limen.gateway.calls import CALL_EXTENSIONS, CallController
from limen.gateway.context import Directory, GatewayContext, LocalAddresses
from limen.gateway.gateway import Gateway
from limen.gateway.media import PassthroughMedia
from limen.gateway.registrar import Binding, Registrar
from limen.gateway.timers import TimerHandle, Timers
from limen.sip import Destination, Request, Response, Source, Transport, parse_message
from limen.sip.digest import answer_challenge, format_credentials, parse_challenge
from limen.sip.headers import parse_name_addr
from limen.store import GlobalOptions
from limen.store.schemas import DeviceCredentials, DeviceUpdate


class FakeStack:
    """Records responses (and whether they were stateless) and requests sent."""

    def __init__(self) -> None:
        self.now_value = 1000.0
        self.responses: list[tuple[Response, bool]] = []
        self.requests: list[tuple[Request, Destination]] = []
        self.loop: Any = None
        self.timers = Timers(self.now)

    def now(self) -> float:
        return self.now_value

    def later(self, delay: float, callback: Any) -> TimerHandle:
        return self.timers.later(delay, callback)

    def at(self, when: float, callback: Any) -> TimerHandle:
        return self.timers.at(when, callback)

    def respond(self, txn: object, response: Response) -> None:
        self.responses.append((response, False))

    def respond_stateless(self, txn: object, response: Response) -> None:
        self.responses.append((response, True))

    def send_request(self, request: Request, dest: Destination, on_event: Any) -> object:
        self.requests.append((request, dest))
        return object()

    def send_stateless(self, message: object, dest: Destination) -> None:
        pass

    @property
    def last(self) -> Response:
        return self.responses[-1][0]


def device(user: str, **kw: Any) -> DeviceCredentials:
    return DeviceCredentials(
        guid=f"d-{user}",
        setside_username=user,
        setside_password=f"pw{user}",
        icpside_username=f"icp{user}",
        icpside_password="icppw",
        icp="pbx",
        clientid=None,
        **kw,
    )


LOCAL = ("203.0.113.10", 5060)
PHONE = Source(Transport.UDP, LOCAL, ("198.51.100.7", 40000))
ATTACKER = Source(Transport.UDP, LOCAL, ("192.0.2.66", 5070))
# PUBLISH is not among the methods Limen handles (405 for everyone, never relayed).
METHODS = ["MESSAGE", "OPTIONS", "INFO", "NOTIFY", "UPDATE", "REFER", "SUBSCRIBE"]


class Lab:
    def __init__(self, *devices: DeviceCredentials, **options: Any) -> None:
        directory = Directory(
            options=GlobalOptions(sip_udp=True, **options),
            icps={ICP.guid: ICP},
            devices={d.guid: d for d in devices},
        )
        directory._by_setside = {d.setside_username: d for d in devices}
        self.stack = FakeStack()
        self.ctx = GatewayContext(
            settings=Settings(sip=SipSettings(realm="limen.test", server_header="")),
            stack=self.stack,  # type: ignore[arg-type]
            directory=directory,
            addresses=LocalAddresses("203.0.113.10", "10.0.0.1", {Transport.UDP: 5060}),
            media=PassthroughMedia(),
        )
        self.auth = SetSideAuth(self.ctx, clock=lambda: 5000.0)
        self.registrar = Registrar(self.ctx, self.auth)
        self.calls = CallController(self.ctx, auth=self.auth, registrar=self.registrar)
        self.gateway = Gateway(
            self.ctx, registrar=self.registrar, calls=self.calls, supported=CALL_EXTENSIONS
        )

    def bind(self, dev: DeviceCredentials, source: Source = PHONE) -> None:
        binding = Binding(
            device_guid=dev.guid,
            aor=dev.setside_username,
            contact=parse_name_addr(f"<sip:{dev.setside_username}@192.168.1.5:5060>"),
            source=source,
            expires_at=5000.0,
            nat=True,
        )
        self.registrar.add_binding(binding, dev)

    def send(self, request: Request, source: Source) -> Response:
        before = len(self.stack.responses)
        self.gateway.on_request(object(), request, source)  # type: ignore[arg-type]
        assert len(self.stack.responses) > before, "the request got no answer"
        return self.stack.last

    def to_pbx(self) -> list[Request]:
        return [r for r, d in self.stack.requests if d.host == ICP.address]


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab(device("7001"), device("7002"))
    yield made
    made.calls.close()


def request(
    method: str,
    *,
    user: str = "7001",
    ruri_user: str = "8000",
    proxy_auth: str | None = None,
    contact: bool = True,
    to_tag: str | None = None,
    call_id: str = "attack-1",
    extra: list[str] | None = None,
) -> Request:
    lines = [
        f"{method} sip:{ruri_user}@203.0.113.10 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.66:5070;branch=z9hG4bK-gate;rport",
        f"From: <sip:{user}@limen>;tag=f1",
        f"To: <sip:{ruri_user}@limen>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
    ]
    if contact:
        lines.append(f"Contact: <sip:{user}@192.0.2.66:5070>")
    if method in ("SUBSCRIBE", "NOTIFY"):
        lines.append("Event: presence")
    if method == "NOTIFY":
        lines.append("Subscription-State: active")
    if method == "REFER":
        lines.append("Refer-To: <sip:9000@limen>")
    if proxy_auth is not None:
        lines.append(f"Proxy-Authorization: {proxy_auth}")
    lines.extend(extra or [])
    raw = "\r\n".join([*lines, "Content-Length: 0", "", ""]).encode()
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def shape(response: Response) -> tuple[int, str, list[str]]:
    """Status, reason and header names with values, nonces and tags masked: what a scanner
    can compare between two answers."""
    masked = []
    for name, value in response.headers:
        value = re.sub(r'nonce="[^"]*"', 'nonce="*"', value)
        value = re.sub(r"tag=[0-9a-f]+", "tag=*", value)
        value = re.sub(r"sip:[^@;>]+@", "sip:*@", value)  # the user echoed in From/To
        masked.append(f"{name}: {value}")
    return response.status, response.reason, masked


# --- finding 2: unauthenticated out-of-dialog requests never reach the PBX -------------------


@pytest.mark.parametrize("method", [*METHODS, "INVITE"])
def test_unbound_unauthenticated_requests_are_challenged_statelessly(lab: Lab, method: str) -> None:
    answer = lab.send(request(method), ATTACKER)
    assert answer.status == 407
    assert answer.get_all("Proxy-Authenticate")
    assert lab.stack.responses[-1][1], "challenges are sent without a transaction"
    assert lab.to_pbx() == []
    assert lab.calls.active_calls == 0


@pytest.mark.parametrize("method", [*METHODS, "INVITE"])
def test_registered_device_is_not_enough_from_another_address(lab: Lab, method: str) -> None:
    lab.bind(lab.ctx.directory.devices["d-7001"])
    assert lab.send(request(method), ATTACKER).status == 407
    other_port = Source(Transport.UDP, LOCAL, (PHONE.remote[0], PHONE.remote[1] + 1))
    assert lab.send(request(method), other_port).status == 407
    assert lab.to_pbx() == []


@pytest.mark.parametrize("method", ["MESSAGE", "OPTIONS", "INFO", "NOTIFY", "UPDATE", "REFER"])
def test_requests_from_the_binding_are_relayed(lab: Lab, method: str) -> None:
    lab.bind(lab.ctx.directory.devices["d-7001"])
    lab.gateway.on_request(object(), request(method), PHONE)  # type: ignore[arg-type]
    sent = lab.to_pbx()
    assert [r.method for r in sent] == [method]
    assert sent[0].from_.uri.user == "icp7001"  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["INVITE", "SUBSCRIBE"])
def test_challenged_methods_need_digest_even_from_the_binding(lab: Lab, method: str) -> None:
    lab.bind(lab.ctx.directory.devices["d-7001"])
    assert lab.send(request(method), PHONE).status == 407
    assert lab.to_pbx() == []


def authenticated(lab: Lab, method: str, user: str, password: str) -> Request:
    challenge = parse_challenge(
        lab.send(request(method, user=user), ATTACKER).get_all("Proxy-Authenticate")[0]
    )
    creds = answer_challenge(
        challenge, method=method, uri="sip:8000@203.0.113.10", username=user, password=password
    )
    return request(method, user=user, proxy_auth=format_credentials(creds))


@pytest.mark.parametrize("method", ["MESSAGE", "INVITE", "REFER"])
def test_requests_with_credentials_are_relayed_from_anywhere(lab: Lab, method: str) -> None:
    lab.gateway.on_request(object(), authenticated(lab, method, "7001", "pw7001"), ATTACKER)  # type: ignore[arg-type]
    assert [r.method for r in lab.to_pbx()] == [method]


def test_tcp_binding_is_the_connection_not_the_address(lab: Lab) -> None:
    dev = lab.ctx.directory.devices["d-7001"]
    phone_tcp = Source(Transport.TCP, LOCAL, ("198.51.100.7", 40001), conn_id=7)
    lab.bind(dev, phone_tcp)
    other_conn = Source(Transport.TCP, LOCAL, ("198.51.100.7", 40001), conn_id=8)
    assert lab.send(request("MESSAGE"), other_conn).status == 407
    resumed = Source(Transport.TCP, LOCAL, ("198.51.100.7", 40001), conn_id=None)
    lab.bind(dev, resumed)  # a binding read back after a restart has no connection
    assert lab.send(request("MESSAGE"), phone_tcp).status == 407
    lab.bind(dev, phone_tcp)
    lab.gateway.on_request(object(), request("MESSAGE"), phone_tcp)  # type: ignore[arg-type]
    assert [r.method for r in lab.to_pbx()] == ["MESSAGE"]


# --- finding 3: an empty challenge list is "use the global option" ---------------------------


def test_empty_device_challenge_list_means_global() -> None:
    assert DeviceUpdate.model_validate({"challenge_methods": ""}).challenge_methods is None
    assert DeviceUpdate.model_validate({"challenge_methods": []}).challenge_methods is None
    open_device = device("7003", challenge_methods=[])
    made = Lab(open_device)
    try:
        assert made.auth.challenged_methods(open_device) == {"INVITE", "SUBSCRIBE"}
        made.bind(open_device)
        assert made.send(request("INVITE", user="7003"), PHONE).status == 407
        assert made.to_pbx() == []
    finally:
        made.calls.close()


def test_no_challenge_list_opens_nothing_to_unbound_sources() -> None:
    """Even a global list that challenges nothing lets only the binding through."""
    made = Lab(device("7001"), challenge_methods=[])
    try:
        assert made.send(request("INVITE"), ATTACKER).status == 407
        assert made.send(request("MESSAGE"), ATTACKER).status == 407
        assert made.to_pbx() == []
    finally:
        made.calls.close()


# --- finding 4: one nonce, one guess -----------------------------------------------------------


def test_a_guesser_gets_one_try_per_nonce(lab: Lab) -> None:
    challenge = parse_challenge(
        lab.send(request("INVITE"), ATTACKER).get_all("Proxy-Authenticate")[0]
    )
    statuses = []
    for n, guess in enumerate(["a", "b", "c", "pw7001"], start=1):
        creds = answer_challenge(
            challenge,
            method="INVITE",
            uri="sip:8000@203.0.113.10",
            username="7001",
            password=guess,
            nc=n,
        )
        answer = lab.send(request("INVITE", proxy_auth=format_credentials(creds)), ATTACKER)
        statuses.append(answer.status)
    # The first wrong guess burns the nonce: later ones (even the right one) get a fresh
    # challenge and no verdict.
    assert statuses == [403, 407, 407, 407]
    assert lab.to_pbx() == []


# --- finding 5: known and unknown users look the same -----------------------------------------


def test_options_without_a_user_is_answered_by_limen(lab: Lab) -> None:
    ping = parse_message(bytes(request("OPTIONS")).replace(b"sip:8000@203", b"sip:203", 1))
    answer = lab.send(ping, ATTACKER)  # type: ignore[arg-type]
    assert answer.status == 200 and "INVITE" in (answer.get("Allow") or "")
    assert lab.to_pbx() == []


def test_publish_is_refused_for_everyone(lab: Lab) -> None:
    assert shape(lab.send(request("PUBLISH"), ATTACKER))[0] == 405
    assert shape(lab.send(request("PUBLISH"), ATTACKER)) == shape(
        lab.send(request("PUBLISH", user="7999"), ATTACKER)
    )
    assert lab.to_pbx() == []


@pytest.mark.parametrize("method", [m for m in [*METHODS, "INVITE", "REGISTER"] if m != "OPTIONS"])
def test_known_and_unknown_users_get_the_same_answer(lab: Lab, method: str) -> None:
    if method == "REGISTER":
        known = request(method, user="7001", ruri_user="7001")
        unknown = request(method, user="7999", ruri_user="7999")
    else:
        known, unknown = request(method, user="7001"), request(method, user="7999")
    assert shape(lab.send(known, ATTACKER)) == shape(lab.send(unknown, ATTACKER))
    wrong = 'Digest username="{u}", realm="limen.test", nonce="{n}", uri="sip:x", response="{r}"'
    challenge = parse_challenge(
        lab.stack.last.get_all(
            "Proxy-Authenticate" if method != "REGISTER" else "WWW-Authenticate"
        )[0]
    )
    header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    answers = []
    for user in ("7001", "7999"):
        fresh = parse_challenge(
            lab.send(
                request(method, user=user, ruri_user=user if method == "REGISTER" else "8000"),
                ATTACKER,
            ).get_all("WWW-Authenticate" if method == "REGISTER" else "Proxy-Authenticate")[0]
        )
        creds = wrong.format(u=user, n=fresh.nonce, r="0" * 32)
        ruri = user if method == "REGISTER" else "8000"
        req = request(method, user=user, ruri_user=ruri, extra=[f"{header}: {creds}"])
        answers.append(shape(lab.send(req, ATTACKER)))
    assert challenge.realm == "limen.test"
    assert answers[0] == answers[1]
    assert answers[0][0] == 403


# --- in-dialog and malformed requests -----------------------------------------------------------


def test_unknown_dialog_is_481_without_state(lab: Lab) -> None:
    answer = lab.send(request("BYE", to_tag="nosuch"), ATTACKER)
    assert answer.status == 481 and lab.stack.responses[-1][1]


def test_in_dialog_requests_only_from_the_dialogs_side(lab: Lab) -> None:
    lab.gateway.on_request(object(), authenticated(lab, "INVITE", "7001", "pw7001"), ATTACKER)  # type: ignore[arg-type]
    out = lab.to_pbx()[-1]
    # The ICP-side leg is keyed by its Call-ID and our From tag; a set-side source that
    # learnt them cannot talk into it.
    spoof = request("BYE", to_tag=out.from_tag, call_id=out.call_id, contact=False, user="8000")
    assert lab.send(spoof, ATTACKER).status == 481
    assert [r.method for r in lab.to_pbx()] == ["INVITE"]


@pytest.mark.parametrize("method", ["REFER", "SUBSCRIBE", "INVITE"])
def test_dialog_creating_request_without_contact_leaves_nothing(lab: Lab, method: str) -> None:
    lab.bind(lab.ctx.directory.devices["d-7001"])
    req = (
        authenticated(lab, method, "7001", "pw7001")
        if method != "REFER"
        else request(method, contact=False)
    )
    if method != "REFER":
        req = parse_message(bytes(req).replace(b"Contact: <sip:7001@192.0.2.66:5070>\r\n", b""))  # type: ignore[assignment]
    answer = lab.send(req, PHONE)
    assert answer.status == 400
    assert lab.to_pbx() == [] and lab.calls.active_calls == 0
