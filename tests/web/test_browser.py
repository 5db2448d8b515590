"""The administrator's path through the console in a real browser.

Debian's Chromium (``/usr/bin/chromium``, installed by scripts/test.sh) driven by
Playwright for Python, headless, with a fresh profile; no browser is ever downloaded.
Limen runs in-process (``limen.app.start``: SIP on 127.0.0.1, the admin HTTPS port with
the API and the console, the media relay), Kamailio plays the PBX on 127.0.0.2 (the call
tests' launcher), SIPp plays the phone (after a small Python UA registered it) and a PBX
extension; the test sends the phone's RTP to the relay, so the call has statistics.

Walked: log in; add an ICP (with an XSS payload as description); import a CSV with a bad
line and read the error shown against it; add a consumer with the permission grid; pair a
PBX whose side is a real OAuth 1.0a client (oauthlib), approving its token in the page and
reading the verifier; watch the call appear with per-stream statistics (htmx polling);
open its ladder and a message; fetch its pcap through the page's request context and read
it with tshark; the security checks (no session → login, POST without CSRF → 403,
payloads inert, no dialog ever opened). Every screen is screenshotted at desktop and
narrow width (into ``LIMEN_UI_SHOTS`` when set, as docs/ui/ was made, else tmp).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "gateway"))

from gw_call_support import (
    PBX_HOST,
    Kamailio,
    UdpUa,
    free_udp_port,
    sipp,
    start_kamailio,
    wait_for,
)
from oauthlib.oauth1 import Client

from limen.app import RunningApp, prepare, start
from limen.config import (
    ApiSettings,
    MediaSettings,
    ProvisioningSettings,
    Settings,
    SipSettings,
)
from limen.sip import Transport
from limen.store import open_store

pytestmark = [pytest.mark.peers, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
PHONE_SCENARIO = Path(__file__).with_name("scenarios") / "phone_call_15s"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "console-test-pw-1"
XSS = '<script>alert("icp")</script><img src=x onerror=alert(2)>{{7*7}}'
DESKTOP = {"width": 1280, "height": 860}
NARROW = {"width": 390, "height": 844}


def register_subscribers() -> dict[str, str]:
    return {"icp2001": "icp-pw-2001", "ext3901": "pw-ext3901"}


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    kam = start_kamailio(tmp_path_factory.mktemp("kamailio"), register_subscribers())
    try:
        yield kam
    finally:
        kam.stop()


@pytest.fixture
async def limen(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = Settings(
        config_path=str(tmp_path / "limen.toml"),
        data_dir=str(tmp_path / "data"),
        public_fqdn="limen.test",
        public_ip="127.0.0.1",
        sip=SipSettings(
            bind="127.0.0.1",
            lan_ip="127.0.0.1",
            udp_port=0,
            tcp_port=0,
            tls=False,
            realm="limen.test",
            server_header="",
        ),
        api=ApiSettings(bind="127.0.0.1", port=0),
        provisioning=ProvisioningSettings(enabled=False),
        media=MediaSettings(relay=True, bind="127.0.0.1"),
    )
    prepare(settings)
    store = open_store(settings)
    try:
        store.admins.set_password("admin", PASSWORD)
        # Plain RTP from the test phone; no keepalives to disturb the ladder.
        store.options.set(
            {"sip_udp": True, "options_keepalive": "Never", "set_side_rtp_security": "Prefer"}
        )
    finally:
        store.close()
    app = await start(settings)
    try:
        yield app
    finally:
        await app.close()


def rtp_packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5EED0001) + b"\xff" * 160


class Shots:
    """Screenshots of each screen at desktop and narrow width."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    async def take(self, page: Any, name: str) -> None:
        for label, size in (("desktop", DESKTOP), ("narrow", NARROW)):
            await page.set_viewport_size(size)
            path = self.folder / f"{name}-{label}.png"
            await page.screenshot(path=str(path))
            self.taken.append(path)
        await page.set_viewport_size(DESKTOP)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
async def test_admin_path_in_a_real_browser(
    tmp_path: Path, limen: RunningApp, kamailio: Kamailio
) -> None:
    from playwright.async_api import async_playwright, expect

    assert limen.api is not None
    base = f"https://127.0.0.1:{limen.api.port}"
    shots = Shots(Path(os.environ.get("LIMEN_UI_SHOTS") or tmp_path / "shots"))
    dialogs: list[str] = []
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_https_errors=True,
            viewport=DESKTOP,
        )
        try:
            page = await context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            expect.set_options(timeout=10_000)

            # -- no session: the login form; then log in ------------------------------
            await page.goto(base + "/console/devices")
            await expect(page).to_have_url(base + "/console/login")
            await shots.take(page, "login")
            await page.fill("#username", "admin")
            await page.fill("#password", "wrong password")
            await page.click("button[type=submit]")
            await expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
            # Counted by the gateway's guard with the API's and SIP's failures.
            assert limen.guard is not None and limen.guard.failures.get("console") == 1
            await page.fill("#username", "admin")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("h1")).to_have_text("Dashboard")

            # -- add an ICP (Kamailio), with markup as its description -----------------
            await page.click("nav >> text=ICPs")
            await page.click("text=Add ICP")
            await page.fill("#name", "pbx")
            await page.fill("#address", PBX_HOST)
            await page.fill("#port", str(kamailio.port))
            await page.select_option("#transport", "udp")
            await page.fill("#description", XSS)
            await page.fill("#hashes", "16a78df75f29020a19fb5fd14bfac940")
            await shots.take(page, "icp-form")
            await page.click("button.primary")
            await expect(page.locator("#icps")).to_contain_text("pbx")
            await expect(page.locator("#icps")).to_contain_text('<script>alert("icp")</script>')
            await shots.take(page, "icps")

            # -- CSV import with a bad line --------------------------------------------
            csv = (
                "setside_username,setside_password,icp,icpside_username,icpside_password,"
                "clientid,description\n"
                "2001,set-2001,pbx,icp2001,icp-pw-2001,00085D4330B8,Reception <b>desk</b>\n"
                "2002,set-2002,pbx,icp2002,icp-pw-2002,not-a-mac,Kitchen\n"
            )
            await page.goto(base + "/console/devices/import")
            await page.fill("#text", csv)
            await page.click("button.primary")
            bad = page.locator("#import-lines tr.bad")
            await expect(bad).to_have_count(1)
            await expect(bad.locator("td").first).to_have_text("3")
            await expect(bad).to_contain_text("is not a MAC address")
            await expect(page.locator("#import-result")).to_contain_text("nothing was imported")
            await shots.take(page, "device-import")
            await page.fill("#text", csv)
            await page.check("#skip_bad")
            await page.click("button.primary")
            await expect(page.locator("#import-result")).to_contain_text("1 device(s) imported")
            await page.goto(base + "/console/devices")
            await expect(page.locator("#devices")).to_contain_text("Reception <b>desk</b>")
            # Search as you type (htmx swaps the table, the URL follows).
            await page.fill("#q", "kitchen-nobody")
            await expect(page.locator("#device-count")).to_contain_text("0 device(s)")
            await expect(page).to_have_url(re.compile(r"q=kitchen-nobody"))
            await page.fill("#q", "00:08:5d:43:30:b8")
            await expect(page.locator("#device-count")).to_contain_text("1 device(s)")

            # -- a consumer with the permission grid, then the PBX pairs ------------------
            await page.goto(base + "/console/services")
            await page.fill("#name", "mv5000")
            await page.click("#grant-all")
            await shots.take(page, "services-new-consumer")
            await page.click("text=Add consumer")
            secret = await page.locator("#shared-secret").inner_text()
            async with httpx.AsyncClient(verify=False, base_url=base) as pbx_http:
                pbx = Client("mv5000", client_secret=secret, callback_uri="oob")
                uri, headers, _ = pbx.sign(base + "/mslrest/initiate", http_method="POST")
                r = await pbx_http.post(uri, headers=headers)
                assert r.status_code == 200, r.text
                temp = {k: v[0] for k, v in parse_qs(r.text).items()}
                await page.reload()
                row = page.locator(f'#temporary-tokens tr[data-token="{temp["oauth_token"]}"]')
                await row.locator("text=Approve").click()
                verifier = await row.locator(".verifier").inner_text()
                assert re.fullmatch(r"\d{6}", verifier), verifier
                await shots.take(page, "services-verifier")
                pbx = Client(
                    "mv5000",
                    client_secret=secret,
                    resource_owner_key=temp["oauth_token"],
                    resource_owner_secret=temp["oauth_token_secret"],
                    verifier=verifier,
                )
                uri, headers, _ = pbx.sign(base + "/mslrest/token", http_method="POST")
                r = await pbx_http.post(uri, headers=headers)
                assert r.status_code == 200, r.text
                final = parse_qs(r.text)["oauth_token"][0]
            await page.reload()
            await expect(page.locator("#final-tokens")).to_contain_text(final)

            # -- a call from the phone through Limen to a PBX extension ---------------
            ext = UdpUa("ext3901", "pw-ext3901", (PBX_HOST, kamailio.port))
            try:
                assert (await ext.register()).status == 200
                ext_port = ext.port
            finally:
                ext.close()
            callee = await sipp(tmp_path, "ext", "uas_rr", "-rtp_echo", port=ext_port)
            # The phone registers (a small UA), then SIPp places the call as that phone
            # (answering Limen's 407) and talks for 15 s before its BYE.
            registrar = UdpUa("2001", "set-2001", ("127.0.0.1", limen.port(Transport.UDP)))
            try:
                assert (await registrar.register()).status == 200
            finally:
                registrar.close()
            caller = await sipp(
                tmp_path,
                "phone",
                str(PHONE_SCENARIO),
                port=free_udp_port(),
                remote=f"127.0.0.1:{limen.port(Transport.UDP)}",
                inf="2001;127.0.0.1;[authentication username=2001 password=set-2001];ext3901",
            )
            media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            media.bind(("127.0.0.1", 0))
            media.setblocking(False)
            loop = asyncio.get_running_loop()
            sender: asyncio.Task[None] | None = None
            try:
                await wait_for(
                    lambda: any(c["state"] == "confirmed" for c in limen.core.metrics.calls()),
                    timeout=10,
                )
                [call] = limen.core.metrics.calls()
                relay_port = call["media"]["legs"]["set"]["streams"][0]["local_port"]

                async def talk() -> None:
                    # The phone's RTP, toward Limen's set-side port (latched on arrival).
                    for seq in range(1, 700):
                        await loop.sock_sendto(media, rtp_packet(seq), ("127.0.0.1", relay_port))
                        await asyncio.sleep(0.02)

                sender = asyncio.create_task(talk())
                await page.goto(base + "/console/calls")
                call_row = page.locator("#live-calls tr.call")
                await expect(call_row).to_have_count(1)
                await expect(call_row).to_contain_text("2001")
                # htmx polling brings growing packet counts without a reload.
                await expect(call_row.locator("td.packets").first).not_to_have_text("0")
                first = int(await call_row.locator("td.packets").first.inner_text())
                await expect(call_row.locator("td.packets").first).not_to_have_text(str(first))
                await expect(call_row.locator("td.mos").first).to_have_text(re.compile(r"\d\.\d"))
                await shots.take(page, "calls")
                await page.goto(base + "/console/")
                await expect(page.locator("#active-calls")).to_have_text("1")
                await expect(page.locator("#registrations")).to_have_text("1")
                await shots.take(page, "dashboard")

                # -- the ladder of the call in progress, one message, the pcap -------------
                await page.goto(base + "/console/calls")
                await page.locator("#live-calls >> text=Ladder").click()
                await expect(page.locator("h1")).to_contain_text("SIP ladder")
                arrows = page.locator("svg.ladder a.msg")
                assert await arrows.count() >= 8  # INVITE/407/ACK/INVITE/... both legs
                await arrows.nth(0).click()
                await expect(page.locator("#message-text")).to_contain_text("INVITE sip:ext3901")
                await expect(page.locator("#message-text")).to_contain_text(
                    "User-Agent: sipp-phone"
                )
                await expect(page.locator("#message h2")).to_contain_text("received from the phone")
                await shots.take(page, "ladder")
                href = await page.locator("#pcap").get_attribute("href")
                assert href is not None
                response = await page.request.get(base + href)
                assert response.status == 200
                pcap = tmp_path / "call.pcap"
                pcap.write_bytes(await response.body())
                assert await caller.wait(30) == 0, caller.explain()
            finally:
                if sender is not None:
                    sender.cancel()
                media.close()
            assert await callee.wait() == 0, callee.explain()
            assert limen.calls is not None
            await wait_for(lambda: limen.calls is not None and limen.calls.active_calls == 0)
            await page.goto(base + "/console/calls")
            recent = page.locator("#recent-calls tr[data-key]").first
            await expect(recent).to_contain_text("answered")
            await expect(recent).to_contain_text("BYE from the set side")
            if shutil.which("tshark") is not None:
                sip_port = limen.port(Transport.UDP)
                read = subprocess.run(
                    ["tshark", "-r", str(pcap), "-d", f"udp.port=={sip_port},sip", "-T", "json",
                     "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID"],
                    capture_output=True, text=True, timeout=60, check=True,
                )  # fmt: skip
                layers = [p["_source"]["layers"] for p in json.loads(read.stdout)]
                methods = [
                    (p.get("sip.Method") or p.get("sip.Status-Code") or ["?"])[0] for p in layers
                ]
                assert methods.count("INVITE") >= 3 and "407" in methods and "200" in methods
                assert len({p["sip.Call-ID"][0] for p in layers}) == 2  # both legs

            # -- the other screens, for the record -------------------------------------
            for name, path in (
                ("devices", "/console/devices"),
                ("settings", "/console/settings"),
                ("overrides", "/console/overrides"),
                ("services", "/console/services"),
                ("certificates", "/console/certificates"),
                ("provisioning", "/console/provisioning"),
                ("events", "/console/events?kind=all&state=all"),
                ("bans", "/console/bans"),
                ("password", "/console/password"),
            ):
                await page.goto(base + path)
                await expect(page.locator("h1")).to_be_visible()
                await shots.take(page, name)

            # -- security -------------------------------------------------------------------
            r = await page.request.post(
                base + "/console/icps/new", form={"name": "sneaky", "address": "10.9.9.9"}
            )
            assert r.status == 403  # the session cookie went along; the CSRF token did not
            assert "sneaky" not in await (await page.request.get(base + "/console/icps")).text()
            fresh = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                stranger = await fresh.new_page(ignore_https_errors=True)
                await stranger.goto(base + "/console/services")
                assert stranger.url == base + "/console/login"
            finally:
                await fresh.close()
            assert dialogs == []  # no payload ever ran
        finally:
            await context.close()
    assert len(shots.taken) >= 2 * 16
