"""OAuth 1.0a pairing and signed access, driven by oauthlib's own client (HMAC-SHA1 as
MBG's PBX clients sign, plus HMAC-SHA256 and RSA-SHA1)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, SIGNATURE_RSA, Client
from sqlalchemy import update

from limen.core import Core
from limen.store.models import OAuthToken
from limen.store.schemas import ConsumerCreate, Permission

BASE = "https://limen.test"
PERMISSIONS = [
    Permission(path="MBG/mbg/v1/globaloptions/", read=True, write=True),
    Permission(path="/mbg/v1/icps/", read=True, write=False),
    Permission(path="Base/managetoken/", read=True, write=True),
]


@dataclass
class Paired:
    key: str
    secret: str
    token: str
    token_secret: str

    def client(self, **kw: object) -> Client:
        return Client(
            self.key,
            client_secret=self.secret,
            resource_owner_key=self.token,
            resource_owner_secret=self.token_secret,
            **kw,  # type: ignore[arg-type]
        )


def add_consumer(core: Core, name: str = "mv5000", **kw: object) -> str:
    _record, secret = core.store.consumers.create(
        ConsumerCreate(name=name, permissions=PERMISSIONS, **kw)  # type: ignore[arg-type]
    )
    return secret


async def send(
    http: httpx.AsyncClient,
    client: Client,
    method: str,
    path: str,
    body: object = None,
    base: str = BASE,
) -> httpx.Response:
    content = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if content is not None else {}
    uri, signed, _ = client.sign(base + path, http_method=method, body=content, headers=headers)
    return await http.request(method, uri, headers=signed, content=content)


async def pair(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    key: str,
    secret: str,
    base: str = BASE,
    **client_kw: object,
) -> Paired:
    """The whole MBG pairing: initiate, admin approval (verifier), token exchange."""
    initiate = Client(key, client_secret=secret, callback_uri="oob", **client_kw)  # type: ignore[arg-type]
    uri, headers, _ = initiate.sign(base + "/mslrest/initiate", http_method="POST")
    r = await http.post(uri, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
    temp = {k: v[0] for k, v in parse_qs(r.text).items()}
    assert temp["oauth_callback_confirmed"] == "true"

    listed = await http.get(
        "/mslrest/limen/v1/tokens/", params={"status": "pending"}, headers=admin
    )
    pending = [t for t in listed.json()["response"] if t["token"] == temp["oauth_token"]]
    assert pending and pending[0]["consumer"] == key and pending[0]["kind"] == "temporary"
    expires = dt.datetime.fromisoformat(pending[0]["expires_at"])
    created = dt.datetime.fromisoformat(pending[0]["created_at"])
    assert abs((expires - created) - dt.timedelta(minutes=15)) < dt.timedelta(seconds=5)

    r = await http.post(
        "/mslrest/authorize", params={"oauth_token": temp["oauth_token"]}, headers=admin
    )
    assert r.status_code == 200, r.text
    verifier = r.json()["oauth_verifier"]
    assert re.fullmatch(r"\d{6}", verifier)

    exchange = Client(
        key,
        client_secret=secret,
        resource_owner_key=temp["oauth_token"],
        resource_owner_secret=temp["oauth_token_secret"],
        verifier=verifier,
        **client_kw,  # type: ignore[arg-type]
    )
    uri, headers, _ = exchange.sign(base + "/mslrest/token", http_method="POST")
    r = await http.post(uri, headers=headers)
    assert r.status_code == 200, r.text
    final = {k: v[0] for k, v in parse_qs(r.text).items()}
    assert int(final["oauth_expires_in"]) == 365 * 86400
    return Paired(key, secret, final["oauth_token"], final["oauth_token_secret"])


async def test_full_pairing_then_signed_read_and_write(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    paired = await pair(http, admin, "mv5000", add_consumer(core))
    record = core.store.tokens.get(paired.token)
    assert record.kind == "access" and record.consumer == "mv5000"
    assert record.expires_at - record.created_at == dt.timedelta(days=365)

    r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/globaloptions/")
    assert r.status_code == 200 and r.json()["options_hb"] == "Only behind NAT"
    r = await send(
        http, paired.client(), "PUT", "/mslrest/mbg/v1/globaloptions/", {"heartbeat_interval": 45}
    )
    assert r.status_code == 200, r.text
    assert core.store.options.get().heartbeat_interval == 45
    events = core.store.events.list(kind="audit")
    assert events[0].actor == "consumer:mv5000"
    r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/icps/count/")
    assert r.json() == {"count": 0}


async def test_permissions_are_enforced_with_a_reason(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    paired = await pair(http, admin, "mv5000", add_consumer(core))
    r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/devices/sip/")
    assert r.status_code == 403
    assert "lacks Read permission on /mbg/v1/devices/sip/" in r.json()["detail"]
    r = await send(
        http, paired.client(), "POST", "/mslrest/mbg/v1/icps/", {"name": "x", "address": "10.0.0.1"}
    )
    assert r.status_code == 403 and "Write permission" in r.json()["detail"]
    assert core.store.icps.count() == 0
    r = await send(http, paired.client(), "GET", "/mslrest/limen/v1/consumers/")
    assert r.status_code == 403 and "admins" in r.json()["detail"]


async def test_unsigned_badly_signed_and_replayed_requests_are_refused(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    paired = await pair(http, admin, "mv5000", add_consumer(core))
    path = "/mslrest/mbg/v1/globaloptions/"
    unsigned = await http.get(path)
    assert unsigned.status_code == 401 and "OAuth" in unsigned.headers["www-authenticate"]

    forged = Paired(paired.key, "wrong-secret", paired.token, paired.token_secret)
    r = await send(http, forged.client(), "GET", path)
    assert r.status_code == 401 and r.json()["detail"] == "invalid signature"

    uri, headers, _ = paired.client().sign(BASE + path, http_method="GET")
    first = await http.get(uri, headers=headers)
    again = await http.get(uri, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 401 and "replayed" in again.json()["detail"]

    stale = paired.client(timestamp="1500000000")
    r = await send(http, stale, "GET", path)
    assert r.status_code in (400, 401) and "Timestamp" in r.json()["detail"]

    tampered_uri = uri.replace("globaloptions/", "globaloptions/sip_udp/")
    r = await http.get(tampered_uri, headers=headers)
    assert r.status_code == 401


async def test_expired_token_refused_then_admin_renewal_restores_it(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    paired = await pair(http, admin, "mv5000", add_consumer(core))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with core.store.sessions() as s, s.begin():
        s.execute(
            update(OAuthToken).where(OAuthToken.token == paired.token).values(expires_at=past)
        )
    r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/globaloptions/")
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    r = await http.post(f"/mslrest/limen/v1/tokens/{paired.token}/renew/", headers=admin)
    assert r.status_code == 200 and r.json()["expired"] is False
    r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/globaloptions/")
    assert r.status_code == 200


async def test_consumer_renews_its_own_token(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    paired = await pair(http, admin, "mv5000", add_consumer(core))
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with core.store.sessions() as s, s.begin():
        s.execute(
            update(OAuthToken).where(OAuthToken.token == paired.token).values(expires_at=soon)
        )
    r = await send(http, paired.client(), "POST", "/mslrest/managetoken/renew/")
    assert r.status_code == 200, r.text
    expires = dt.datetime.fromisoformat(r.json()["expires_at"])
    assert expires > dt.datetime.now(dt.UTC) + dt.timedelta(days=364)
    assert core.store.tokens.get(paired.token).renewed_at is not None


async def test_rejected_wrong_verifier_and_unapproved_exchanges_fail(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    secret = add_consumer(core)

    async def initiate() -> dict[str, str]:
        client = Client("mv5000", client_secret=secret, callback_uri="oob")
        uri, headers, _ = client.sign(BASE + "/mslrest/initiate", http_method="POST")
        r = await http.post(uri, headers=headers)
        return {k: v[0] for k, v in parse_qs(r.text).items()}

    async def exchange(temp: dict[str, str], verifier: str) -> httpx.Response:
        client = Client(
            "mv5000",
            client_secret=secret,
            resource_owner_key=temp["oauth_token"],
            resource_owner_secret=temp["oauth_token_secret"],
            verifier=verifier,
        )
        uri, headers, _ = client.sign(BASE + "/mslrest/token", http_method="POST")
        return await http.post(uri, headers=headers)

    pending = await initiate()
    r = await exchange(pending, "123456")
    assert r.status_code == 401 and "not approved yet" in r.json()["detail"]

    r = await http.post(
        "/mslrest/authorize",
        params={"oauth_token": pending["oauth_token"], "action": "reject"},
        headers=admin,
    )
    assert r.json()["status"] == "rejected"
    r = await exchange(pending, "123456")
    assert r.status_code == 401 and "rejected" in r.json()["detail"]

    approved = await initiate()
    r = await http.post(
        f"/mslrest/limen/v1/tokens/{approved['oauth_token']}/approve/", headers=admin
    )
    verifier = r.json()["oauth_verifier"]
    wrong = "000000" if verifier != "000000" else "111111"
    r = await exchange(approved, wrong)
    assert r.status_code == 401 and r.json()["detail"] == "wrong verifier"
    assert (await exchange(approved, verifier)).status_code == 200
    r = await exchange(approved, verifier)
    assert r.status_code == 401 and "used" in r.json()["detail"]


async def test_unknown_and_inactive_consumers_are_refused(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    client = Client("stranger", client_secret="whatever", callback_uri="oob")
    uri, headers, _ = client.sign(BASE + "/mslrest/initiate", http_method="POST")
    r = await http.post(uri, headers=headers)
    assert r.status_code == 401 and "unknown consumer" in r.json()["detail"]

    paired = await pair(http, admin, "mv5000", add_consumer(core))
    core.store.consumers.update("mv5000", active=False)
    r = await send(http, paired.client(), "GET", "/mslrest/mbg/v1/globaloptions/")
    assert r.status_code == 401 and "inactive" in r.json()["detail"]


async def test_hmac_sha256_pairing(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core
) -> None:
    paired = await pair(
        http, admin, "mv5000", add_consumer(core), signature_method=SIGNATURE_HMAC_SHA256
    )
    client = paired.client(signature_method=SIGNATURE_HMAC_SHA256)
    r = await send(http, client, "GET", "/mslrest/mbg/v1/globaloptions/")
    assert r.status_code == 200


@pytest.fixture
def rsa_signing() -> rsa.RSAPrivateKey:
    """oauthlib's client signs RSA-SHA1 through PyJWT, absent here: sign with cryptography."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign_rsa_sha1(base_string: str, client: Client) -> str:
        signature = key.sign(base_string.encode("ascii"), padding.PKCS1v15(), hashes.SHA1())
        return base64.b64encode(signature).decode("ascii")

    saved = dict(Client.SIGNATURE_METHODS)
    Client.register_signature_method(SIGNATURE_RSA, sign_rsa_sha1)
    try:
        yield key
    finally:
        Client.SIGNATURE_METHODS.clear()
        Client.SIGNATURE_METHODS.update(saved)


async def test_rsa_sha1_with_the_consumers_public_key(
    http: httpx.AsyncClient, admin: dict[str, str], core: Core, rsa_signing: rsa.RSAPrivateKey
) -> None:
    public = rsa_signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    add_consumer(core, rsa_public_key=public.decode())
    initiate = Client("mv5000", callback_uri="oob", signature_method=SIGNATURE_RSA, rsa_key="x")
    uri, headers, _ = initiate.sign(BASE + "/mslrest/initiate", http_method="POST")
    r = await http.post(uri, headers=headers)
    assert r.status_code == 200, r.text

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    core.store.consumers.create(
        ConsumerCreate(
            name="impostor",
            rsa_public_key=other.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
        )
    )
    wrong = Client("impostor", callback_uri="oob", signature_method=SIGNATURE_RSA, rsa_key="x")
    uri, headers, _ = wrong.sign(BASE + "/mslrest/initiate", http_method="POST")
    r = await http.post(uri, headers=headers)
    assert r.status_code == 401 and r.json()["detail"] == "invalid signature"
