"""The acceptance lab of issue 4, built in network namespaces (peers.md §8).

```
 homepc 192.168.77.2 -- 192.168.77.1 [home: nft masquerade] 198.51.100.2 -- 198.51.100.1 [wan]
                                                                               203.0.113.1
                                                                                    |
     [lan] 10.10.0.2 (+.3) -- 10.10.0.1 [dmz: Limen, 2 NICs, ip_forward=0] 203.0.113.10
```

- ``lan``: Kamailio (registrar + proxy, digest auth from SQLite; its subscribers are the
  devices' ICP-side credentials and the PBX extensions) on 10.10.0.2:5060/UDP, and SIPp
  PBX extensions. The Kamailio configuration is the one of the loopback call tests
  (``gw_call_support.KAMAILIO_CFG``), bound to the lan address.
- ``dmz``: ``limen serve`` (public_ip = WAN address, sip.lan_ip = LAN address, binds
  0.0.0.0), store made with the CLI (``limen icp add``, ``limen device import``).
- ``wan``: the internet router, also hosts phones with a public address (no NAT).
- ``home`` NATs ``homepc``, where phones live behind NAT.

Namespace names get a random suffix per run. Every daemon is started by hand and stopped
by its PID; the namespaces are deleted at the end even on failure. Nothing leaves the
namespaces (IP literals only, no DNS).

Without root or the tools the tests FAIL; ``LIMEN_TEST_NO_NETNS=1`` /
``LIMEN_TEST_NO_PEERS=1`` skip them knowingly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import itertools
import json
import math
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gw_call_support import KAMAILIO_CFG, Sipp
from kamailio_lab import Kamailio
from peer_support import LIMEN, require_tool

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
GATEWAY_SCENARIOS = HERE.parent / "gateway" / "scenarios"

PBX_IP = "10.10.0.2"
PBX_PORT = 5060
# PBX extensions (SIPp) have their own address in lan: Kamailio's alias covers every port
# of its own address, so a Contact on 10.10.0.2 would look like "myself" to loose_route().
EXT_IP = "10.10.0.3"
DMZ_LAN_IP = "10.10.0.1"
PUBLIC_IP = "203.0.113.10"
WAN_IP = "203.0.113.1"
HOME_PUBLIC_IP = "198.51.100.2"
HOMEPC_IP = "192.168.77.2"
LIMEN_SIP = f"{PUBLIC_IP}:5060"
ROLES = ("wan", "dmz", "lan", "home", "homepc")
# More internet hosts on the wan router's DMZ-facing link (issue 10): a second attacker,
# a phone with a public address, and the 50 sources of the flood tests.
ATTACKER_IP = "203.0.113.2"
WAN_PHONE_IP = "203.0.113.5"
FLOOD_IPS = [f"203.0.113.{100 + i}" for i in range(50)]

# Devices (set-side users) and PBX extensions provisioned for the whole session; each
# scenario uses its own range so the modules do not disturb each other.
REG_USERS = [str(n) for n in range(1000, 1100)]  # scenario 1
CALL_USERS = [str(n) for n in range(2000, 2030)]  # scenario 2
TLS_USERS = ["3000", "3001"]  # scenario 3 (baresip)
RESTART_USERS = [str(n) for n in range(4000, 4010)]  # scenario 4
MEDIA_USERS = [str(n) for n in range(3100, 3110)]  # issue 5 media scenarios (SRTP "Require")
FEATURE_USERS = [str(n) for n in range(6000, 6010)]  # scenario 5 (call features)
GATE_USERS = [str(n) for n in range(7000, 7010)]  # issue 9 (the gate)
DEVICES = (
    REG_USERS + CALL_USERS + TLS_USERS + RESTART_USERS + MEDIA_USERS + FEATURE_USERS + GATE_USERS
)
EXTENSIONS = [f"ext{n}" for n in range(5000, 5010)]
MEDIA_EXTENSIONS = [f"ext{n}" for n in range(5100, 5105)]  # issue 5 (baresip, SIPp on the LAN)
FEATURE_EXTENSIONS = [f"ext{n}" for n in range(5200, 5210)]  # scenario 5 (call features)


def set_password(user: str) -> str:
    return f"set-{user}"


def icp_user(user: str) -> str:
    return f"icp{user}"


def icp_password(user: str) -> str:
    return f"icp-pw-{user}"


def ext_password(ext: str) -> str:
    return f"pw-{ext}"


def require_netns() -> None:
    """Fail (or skip with LIMEN_TEST_NO_NETNS=1) when namespaces cannot be built."""
    if os.environ.get("LIMEN_TEST_NO_NETNS") == "1":
        pytest.skip("LIMEN_TEST_NO_NETNS=1: namespace tests skipped on purpose")
    if os.geteuid() != 0:
        pytest.fail(
            "the acceptance tests build network namespaces: run as root "
            "(or set LIMEN_TEST_NO_NETNS=1 to skip them knowingly)"
        )
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed (set LIMEN_TEST_NO_NETNS=1 to skip knowingly)")


def _run(*cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Namespaces:
    """The five lab namespaces (unique names for this run)."""

    names: dict[str, str]

    @classmethod
    def create(cls) -> Namespaces:
        suffix = secrets.token_hex(3)
        ns = cls({role: f"limen-{role}-{suffix}" for role in ROLES})
        try:
            ns._build()
        except BaseException:
            ns.delete()
            raise
        return ns

    def __getitem__(self, role: str) -> str:
        return self.names[role]

    def exec(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[role]]

    def _build(self) -> None:
        n = self.names
        for role in ROLES:
            _run("ip", "netns", "add", n[role])
            _run("ip", "-n", n[role], "link", "set", "lo", "up")

        def link(a: str, a_if: str, b: str, b_if: str) -> None:
            _run(
                "ip",
                "link",
                "add",
                a_if,
                "netns",
                n[a],
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                n[b],
            )
            _run("ip", "-n", n[a], "link", "set", a_if, "up")
            _run("ip", "-n", n[b], "link", "set", b_if, "up")

        link("wan", "wan-dmz", "dmz", "dmz-wan")
        link("dmz", "dmz-lan", "lan", "lan-dmz")
        link("wan", "wan-home", "home", "home-wan")
        link("home", "home-pc", "homepc", "pc-home")
        for role, address, dev in (
            ("wan", f"{WAN_IP}/24", "wan-dmz"),
            ("wan", "198.51.100.1/24", "wan-home"),
            ("dmz", f"{PUBLIC_IP}/24", "dmz-wan"),
            ("dmz", f"{DMZ_LAN_IP}/24", "dmz-lan"),
            ("lan", f"{PBX_IP}/24", "lan-dmz"),
            ("lan", f"{EXT_IP}/24", "lan-dmz"),
            ("home", f"{HOME_PUBLIC_IP}/24", "home-wan"),
            ("home", "192.168.77.1/24", "home-pc"),
            ("homepc", f"{HOMEPC_IP}/24", "pc-home"),
            *(("wan", f"{ip}/24", "wan-dmz") for ip in (ATTACKER_IP, WAN_PHONE_IP, *FLOOD_IPS)),
        ):
            _run("ip", "-n", n[role], "addr", "add", address, "dev", dev)
        _run("ip", "-n", n["dmz"], "route", "add", "198.51.100.0/24", "via", WAN_IP)
        _run("ip", "-n", n["lan"], "route", "add", "default", "via", DMZ_LAN_IP)
        _run("ip", "-n", n["home"], "route", "add", "default", "via", "198.51.100.1")
        _run("ip", "-n", n["homepc"], "route", "add", "default", "via", "192.168.77.1")
        _run(*self.exec("wan"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run(*self.exec("home"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run(*self.exec("dmz"), "sysctl", "-qw", "net.ipv4.ip_forward=0")
        _run(
            *self.exec("home"),
            "nft",
            "-f",
            "-",
            stdin=(
                "table ip nat {\n"
                "  chain postrouting {\n"
                "    type nat hook postrouting priority srcnat; policy accept;\n"
                '    oifname "home-wan" masquerade\n'
                "  }\n"
                "}\n"
            ),
        )

    def delete(self) -> None:
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _stop(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], sig: int = signal.SIGTERM
) -> None:
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


def start_pbx(ns: Namespaces, folder: Path, subscribers: dict[str, str] | None = None) -> Kamailio:
    """Kamailio in ``lan`` with the ICP-side credentials of every device + extensions
    (or with ``subscribers``, user → password)."""
    kamailio = require_tool("kamailio")
    require_tool("kamcmd")
    sqlite3 = require_tool("sqlite3")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run").mkdir(exist_ok=True)
    db = folder / "kamailio.sqlite"
    if subscribers is None:
        subscribers = {icp_user(u): icp_password(u) for u in DEVICES}
        subscribers.update(
            {e: ext_password(e) for e in EXTENSIONS + MEDIA_EXTENSIONS + FEATURE_EXTENSIONS}
        )
    schema = "".join(
        Path(f"/usr/share/kamailio/db_sqlite/{name}-create.sql").read_text()
        for name in ("standard", "auth_db")
    )
    rows = "".join(
        f"INSERT INTO subscriber(username,domain,password,ha1) VALUES('{user}','{PBX_IP}',"
        f"'{pw}','{hashlib.md5(f'{user}:{PBX_IP}:{pw}'.encode()).hexdigest()}');\n"
        for user, pw in subscribers.items()
    )
    subprocess.run([sqlite3, str(db)], input=schema + rows, text=True, check=True)
    cfg = folder / "kamailio.cfg"
    text = KAMAILIO_CFG.format(host=PBX_IP, port=PBX_PORT, run=folder / "run", db=db)
    # Four UDP workers: the scenarios push a few dozen calls per second through it.
    cfg.write_text(text.replace("children=2", "children=4"))
    log_path = folder / "kamailio.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*ns.exec("lan"), kamailio, "-f", str(cfg), "-DD", "-E", "-Y", str(folder / "run")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    kam = Kamailio(folder, PBX_PORT, process, log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kamailio exited: {kam.log()}")
        if (folder / "run" / "kamailio_ctl").exists():
            try:
                kam.all_aors()
                return kam
            except subprocess.CalledProcessError:
                pass
        time.sleep(0.1)
    kam.stop()
    raise RuntimeError(f"kamailio did not start: {kam.log()}")


def icp_aors(kam: Kamailio, prefix: str = "icp") -> set[str]:
    """ICP-side AORs bound at the PBX (user part), from kamcmd ul.dump."""
    return {aor.split("@", 1)[0] for aor in kam.all_aors() if aor.startswith(prefix)}


LIMEN_TOML = """\
data_dir = "data"
public_fqdn = ""
public_ip = "{public_ip}"
log_level = "INFO"

[sip]
bind = "0.0.0.0"
lan_ip = "{lan_ip}"
realm = "limen.test"
udp_port = 5060
tcp_port = 5060
tls_port = 5061
server_header = ""
# baresip 1.0 (libre 1.1) fails a REGISTER whose 401 also offers SHA-256 ("Function not
# implemented"): the TLS scenario needs MD5-only challenges.
digest_algorithms = ["MD5"]

[security]
# The bulk scenarios (100 phones registering, 500 calls) come from the home NAT, and the
# gate scenarios (issue 9: svwar, guessers) from 203.0.113.1: both trusted, so that bans
# and rate limits do not hide what they test. The ban and flood scenarios (issue 10) use
# the other wan addresses, which are not.
trusted = ["{home_public}/32", "{wan_ip}/32"]
# svwar/svcrack say "friendly-scanner": kept off the list so they reach the gate and the
# bans; the scanner filter is tested with sipcli's User-Agent.
scanner_user_agents = ["sipcli", "sundayddr"]

[api]
enabled = false

[provisioning]
enabled = false

[media]
# The relay is on: SIPp phones (no SRTP) get set_side_rtp_security "Disable" globally,
# the baresip (TLS) devices a per-device "Require" override.
relay = true
port_min = 30000
port_max = 39999
# Short, for the media-timeout scenario (issue 5); every other call of the lab is shorter or
# carries media.
media_timeout = 4
"""


def _limen(folder: Path, *args: str) -> str:
    return _run(str(LIMEN), *args, "-c", str(folder / "limen.toml"))


def provision_limen(folder: Path) -> None:
    """Config + store: the ICP and the devices through the CLI, options through the store."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "limen.toml").write_text(
        LIMEN_TOML.format(
            public_ip=PUBLIC_IP, lan_ip=DMZ_LAN_IP, home_public=HOME_PUBLIC_IP, wan_ip=WAN_IP
        )
    )
    _limen(folder, "init")
    _limen(
        folder,
        "icp",
        "add",
        "pbx",
        "--address",
        PBX_IP,
        "--port",
        str(PBX_PORT),
        "--transport",
        "udp",
    )
    csv = folder / "devices.csv"
    csv.write_text(
        "setside_username,setside_password,icp,icpside_username,icpside_password\n"
        + "".join(f"{u},{set_password(u)},pbx,{icp_user(u)},{icp_password(u)}\n" for u in DEVICES)
    )
    _limen(folder, "device", "import", str(csv), "--json")
    from limen.config import load_settings
    from limen.store import open_store
    from limen.store.schemas import DeviceUpdate

    store = open_store(load_settings(folder / "limen.toml"))
    try:
        store.options.set(
            {
                "sip_udp": True,
                "sip_tcp": True,
                "sip_tls": True,
                "options_keepalive": "Never",
                "set_side_rtp_security": "Disable",
                # The load scenarios (500 calls over 30 devices) are no single phone's
                # behaviour: no per-device admission limits here, except for the device
                # whose limit the security scenario tests (issue 10).
                "max_calls_per_device": 0,
                "max_call_attempts_per_minute": 0,
            }
        )
        for user in TLS_USERS + MEDIA_USERS:
            store.devices.update(user, DeviceUpdate(set_side_rtp_security="Require"))
        store.devices.update(GATE_USERS[5], DeviceUpdate(max_calls=4, max_call_attempts=20))
    finally:
        store.close()


@dataclass
class LimenProcess:
    """``limen serve`` in the dmz namespace."""

    folder: Path
    ns: Namespaces
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    runs: int = 0

    @property
    def stderr_path(self) -> Path:
        return self.folder / f"stderr{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
        process = subprocess.Popen(
            [*self.ns.exec("dmz"), str(LIMEN), "serve", "-c", str(self.folder / "limen.toml")],
            cwd=self.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("w"),
            text=True,
        )
        self.process = process
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
        wanted = {
            f"listening on {t} 0.0.0.0:{p}"
            for t, p in (("udp", 5060), ("tcp", 5060), ("tls", 5061))
        }
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while wanted - seen:
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"limen serve did not start: {self.output}\n{self.stderr()}")
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.output.append(line)
            seen.add(line.strip())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM (clean stop: bindings flushed to the store); returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return 0
        _stop(process)
        return process.returncode


@dataclass
class Lab:
    folder: Path
    ns: Namespaces
    pbx: Kamailio
    limen: LimenProcess
    _media_ports: Iterator[int] = field(default_factory=lambda: itertools.count(40000, 8))

    def media_port(self) -> int:
        return next(self._media_ports)

    async def sipp(
        self,
        role: str,
        name: str,
        scenario: str,
        *args: str,
        local_ip: str,
        port: int,
        remote: str | None = None,
        inf: list[str] | None = None,
        calls: int = 1,
        transport: str = "u1",
        trace: bool = True,
        timeout: str = "60s",
    ) -> Sipp:
        """SIPp in namespace ``role``; ``scenario`` names a file in scenarios/ (ours, then
        the loopback call tests')."""
        binary = require_tool("sipp")
        folder = self.folder / "sipp"
        folder.mkdir(parents=True, exist_ok=True)
        path = SCENARIOS / f"{scenario}.xml"
        if not path.exists():
            path = GATEWAY_SCENARIOS / f"{scenario}.xml"
        cmd = [*self.ns.exec(role), binary, "-sf", str(path)]
        if remote is not None:
            cmd.append(remote)
        cmd += ["-i", local_ip, "-p", str(port), "-t", transport, "-m", str(calls)]
        cmd += ["-nostdin", "-timeout", timeout, "-mp", str(self.media_port())]
        cmd += ["-trace_err", "-error_file", str(folder / f"{name}.err")]
        cmd += ["-trace_screen", "-screen_file", str(folder / f"{name}.screen")]
        if trace:
            cmd += ["-trace_msg", "-message_file", str(folder / f"{name}.msg")]
        if inf is not None:
            inf_path = folder / f"{name}.csv"
            inf_path.write_text("SEQUENTIAL\n" + "".join(line + "\n" for line in inf))
            cmd += ["-inf", str(inf_path)]
        if role == "lan" and "-default_behaviors" not in args:
            # Calls placed through Kamailio: its parallel UDP workers can relay a 180 after
            # the 200 (seen in the 500-call and backup scenarios, within 0.2 ms). A lost or
            # failed call still fails the run (its expected messages never come).
            cmd += ["-default_behaviors", "all,-abortunexp"]
        cmd += list(args)
        process = await asyncio.create_subprocess_exec(
            *cmd, cwd=folder, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return Sipp(name, process, folder)


def screen_counts(sipp: Sipp) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's final screen (cumulative column)."""
    path = sipp.folder / f"{sipp.name}.screen"
    text = path.read_text(errors="replace") if path.exists() else ""
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return (int(ok[-1]) if ok else -1, int(failed[-1]) if failed else -1)


def register_lines(users: list[str], expires: int, domain: str = PUBLIC_IP) -> list[str]:
    """-inf lines for scenarios/register.xml (set-side credentials)."""
    return [
        f"{u};{domain};[authentication username={u} password={set_password(u)}];{expires}"
        for u in users
    ]


@contextlib.contextmanager
def open_lab(folder: Path) -> Iterator[Lab]:
    require_netns()
    for tool in ("kamailio", "kamcmd", "sipp", "sqlite3"):
        require_tool(tool)
    ns = Namespaces.create()
    pbx: Kamailio | None = None
    limen: LimenProcess | None = None
    try:
        pbx = start_pbx(ns, folder / "kamailio")
        provision_limen(folder / "limen")
        limen = LimenProcess(folder / "limen", ns)
        limen.start()
        yield Lab(folder, ns, pbx, limen)
    finally:
        try:
            rc = limen.stop() if limen is not None else 0
            if pbx is not None:
                pbx.stop()
        finally:
            ns.delete()
        if limen is not None:
            stderr = "".join(
                (limen.folder / f"stderr{n}.log").read_text(errors="replace")
                for n in range(1, limen.runs + 1)
            )
            assert "Traceback" not in stderr, stderr[-5000:]
            assert rc == 0, f"limen serve exited with {rc}"


BARESIP_CONFIG = """\
poll_method		epoll
sip_listen		{ip}:{port}
sip_cafile		{cafile}
call_local_timeout	120
call_max_calls		4
audio_player		aubridge,nowhere
audio_alert		aubridge,nowhere
audio_source		aufile,{tone}
rtp_ports		{rtp_min}-{rtp_max}
rtcp_mux		no
net_interface		{ip}
dns_server		127.0.0.1:53
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			aubridge.so
module			srtp.so
module_tmp		account.so
module_app		menu.so
"""


def write_tone(path: Path, seconds: float = 3.0, hz: float = 440.0) -> None:
    """An 8 kHz mono 16-bit WAV tone (baresip's aufile source; ausine wants 48 kHz)."""
    rate = 8000
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * n / rate)))
        for n in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


@dataclass
class Baresip:
    """baresip (TLS phone, SRTP mandatory, auto-answer) in namespace ``role``."""

    folder: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.folder / "baresip.log").read_text(errors="replace")

    def stop(self) -> None:
        _stop(self.process)


def start_baresip(
    lab: Lab,
    role: str,
    ip: str,
    user: str,
    name: str,
    port: int = 5070,
    *,
    account: str | None = None,
    tone_hz: float = 440.0,
    tone_seconds: float = 3.0,
    ctrl_port: int | None = None,
    record: bool = False,
) -> Baresip:
    """``account``: the accounts line (default: ``user`` at Limen over TLS, SRTP mandatory).
    ``ctrl_port``: load ctrl_tcp on ``ip:ctrl_port``; ``record``: load sndfile, which writes
    what the phone hears to ``<folder>/rec/dump-*-dec.wav``."""
    binary = require_tool("baresip")
    folder = lab.folder / name
    folder.mkdir(parents=True, exist_ok=True)
    cafile = lab.limen.folder / "data" / "tls" / "sip.pem"
    tone = folder / "tone.wav"
    write_tone(tone, tone_seconds, tone_hz)
    config = BARESIP_CONFIG.format(
        ip=ip,
        port=port,
        cafile=cafile,
        tone=tone,
        rtp_min=20000,
        rtp_max=20099,
    )
    if record:
        (folder / "rec").mkdir(exist_ok=True)
        config += f"module\t\t\tsndfile.so\nsnd_path\t\t{folder / 'rec'}\n"
    if ctrl_port is not None:
        config += f"module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t{ip}:{ctrl_port}\n"
    (folder / "config").write_text(config)
    (folder / "accounts").write_text(
        (
            account
            or f"<sip:{user}@{PUBLIC_IP};transport=tls>;auth_pass={set_password(user)};"
            f'outbound="sip:{PUBLIC_IP}:5061;transport=tls";regint=600;answermode=auto;'
            "mediaenc=srtp-mand;audio_codecs=pcmu"
        )
        + "\n"
    )
    with (folder / "baresip.log").open("wb") as log:
        process = subprocess.Popen(
            [*lab.ns.exec(role), "stdbuf", "-oL", binary, "-f", str(folder), "-s"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Baresip(folder, process)


_CLONE_NEWNET = 0x40000000


def ns_socket(
    lab: Lab, role: str, kind: int = socket.SOCK_DGRAM, bind: tuple[str, int] | None = None
) -> socket.socket:
    """A socket that lives in namespace ``role`` (created by a short-lived thread that
    joined the namespace; a socket keeps its namespace for life), usable from the test's
    own thread and event loop. Non-blocking for datagram sockets."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{lab.ns[role]}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, kind)
            if bind is not None:
                sock.bind(bind)
            if kind == socket.SOCK_DGRAM:
                sock.setblocking(False)
            out["sock"] = sock
        except BaseException as exc:  # reported in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["sock"]  # type: ignore[return-value]


@dataclass
class BaresipCtrl:
    """baresip's ctrl_tcp (netstring-framed JSON commands), reached inside ``role``."""

    lab: Lab
    role: str
    address: tuple[str, int]

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, object]:
        token = secrets.token_hex(4)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        deadline = time.monotonic() + timeout
        while True:
            sock = ns_socket(self.lab, self.role, socket.SOCK_STREAM)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock.connect(self.address)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with sock:
            sock.sendall(f"{len(body)}:".encode() + body + b",")
            buffer = b""
            while True:
                while (m := re.match(rb"(\d+):", buffer)) and len(buffer) > m.end() + int(
                    m.group(1)
                ):
                    size = int(m.group(1))
                    message = json.loads(buffer[m.end() : m.end() + size])
                    buffer = buffer[m.end() + size + 1 :]
                    if message.get("response") and message.get("token") == token:
                        return message  # type: ignore[no-any-return]
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"ctrl_tcp closed before answering {command}")
                buffer += chunk
