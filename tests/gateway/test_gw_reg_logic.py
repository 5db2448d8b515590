"""Pure logic of the registrar, set-side auth, upstream client and keepalive: explicit
``now``, a fake stack that records what would be sent, no sockets, no sleeps."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from limen.config import Settings, SipSettings
from limen.gateway.auth import SetSideAuth
from limen.gateway.context import Directory, GatewayContext, LocalAddresses
from limen.gateway.keepalive import Keepalive
from limen.gateway.media import PassthroughMedia
from limen.gateway.registrar import Binding, Registrar, detect_nat, granted_expiry
from limen.gateway.timers import TimerHandle, Timers
from limen.gateway.upstream import UpstreamRegistrar, UpstreamRegistration
from limen.sip import Destination, Request, Response, Source, Transport, parse_message
from limen.sip.digest import answer_challenge, format_credentials, parse_challenge
from limen.sip.headers import parse_name_addr
from limen.store import GlobalOptions
from limen.store.bindings import BindingRepository, StoredBinding
from limen.store.schemas import DeviceCredentials, IcpRecord


class FakeStack:
    def __init__(self) -> None:
        self.now_value = 1000.0
        self.responses: list[Response] = []
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
        self.responses.append(response)

    def respond_stateless(self, txn: object, response: Response) -> None:
        self.responses.append(response)

    def send_request(self, request: Request, dest: Destination, on_event: Any) -> None:
        self.requests.append((request, dest))


DEVICE = DeviceCredentials(
    guid="d-7000",
    setside_username="7000",
    setside_password="setpw",
    icpside_username="icp7000",
    icpside_password="icppw",
    icp="pbx",
    clientid=None,
)
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
PHONE = Source(Transport.UDP, ("203.0.113.10", 5060), ("198.51.100.7", 40000))


def make_ctx(**options: Any) -> tuple[GatewayContext, FakeStack]:
    directory = Directory(
        options=GlobalOptions(sip_udp=True, setside_reg_expiry=600, **options),
        icps={ICP.guid: ICP},
        devices={DEVICE.guid: DEVICE},
    )
    directory._by_setside = {"7000": DEVICE}
    stack = FakeStack()
    ctx = GatewayContext(
        settings=Settings(sip=SipSettings(realm="limen.test", server_header="")),
        stack=stack,  # type: ignore[arg-type]
        directory=directory,
        addresses=LocalAddresses("203.0.113.10", "10.0.0.1", {Transport.UDP: 5060}),
        media=PassthroughMedia(),
    )
    return ctx, stack


def register(
    user: str = "7000",
    *,
    contact: str = "<sip:7000@192.168.1.5:5060>",
    expires: str | None = "300",
    auth: str | None = None,
    cseq: int = 1,
) -> Request:
    lines = [
        "REGISTER sip:limen.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bK-1;rport",
        f"From: <sip:{user}@limen.test>;tag=a",
        f"To: <sip:{user}@limen.test>",
        "Call-ID: reg-1",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
        f"Contact: {contact}",
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    msg = parse_message(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
    assert isinstance(msg, Request)
    return msg


def authorised(
    stack: FakeStack, registrar: Registrar, password: str = "setpw", **kw: Any
) -> Request:
    registrar.handle(None, register(**kw), PHONE, None)  # type: ignore[arg-type]
    challenge = parse_challenge(stack.responses[-1].get_all("WWW-Authenticate")[0])
    creds = answer_challenge(
        challenge, method="REGISTER", uri="sip:limen.test", username="7000", password=password
    )
    return register(auth=format_credentials(creds), **{**kw, "cseq": kw.get("cseq", 1) + 1})


def test_nat_detection_compares_source_with_via_and_contact() -> None:
    req = register()
    contact = req.contacts[0]
    assert detect_nat(req, contact, PHONE)
    same = Source(Transport.UDP, PHONE.local, ("192.168.1.5", 5060))
    assert not detect_nat(req, contact, same)
    other_port = Source(Transport.UDP, PHONE.local, ("192.168.1.5", 5062))
    assert detect_nat(req, contact, other_port)


def test_granted_expiry_is_capped_by_the_set_side_maximum() -> None:
    assert granted_expiry(3600, 900) == 900
    assert granted_expiry(120, 900) == 120


def test_register_challenge_then_binding_and_expiry() -> None:
    ctx, stack = make_ctx()
    registrar = Registrar(ctx, SetSideAuth(ctx, clock=lambda: 5000.0))
    request = authorised(stack, registrar)
    assert stack.responses[-1].status == 401
    assert [
        parse_challenge(v).algorithm for v in stack.responses[-1].get_all("WWW-Authenticate")
    ] == ["MD5", "SHA-256"]
    registrar.handle(None, request, PHONE, None)  # type: ignore[arg-type]
    ok = stack.responses[-1]
    assert ok.status == 200
    assert ok.contacts[0].expires == 300
    binding = registrar.binding_for("d-7000")
    assert binding is not None and binding.nat and binding.expires_at == 1300.0
    assert binding.destination() == Destination(
        Transport.UDP, "198.51.100.7", 40000, None, PHONE.local
    )
    assert str(binding.request_uri()) == "sip:7000@192.168.1.5:5060"
    assert registrar.expire(1299.0) == []
    assert registrar.expire(1300.0) == [binding]
    assert registrar.bindings() == []


def test_too_brief_expiry_gets_423_and_zero_deregisters() -> None:
    ctx, stack = make_ctx()
    registrar = Registrar(ctx, SetSideAuth(ctx, clock=lambda: 5000.0))
    registrar.handle(None, authorised(stack, registrar, expires="10"), PHONE, None)  # type: ignore[arg-type]
    assert stack.responses[-1].status == 423
    assert stack.responses[-1].get("Min-Expires") == "60"
    registrar.handle(None, authorised(stack, registrar, expires="3600"), PHONE, None)  # type: ignore[arg-type]
    assert stack.responses[-1].contacts[0].expires == 600
    registrar.handle(None, authorised(stack, registrar, expires="0", cseq=10), PHONE, None)  # type: ignore[arg-type]
    assert stack.responses[-1].status == 200 and registrar.bindings() == []


def test_wrong_password_and_unknown_user_get_the_same_403() -> None:
    ctx, stack = make_ctx()
    registrar = Registrar(ctx, SetSideAuth(ctx, clock=lambda: 5000.0))
    registrar.handle(None, authorised(stack, registrar, password="nope"), PHONE, None)  # type: ignore[arg-type]
    wrong = stack.responses[-1]
    registrar.handle(None, register("8000"), PHONE, None)  # type: ignore[arg-type]
    challenge = parse_challenge(stack.responses[-1].get_all("WWW-Authenticate")[0])
    creds = answer_challenge(
        challenge, method="REGISTER", uri="sip:x", username="8000", password="x"
    )
    registrar.handle(None, register("8000", auth=format_credentials(creds)), PHONE, None)  # type: ignore[arg-type]
    unknown = stack.responses[-1]
    assert (wrong.status, wrong.reason) == (unknown.status, unknown.reason) == (403, "Forbidden")


def test_stale_nonce_is_rechallenged_with_stale_true() -> None:
    ctx, stack = make_ctx()
    clock = [5000.0]
    registrar = Registrar(ctx, SetSideAuth(ctx, clock=lambda: clock[0]))
    request = authorised(stack, registrar)
    clock[0] += 3600
    registrar.handle(None, request, PHONE, None)  # type: ignore[arg-type]
    assert stack.responses[-1].status == 401
    assert parse_challenge(stack.responses[-1].get_all("WWW-Authenticate")[0]).stale


def test_transport_not_allowed_is_refused() -> None:
    ctx, stack = make_ctx()
    ctx.directory.options = GlobalOptions(sip_udp=False)
    registrar = Registrar(ctx, SetSideAuth(ctx))
    registrar.handle(None, register(), PHONE, None)  # type: ignore[arg-type]
    assert stack.responses[-1].status == 403


def test_challenged_methods_device_override() -> None:
    ctx, _ = make_ctx()
    auth = SetSideAuth(ctx)
    assert auth.challenged_methods(DEVICE) == frozenset({"INVITE", "SUBSCRIBE"})
    custom = DEVICE.model_copy(update={"challenge_methods": ["INVITE"]})
    assert auth.challenged_methods(custom) == frozenset({"INVITE"})


def test_contact_token_maps_back_to_the_device() -> None:
    ctx, _ = make_ctx()
    registrar = Registrar(ctx, token_secret=b"k" * 32)
    token = registrar.contact_token(DEVICE)
    assert token.startswith("lm") and "7000" not in token
    assert registrar.device_for_contact_user(token) == DEVICE
    assert registrar.device_for_contact_user("lmnothing") is None


def test_upstream_register_request_and_schedule() -> None:
    ctx, _stack = make_ctx()
    up = UpstreamRegistrar(ctx, rng=random.Random(1))
    reg = UpstreamRegistration(DEVICE, "lmtoken", "cid@limen", "ftag")
    request = up.build_request(reg, ICP, Destination(Transport.UDP, "10.0.0.2", 5060), 3600)
    text = bytes(request).decode()
    assert text.startswith("REGISTER sip:10.0.0.2 SIP/2.0")
    assert "From: <sip:icp7000@10.0.0.2>;tag=ftag" in text
    assert "Contact: <sip:lmtoken@10.0.0.1:5060>" in text
    assert "203.0.113.10" not in text and "Expires: 3600" in text
    for _ in range(100):
        assert 2880 <= up.refresh_delay(3600) <= 3240
    assert 4.0 <= up.backoff(1) <= 6.0 and up.backoff(20) <= 360.0


def test_keepalive_counts_misses_and_unregisters() -> None:
    ctx, _ = make_ctx(options_hb="Only behind NAT", heartbeat_interval=20)
    registrar = Registrar(ctx)
    nat = Binding("d-7000", "7000", parse_name_addr("<sip:7000@192.168.1.5>"), PHONE, 5000.0, True)
    registrar._bindings["d-7000"] = nat
    keepalive = Keepalive(ctx, registrar, max_misses=2)
    assert keepalive.due(100.0) == []  # first seen: first probe one interval later
    assert keepalive.due(110.0) == []
    assert keepalive.due(120.0) == [nat]
    keepalive._probes["d-7000"].outstanding = 1
    keepalive.answered("d-7000", 1)
    assert keepalive.due(140.0) == [nat]
    keepalive._probes["d-7000"].outstanding = 2
    assert keepalive.due(160.0) == [nat]  # miss 1, probe again
    keepalive._probes["d-7000"].outstanding = 3
    keepalive.failed("d-7000", 3, "timeout")  # miss 2
    assert registrar.binding_for("d-7000") is None and keepalive.unregistered == 1
    # Not behind NAT: no keepalive in "Only behind NAT" mode.
    registrar._bindings["d-7000"] = Binding(
        "d-7000", "7000", parse_name_addr("<sip:7000@1.2.3.4>"), PHONE, 5000.0, False
    )
    assert keepalive.due(200.0) == [] and keepalive.due(300.0) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return Settings(
        config_path=str(tmp_path / "limen.toml"), data_dir=str(tmp_path / "data"), database_url=url
    )


def test_binding_repository_round_trip(store_settings: Settings) -> None:
    from limen.store import open_store

    store = open_store(store_settings)
    try:
        repo = BindingRepository(store)
        now = dt.datetime.now(dt.UTC)
        rows = [
            StoredBinding(
                f"g{i}",
                f"u{i}",
                f"<sip:u{i}@192.0.2.1:5060>",
                "udp",
                "198.51.100.7",
                40000 + i,
                "127.0.0.1",
                5060,
                True,
                f"c{i}",
                2,
                now + dt.timedelta(seconds=60 if i else -5),
            )
            for i in range(3)
        ]
        repo.apply(rows, [])
        assert repo.count() == 3
        live = repo.live(now)
        assert sorted(b.device_guid for b in live) == ["g1", "g2"]  # g0 expired, purged
        assert repo.count() == 2
        got = next(b for b in live if b.device_guid == "g1")
        assert got == rows[1] or abs((got.expires_at - rows[1].expires_at).total_seconds()) < 1e-3
        repo.apply([rows[2]], ["g1"])
        assert [b.device_guid for b in repo.live(now)] == ["g2"]
    finally:
        store.close()
