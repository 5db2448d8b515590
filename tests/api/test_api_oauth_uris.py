"""OAuth 1.0a signatures over the URI as sent (RFC 5849 §3.4.1.2), over real HTTPS.

Usernames are path segments: ``+15551234`` is sent as ``%2B15551234``. The signature
covers the percent-encoded path, so the server must verify against the request line,
not the decoded path it routes on. Two independent client implementations sign:
oauthlib's and Authlib's. A path without its trailing slash is served, not redirected.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from authlib.oauth1.rfc5849.client_auth import ClientAuth
from test_api_oauth import Paired, pair

from limen.api import ApiServer
from limen.core import Core
from limen.store import api_tls_paths
from limen.store.schemas import ConsumerCreate, DeviceCreate, IcpCreate, Permission

# Usernames the SIP grammar takes, with characters a URL path must escape.
USERNAMES = ["+15551234", "a*1", "a%41b", "\u00e91001", "x'(1)"]
Signer = Callable[[Paired, str, str, dict[str, str], bytes | None], tuple[str, dict[str, str]]]


def sign_oauthlib(
    paired: Paired, method: str, uri: str, headers: dict[str, str], body: bytes | None
) -> tuple[str, dict[str, str]]:
    signed_uri, signed, _ = paired.client().sign(
        uri, http_method=method, body=body.decode() if body else None, headers=headers
    )
    return signed_uri, signed


def sign_authlib(
    paired: Paired, method: str, uri: str, headers: dict[str, str], body: bytes | None
) -> tuple[str, dict[str, str]]:
    auth = ClientAuth(
        paired.key,
        client_secret=paired.secret,
        token=paired.token,
        token_secret=paired.token_secret,
        signature_method="HMAC-SHA1",
    )
    signed_uri, signed, _ = auth.sign(method, uri, dict(headers), body or b"")
    return signed_uri, dict(signed)


@dataclass
class Node:
    core: Core
    base: str
    http: httpx.AsyncClient
    paired: Paired

    async def signed(
        self, signer: Signer, method: str, path: str, json_body: Any = None
    ) -> httpx.Response:
        import json

        body = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        uri, signed = signer(self.paired, method, self.base + path, headers, body)
        return await self.http.request(method, uri, headers=signed, content=body)


@pytest.fixture
async def node(core: Core, admin: dict[str, str]) -> AsyncIterator[Node]:
    server = ApiServer(core, host="127.0.0.1", port=0)
    await server.start()
    base = f"https://127.0.0.1:{server.port}"
    _record, secret = core.store.consumers.create(
        ConsumerCreate(
            name="mv5000",
            permissions=[Permission(path="/mbg/v1/devices/", read=True, write=True)],
        )
    )
    core.store.icps.create(IcpCreate(name="pbx", address="192.0.2.10"))
    context = ssl.create_default_context(cafile=api_tls_paths(core.settings)[0])
    try:
        async with httpx.AsyncClient(base_url=base, verify=context) as http:
            paired = await pair(http, admin, "mv5000", secret, base=base)
            yield Node(core, base, http, paired)
    finally:
        await server.stop()


@pytest.mark.parametrize("signer", [sign_oauthlib, sign_authlib], ids=["oauthlib", "authlib"])
async def test_signed_get_put_delete_for_usernames_that_need_escaping(
    node: Node, signer: Signer
) -> None:
    for username in USERNAMES:
        node.core.store.devices.create(
            DeviceCreate(setside_username=username, setside_password="pw-secret", icp="pbx")
        )
        for segment in (quote(username, safe=""), quote(username, safe="*'()+")):
            path = f"/mslrest/mbg/v1/devices/sip/{segment}/"
            r = await node.signed(signer, "GET", path)
            assert r.status_code == 200, (username, segment, r.text)
            assert r.json()["setside_username"] == username
            r = await node.signed(signer, "PUT", path, {"description": f"via {segment}"})
            assert r.status_code == 200, (username, segment, r.text)
            assert node.core.store.devices.get(username).description == f"via {segment}"
        r = await node.signed(signer, "DELETE", f"/mslrest/mbg/v1/devices/sip/{quote(username)}/")
        assert r.status_code == 200, (username, r.text)
    assert node.core.store.devices.count() == 0


@pytest.mark.parametrize("signer", [sign_oauthlib, sign_authlib], ids=["oauthlib", "authlib"])
async def test_names_no_device_can_have_are_404_not_invalid_signature(
    node: Node, signer: Signer
) -> None:
    # Spaces, a bare '%', NUL: the signature is good; there is just no such device.
    for segment in ("a%20b", "100%25", "a%00b", "%E2%80%8B"):
        for method, body in (("GET", None), ("PUT", {"description": "x"}), ("DELETE", None)):
            r = await node.signed(signer, method, f"/mslrest/mbg/v1/devices/sip/{segment}/", body)
            assert r.status_code == 404, (segment, method, r.text)


async def test_path_without_trailing_slash_is_served_not_redirected(node: Node) -> None:
    node.core.store.devices.create(
        DeviceCreate(setside_username="+4930123", setside_password="pw-secret", icp="pbx")
    )
    for signer in (sign_oauthlib, sign_authlib):
        r = await node.signed(signer, "GET", "/mslrest/mbg/v1/devices/sip/%2B4930123")
        assert r.status_code == 200, r.text
        assert r.json()["setside_username"] == "+4930123"
        r = await node.signed(signer, "GET", "/mslrest/mbg/v1/devices/sip/count")
        assert r.status_code == 200 and r.json() == {"count": 1}
    # A path that exists neither way is a plain 404, never a redirect.
    r = await node.signed(sign_oauthlib, "GET", "/mslrest/mbg/v1/devices/nothing")
    assert r.status_code == 404


async def test_a_signature_over_another_spelling_of_the_path_is_refused(node: Node) -> None:
    node.core.store.devices.create(
        DeviceCreate(setside_username="+4930123", setside_password="pw-secret", icp="pbx")
    )
    # Signed for a literal '+' but sent as %2B. Both reach the same device once decoded,
    # but '+' is a reserved character (RFC 3986 §2.2), so the two are different URIs and
    # the signature, made over the other one, does not verify.
    path = "/mslrest/mbg/v1/devices/sip/"
    _uri, headers = sign_oauthlib(node.paired, "GET", node.base + path + "+4930123/", {}, None)
    r = await node.http.get(node.base + path + "%2B4930123/", headers=headers)
    assert r.status_code == 401 and r.json()["detail"] == "invalid signature"
    # Lower-case hex and escaped unreserved characters are the same URI (RFC 3986
    # §6.2.2): a signature over the normal form is accepted for them.
    _uri, headers = sign_oauthlib(node.paired, "GET", node.base + path + "%2B4930123/", {}, None)
    r = await node.http.get(node.base + path + "%2b%34930123/", headers=headers)
    assert r.status_code == 200, r.text
