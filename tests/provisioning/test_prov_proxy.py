"""The HTTPS provisioning proxy against a real TLS origin standing in for the PBX."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prov_support import (
    HASH,
    LARGE_SIZE,
    MAC,
    OTHER_HASH,
    FakePbx,
    MakeProxy,
    limen_ca_context,
    raw_request,
    sha256,
)

from limen.config import Settings
from limen.store import Store
from limen.store.schemas import IcpUpdate

pytestmark = pytest.mark.usefixtures("icp")


def client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=limen_ca_context(settings), timeout=10)


async def test_config_file_is_fetched_through_the_hash_path(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    path = f"/{HASH}/ftp_67xxi/{MAC}.cfg"
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}{path}")
    assert response.status_code == 200
    assert response.content == pbx.files[path]
    assert response.headers["x-pbx"] == "fake"
    [seen] = pbx.requests
    assert (seen.method, seen.path) == ("GET", path)
    assert seen.headers["host"] == f"127.0.0.1:{pbx.port}"
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"


async def test_large_file_is_streamed_byte_for_byte(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    path = f"/{HASH}/ftp_67xxi/6867i.st"
    received = bytearray()
    async with (
        client(settings) as http,
        http.stream("GET", f"https://localhost:{proxy.port}{path}") as response,
    ):
        assert response.headers["content-length"] == str(LARGE_SIZE)
        async for chunk in response.aiter_raw():
            received += chunk
    assert len(received) == LARGE_SIZE
    assert sha256(bytes(received)) == sha256(pbx.files[path])


async def test_head_and_post_are_forwarded(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    base = f"https://localhost:{proxy.port}/{HASH}"
    async with client(settings) as http:
        head = await http.head(f"{base}/ftp_67xxi/6867i.st")
        post = await http.post(f"{base}/xml/app", content=b"<AastraIPPhoneExecute/>")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(LARGE_SIZE)
    assert post.status_code == 200 and post.content == b"got <AastraIPPhoneExecute/>"
    assert [(s.method, s.path, s.body) for s in pbx.requests] == [
        ("HEAD", f"/{HASH}/ftp_67xxi/6867i.st", b""),
        ("POST", f"/{HASH}/xml/app", b"<AastraIPPhoneExecute/>"),
    ]


async def test_chunked_request_body_is_streamed_to_the_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()

    async def parts() -> AsyncIterator[bytes]:
        for n in range(3):
            yield b"<part%d/>" % n

    async with client(settings) as http:
        response = await http.post(f"https://localhost:{proxy.port}/{HASH}/xml", content=parts())
    assert response.status_code == 200
    [seen] = pbx.requests
    assert seen.body == b"<part0/><part1/><part2/>"
    assert seen.headers["transfer-encoding"] == "chunked" and "content-length" not in seen.headers


async def test_keep_alive_serves_several_files_on_one_connection(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    base = f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi"
    async with client(settings) as http:
        first = await http.get(f"{base}/aastra.cfg")
        second = await http.get(f"{base}/{MAC}.cfg")
        missing = await http.get(f"{base}/nothing.cfg")
    assert (first.status_code, second.status_code, missing.status_code) == (200, 200, 404)
    assert len(pbx.requests) == 3


async def test_unknown_hash_is_refused_without_contacting_the_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    async with client(settings) as http:
        for path in (f"/{OTHER_HASH}/ftp_67xxi/{MAC}.cfg", "/", "/favicon.ico", f"/{HASH[:-1]}/x"):
            response = await http.get(f"https://localhost:{proxy.port}{path}")
            assert response.status_code == 404, path
    assert pbx.untouched


TRAVERSALS = [
    b"/{h}/../../etc/passwd",
    b"/{h}/ftp_67xxi/../../../etc/passwd",
    b"/{h}/%2e%2e/etc/passwd",
    b"/{h}/%2E%2E/etc/passwd",
    b"/{h}/.%2e/etc/passwd",
    b"/{h}/..%2fetc%2fpasswd",
    b"/{h}/%2e%2e%2fetc",
    b"/{h}/..%5cetc",
    b"/{h}/%5c..%5cetc",
    b"/{h}/..\\etc\\passwd",
    b"/{h}/%252e%252e/etc",
    b"/{h}/%25252e/etc",
    b"/{h}/ftp_67xxi/..;/x",
    b"/{h}/%c0%ae%c0%ae/etc",
    b"/{h}/.../../x",
    b"/{h}/./aastra.cfg",
    b"/{h}//etc/passwd",
    b"/{h}/x%00.cfg",
    b"/{h}/%zz",
    b"https://127.0.0.1:{p}/{h}/ftp_67xxi/aastra.cfg",
    b"http://localhost/{h}/aastra.cfg",
    b"127.0.0.1:{p}",
    b"*",
]


async def test_traversal_and_absolute_urls_never_reach_the_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    context = limen_ca_context(settings)
    for template in TRAVERSALS:
        target = template.replace(b"{h}", HASH.encode()).replace(b"{p}", str(pbx.port).encode())
        response = await raw_request(
            proxy.port, context, b"GET " + target + b" HTTP/1.1\r\nHost: localhost"
        )
        assert response.status == 400, target
        assert HASH.encode() not in response.body
    assert pbx.untouched


async def test_oversize_headers_and_malformed_requests_are_400(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(max_header_bytes=4096)
    context = limen_ca_context(settings)
    path = f"/{HASH}/ftp_67xxi/aastra.cfg".encode()
    big = await raw_request(
        proxy.port, context, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000
    )
    no_host = await raw_request(proxy.port, context, b"GET " + path + b" HTTP/1.1")
    garbage = await raw_request(proxy.port, context, b"NOT HTTP AT ALL")
    assert (big.status, no_host.status, garbage.status) == (400, 400, 400)
    assert pbx.untouched


async def test_slow_headers_are_cut_after_the_header_timeout(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(header_timeout=0.3)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.port, ssl=limen_ca_context(settings), server_hostname="localhost"
    )
    started = time.monotonic()
    writer.write(f"GET /{HASH}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\n".encode())
    for _ in range(3):
        await asyncio.sleep(0.05)
        writer.write(b"X-Slow: 1\r\n")
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert time.monotonic() - started < 1.5
    writer.close()
    assert pbx.untouched


async def test_connections_per_source_are_capped(make_proxy: MakeProxy, settings: Settings) -> None:
    proxy = await make_proxy(max_connections_per_source=1)
    context = limen_ca_context(settings)
    _r1, first = await asyncio.open_connection(
        "127.0.0.1", proxy.port, ssl=context, server_hostname="localhost"
    )
    await asyncio.sleep(0.05)
    # Refused at accept(), before any TLS: the client's handshake fails or it reads EOF.
    try:
        second_reader, second = await asyncio.open_connection(
            "127.0.0.1", proxy.port, ssl=context, server_hostname="localhost"
        )
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    else:
        assert await asyncio.wait_for(second_reader.read(), 3) == b""
        second.close()
    assert proxy.counters()["provisioning_refusals_total"] == {"connection_limit": 1}
    first.close()


async def test_other_methods_are_405(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy()
    context = limen_ca_context(settings)
    path = f"/{HASH}/ftp_67xxi/aastra.cfg".encode()
    for method in (b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"get", b"CONNECT", b"TRACE"):
        response = await raw_request(
            proxy.port, context, method + b" " + path + b" HTTP/1.1\r\nHost: x"
        )
        assert response.status == 405, method
        assert response.headers["allow"] == "GET, HEAD, POST"
    assert pbx.untouched


async def test_request_body_above_the_cap_is_413(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(max_request_body=1024)
    async with client(settings) as http:
        response = await http.post(f"https://localhost:{proxy.port}/{HASH}/x", content=b"a" * 2048)
    assert response.status_code == 413
    assert pbx.untouched


async def test_rate_limit_answers_429_without_contacting_the_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(rate_limit_burst=5, rate_limit_per_minute=1)
    url = f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/aastra.cfg"
    statuses = []
    async with client(settings) as http:
        for _ in range(8):
            response = await http.get(url)
            statuses.append(response.status_code)
    assert statuses == [200] * 5 + [429] * 3
    assert response.headers["retry-after"].isdigit()
    assert len(pbx.requests) == 5


async def test_hash_guessing_blocks_the_source(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings, store: Store
) -> None:
    proxy = await make_proxy(guess_limit=3, guess_block=60)
    failures: list[tuple[str, str | None, str]] = []
    proxy.on_auth_failure = lambda ip, user, kind: failures.append((ip, user, kind))
    base = f"https://localhost:{proxy.port}"
    async with client(settings) as http:
        guesses = [
            (await http.get(f"{base}/{n:032x}/ftp_67xxi/aastra.cfg")).status_code for n in range(3)
        ]
        # Further guesses are refused without a lookup's answer while the block lasts.
        blocked = await http.get(f"{base}/{99:032x}/ftp_67xxi/aastra.cfg")
    assert guesses == [404, 404, 404]
    assert blocked.status_code == 403
    assert pbx.untouched
    assert failures == [("127.0.0.1", None, "provisioning")] * 3
    for _ in range(50):
        if store.events.count(kind="alarm"):
            break
        await asyncio.sleep(0.02)
    [event] = store.events.list(kind="alarm")
    assert "127.0.0.1 blocked" in event.message and event.source == "provisioning"


async def test_hash_guessing_block_expires(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    now = [1000.0]
    proxy = await make_proxy(guess_limit=2, guess_block=30)
    proxy.clock = lambda: now[0]
    base = f"https://localhost:{proxy.port}"
    async with client(settings) as http:
        for n in range(2):
            await http.get(f"{base}/{n:032x}/x")
        assert (await http.get(f"{base}/{7:032x}/x")).status_code == 403
        now[0] += 31
        assert (await http.get(f"{base}/{7:032x}/x")).status_code == 404


async def test_a_phone_behind_the_guessers_nat_still_gets_its_files(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    # Issue 10: the guesser and the phone share 127.0.0.1 (one NAT address). The block
    # holds the guesser's wrong hashes; the phone's right hash still goes through, and the
    # guesser's exhausted rate bucket is not the phone's.
    proxy = await make_proxy(guess_limit=3, guess_block=600, rate_limit_burst=5)
    base = f"https://localhost:{proxy.port}"
    async with client(settings) as http:
        guesses = [(await http.get(f"{base}/{n:032x}/aastra.cfg")).status_code for n in range(12)]
        phone = [
            (await http.get(f"{base}/{HASH}/ftp_67xxi/aastra.cfg")).status_code for _ in range(3)
        ]
    assert guesses[:3] == [404, 404, 404]
    assert set(guesses[3:]) <= {403, 429} and 403 in guesses[3:]
    assert phone == [200, 200, 200]
    assert len(pbx.requests) == 3


async def test_upstream_that_never_answers_gives_504_within_the_timeout(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(read_timeout=0.5)
    started = time.monotonic()
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/slow")
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert 0.4 < elapsed < 3.0
    assert [r.path for r in pbx.requests] == [f"/{HASH}/slow"]


async def test_unreachable_pbx_gives_502(
    make_proxy: MakeProxy, store: Store, settings: Settings
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    store.icps.update("mv5000", IcpUpdate(xml_destination_port=closed_port))
    proxy = await make_proxy()
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/aastra.cfg")
    assert response.status_code == 502


async def test_response_above_the_size_cap_is_refused(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(max_response_bytes=1024 * 1024)
    async with client(settings) as http:
        declared = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/6867i.st")
        chunked = await http.get(f"https://localhost:{proxy.port}/{HASH}/chunked")
    assert declared.status_code == 502
    assert chunked.status_code == 200 and len(chunked.content) == 4 * 4096

    small = await make_proxy(max_response_bytes=8192)
    async with client(settings) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"https://localhost:{small.port}/{HASH}/chunked")


async def test_disabled_link_is_503_without_contacting_the_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, store: Store, settings: Settings
) -> None:
    store.icps.update("mv5000", IcpUpdate(link_enabled=False))
    proxy = await make_proxy()
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/aastra.cfg")
    assert response.status_code == 503
    assert pbx.untouched


# -- upstream TLS -------------------------------------------------------------------------


async def test_upstream_verified_against_a_ca_file(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(upstream_pin_sha256="", upstream_ca_file=str(pbx.ca_file))
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
    assert response.status_code == 200
    assert proxy.upstream.mode == "ca"


async def test_upstream_with_the_wrong_ca_is_502_and_gets_no_request(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    from limen.certs import ensure_certificates

    ensure_certificates(settings)
    wrong_ca = settings.data_path / "tls" / "ca.pem"  # Limen's own CA did not sign the PBX
    proxy = await make_proxy(upstream_pin_sha256="", upstream_ca_file=str(wrong_ca))
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
    assert response.status_code == 502
    assert pbx.requests == []


async def test_upstream_with_the_system_store_rejects_a_private_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(upstream_pin_sha256="")
    assert proxy.upstream.mode == "system"
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
    assert response.status_code == 502
    assert pbx.requests == []


async def test_upstream_pin_mismatch_is_502_and_the_request_is_never_sent(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(upstream_pin_sha256="00" * 32)
    async with client(settings) as http:
        response = await http.post(
            f"https://localhost:{proxy.port}/{HASH}/xml/app", content=b"secret"
        )
    assert response.status_code == 502
    assert pbx.requests == []


async def test_upstream_pin_with_ca_both_must_hold(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings
) -> None:
    proxy = await make_proxy(upstream_ca_file=str(pbx.ca_file))
    assert proxy.upstream.mode == "ca+pin"
    async with client(settings) as http:
        response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
    assert response.status_code == 200


async def test_no_verification_warns_at_start_and_on_each_use(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="limen.provisioning")
    proxy = await make_proxy(upstream_pin_sha256="", upstream_verify=False)
    at_start = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(at_start) == 1
    async with client(settings) as http:
        for _ in range(2):
            response = await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
            assert response.status_code == 200
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 3


# -- Limen's own certificate, as a phone sees it ------------------------------------------


async def test_phone_verifies_limen_with_the_exported_ca_by_name_and_by_ip(
    make_proxy: MakeProxy, settings: Settings
) -> None:
    proxy = await make_proxy()
    context = limen_ca_context(settings)
    for host in ("localhost", "127.0.0.1"):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.port, ssl=context, server_hostname=host
        )
        assert writer.get_extra_info("peercert") is not None
        writer.close()
    strange = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", proxy.port, ssl=strange, server_hostname=host)
    context = limen_ca_context(settings)
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(
            "127.0.0.1", proxy.port, ssl=context, server_hostname="other.example"
        )


# -- access log and metrics ---------------------------------------------------------------


async def test_access_log_line_per_request_without_the_hash(
    make_proxy: MakeProxy, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="limen.provisioning.access")
    proxy = await make_proxy()
    async with client(settings) as http:
        await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
        await http.get(f"https://localhost:{proxy.port}/{OTHER_HASH}/aastra.cfg")
        await http.get(
            f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/aastra.cfg",
            headers={"User-Agent": "Aastra6867i MAC:08-00-0F-9F-73-05 V:5.1.0.2124-SIP"},
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "limen.provisioning.access"]
    assert len(lines) == 3
    ok, unknown, agent = lines
    assert "source=127.0.0.1" in ok and "method=GET" in ok
    assert f"path=/{{hash}}/ftp_67xxi/{MAC}.cfg" in ok
    assert f"mac={MAC}" in ok and "icp=mv5000" in ok and "status=200" in ok
    assert "bytes=26 " in ok and 'outcome="proxied"' in ok and "duration=" in ok
    assert "status=404" in unknown and "icp=-" in unknown and 'outcome="unknown_hash"' in unknown
    assert "mac=08000F9F7305" in agent
    assert all(HASH not in line and OTHER_HASH not in line for line in lines)
    [first, *_] = proxy.recent
    assert first.time.tzinfo is not None and first.duration >= 0


async def test_metrics_per_icp(make_proxy: MakeProxy, settings: Settings) -> None:
    proxy = await make_proxy()
    async with client(settings) as http:
        await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/{MAC}.cfg")
        await http.get(f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/none.cfg")
        await http.get(f"https://localhost:{proxy.port}/{OTHER_HASH}/x")
    counters = proxy.counters()
    assert counters["provisioning_requests_total"] == {"mv5000": 2}
    assert counters["provisioning_status_2xx_total"] == {"mv5000": 1}
    assert counters["provisioning_status_4xx_total"] == {"mv5000": 1}
    assert counters["provisioning_bytes_sent_total"] == {"mv5000": 26}
    assert counters["provisioning_refusals_total"] == {"unknown_hash": 1}


async def test_hash_change_is_seen_at_once(
    make_proxy: MakeProxy, pbx: FakePbx, store: Store, settings: Settings
) -> None:
    proxy = await make_proxy()
    url = f"https://localhost:{proxy.port}/{HASH}/ftp_67xxi/aastra.cfg"
    async with client(settings) as http:
        assert (await http.get(url)).status_code == 200
        store.icps.update("mv5000", IcpUpdate(hashes=[OTHER_HASH]))
        await asyncio.sleep(0)
        assert (await http.get(url)).status_code == 404


async def test_serve_provisioning_runs_until_cancelled(
    settings: Settings, store: Store, pbx: FakePbx
) -> None:
    import socket

    from limen.config import ProvisioningSettings
    from limen.core import Core
    from limen.provisioning import serve_provisioning

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    prov = ProvisioningSettings(upstream_pin_sha256=pbx.fingerprint)
    core = Core(settings=settings.model_copy(update={"provisioning": prov}), store=store)
    task = asyncio.create_task(serve_provisioning(core, "127.0.0.1", port))
    try:
        for _ in range(100):
            try:
                async with client(settings) as http:
                    response = await http.get(
                        f"https://localhost:{port}/{HASH}/ftp_67xxi/aastra.cfg"
                    )
                break
            except (httpx.ConnectError, FileNotFoundError, ssl.SSLError):
                await asyncio.sleep(0.05)
        assert response.status_code == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


SMUGGLING_CASES = {
    "query": (b"GET /{h}/ftp_67xxi/aastra.cfg?file=../../x HTTP/1.1\r\nHost: x", b""),
    "empty query": (b"GET /{h}/ftp_67xxi/aastra.cfg? HTTP/1.1\r\nHost: x", b""),
    "x-original-url": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nX-Original-URL: /{o}/x.cfg",
        b"",
    ),
    "x-rewrite-url": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nX-Rewrite-URL: /admin",
        b"",
    ),
    "x-forwarded-for": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1",
        b"",
    ),
    "x-forwarded-host": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: pbx",
        b"",
    ),
    "forwarded": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nForwarded: for=10.0.0.1",
        b"",
    ),
    "get with body": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nContent-Length: 44",
        b"GET /{o}/x.cfg HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    "get chunked": (
        b"GET /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
        b"2c\r\nGET /{o}/x.cfg HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
    ),
    "head with body": (
        b"HEAD /{h}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x\r\nContent-Length: 3",
        b"abc",
    ),
    "one dot leader": ("GET /{h}/\u2024\u2024/aastra.cfg HTTP/1.1\r\nHost: x".encode(), b""),
    "fullwidth stop": (b"GET /{h}/%EF%BC%8E%EF%BC%8E/aastra.cfg HTTP/1.1\r\nHost: x", b""),
    "fullwidth slash": (b"GET /{h}/ftp_67xxi%EF%BC%8Faastra.cfg HTTP/1.1\r\nHost: x", b""),
}


@pytest.mark.parametrize("case", sorted(SMUGGLING_CASES))
async def test_smuggling_and_steering_never_reach_the_pbx(
    make_proxy: MakeProxy, pbx: FakePbx, settings: Settings, case: str
) -> None:
    proxy = await make_proxy()
    head, body = SMUGGLING_CASES[case]
    fill = {b"{h}": HASH.encode(), b"{o}": OTHER_HASH.encode()}
    for key, value in fill.items():
        head, body = head.replace(key, value), body.replace(key, value)
    response = await raw_request(proxy.port, limen_ca_context(settings), head, body)
    assert response.status == 400, case
    assert pbx.untouched
    # Control: the same request done right is delivered.
    ok = await raw_request(
        proxy.port,
        limen_ca_context(settings),
        f"GET /{HASH}/ftp_67xxi/aastra.cfg HTTP/1.1\r\nHost: x".encode(),
    )
    assert ok.status == 200 and len(pbx.requests) == 1
