"""Helpers for ``bench/signalling.py``: SIPp scenarios and runs, a Kamailio (stateful proxy +
registrar with digest auth from SQLite), Sippy's b2bua_simple, and a Limen server run in its
own process (``python bench/signalling_support.py limen ...``).

Every daemon is started by hand and stopped by its PID (:class:`Daemons`), also on Ctrl-C
or failure. Traffic stays on 127.0.0.x.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)

# Addresses: SIPp caller / phones, Limen and Sippy on 127.0.0.1, Kamailio on 127.0.0.2, the
# SIPp callee (Limen's ICP) on 127.0.0.3: Limen tells the sides apart by source address.
LOCAL = "127.0.0.1"
KAMAILIO_HOST = "127.0.0.2"
UAS_HOST = "127.0.0.3"
CALL_PAUSE_MS = 500  # talk time between ACK and BYE

# --- SIPp scenarios -------------------------------------------------------------------------

# Caller: INVITE (no auth), optional 100/180, 200 (rtd: INVITE sent -> 200 received), ACK
# along the route set, short talk, BYE, 200. R-URI = sip:[service]@[rdomain] (-key rdomain).
UAC_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench call UAC">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[rdomain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Bench [caller]" <sip:[caller]@[fdomain]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[caller]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="1" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Bench [caller]" <sip:[caller]@[fdomain]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="PAUSE_MS"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Bench [caller]" <sip:[caller]@[fdomain]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <ResponseTimeRepartition value="5, 10, 20, 50, 100, 200"/>
</scenario>
""".replace("PAUSE_MS", str(CALL_PAUSE_MS))

# Realistic configuration (issue 13): the phone offers SRTP (RTP/SAVP, one SDES a=crypto
# line, RFC 4568) and answers Limen's 407 with digest (SIPp -au/-ap from the -inf file).
# SIPp cannot run SRTP, so no RTP flows: Limen still allocates the relay's ports and both
# SRTP contexts per call (the signalling and set-up cost), which is what this bench times.
# Branches: the ACK of the 407 reuses the first INVITE's (message index 0, so [branch-3]
# from the ACK at index 3) -- RFC 3261 §17.1.1.3.
BENCH_CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
UAC_REAL_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench call UAC, digest + SRTP offer">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[rdomain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Bench [field0]" <sip:[field0]@[field1]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/SAVP 0
      a=rtpmap:0 PCMU/8000
      BENCH_CRYPTO
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[rdomain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3];rport
      From: "Bench [field0]" <sip:[field0]@[field1]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[rdomain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Bench [field0]" <sip:[field0]@[field1]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field2]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/SAVP 0
      a=rtpmap:0 PCMU/8000
      BENCH_CRYPTO
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="1" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Bench [field0]" <sip:[field0]@[field1]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="PAUSE_MS"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: "Bench [field0]" <sip:[field0]@[field1]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[rdomain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <ResponseTimeRepartition value="5, 10, 20, 50, 100, 200"/>
</scenario>
""".replace("PAUSE_MS", str(CALL_PAUSE_MS)).replace("BENCH_CRYPTO", BENCH_CRYPTO)

# For Sippy: its 200's Contact is ``Anonymous <sip:...>`` (unquoted display name) and
# SIPp 3.6.1's [next_url] then keeps "Anonymous" in the ACK/BYE Request-URI, which Sippy
# cannot parse; a B2BUA matches the dialog by Call-ID and tags, so aim at the B2BUA itself.
UAC_B2B_XML = UAC_XML.replace("[next_url]", "sip:[service]@[remote_ip]:[remote_port]")

# Callee: 180, 200 with the Record-Route copied (Kamailio), Contact without a transport
# parameter (Sippy 2.5.0 trap, peers.md section 6), ACK, BYE, 200.
UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench call UAS">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port]>
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <timewait milliseconds="1000"/>
</scenario>
"""

# The PBX side of the realistic configuration: Limen offers SRTP there too (figure 11:
# icp_side_rtp_security "Prefer", every suite it supports, strongest first); this callee
# accepts the AES_CM_128_HMAC_SHA1_80 line with that line's tag (RFC 4568 §5.1.2) and its
# own key.
UAS_SRTP_XML = UAS_XML.replace(
    '<recv request="INVITE" crlf="true"/>',
    '<recv request="INVITE" crlf="true">\n'
    "    <action>\n"
    '      <ereg regexp="a=crypto:([0-9]+) AES_CM_128_HMAC_SHA1_80 " search_in="body" '
    'check_it="true" assign_to="crypto_line,crypto_tag"/>\n'
    "    </action>\n"
    "  </recv>\n"
    '  <Reference variables="crypto_line"/>',
    1,
).replace(
    "m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000",
    "m=audio [media_port] RTP/SAVP 0\n      a=rtpmap:0 PCMU/8000\n      "
    + BENCH_CRYPTO.replace("a=crypto:1 ", "a=crypto:[$crypto_tag] "),
)
assert "[$crypto_tag]" in UAS_SRTP_XML and "<ereg" in UAS_SRTP_XML

# REGISTER with digest (401 expected): -inf fields user;domain;[authentication ...]
REGISTER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench REGISTER with digest">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[field1]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[field1]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[field1]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field2]
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="1"/>
</scenario>
"""


def free_udp_port(host: str = LOCAL) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"setup failure: {name} not installed (apt-get install it)")
    return path


# --- daemons, stopped by PID ----------------------------------------------------------------


LIVE_SIPP: list[subprocess.Popen[bytes]] = []


class Daemons:
    """Every long-running process this bench started; ``stop_all`` ends them (and any SIPp
    still running) by PID."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, cmd: list[str], log: Path, **kwargs: object
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]
        self.processes.append((name, process))
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            os.kill(process.pid, sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
        self.processes = [(n, p) for n, p in self.processes if p is not process]

    def stop_all(self) -> None:
        for process in LIVE_SIPP:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
        LIVE_SIPP.clear()
        for _, process in reversed(list(self.processes)):
            with contextlib.suppress(ProcessLookupError, OSError):
                self.stop(process)
        self.processes.clear()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_udp_listening(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /proc/net/udp until someone listens on host:port (or the process died)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"setup failure: {process.args!r} exited:\n{log.read_text()[-3000:]}")
        if any(
            line.split()[1] == want for line in Path("/proc/net/udp").read_text().splitlines()[1:]
        ):
            return
        time.sleep(0.1)
    raise SystemExit(f"setup failure: nothing listens on {host}:{port}\n{log.read_text()[-3000:]}")


# --- Kamailio: stateful proxy (record_route, t_relay, no auth) + registrar with digest ---------

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children={children}
auto_aliases=no
listen=udp:{host}:{port}
alias="{host}"
dns=no
rev_dns=no
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("ctl", "binrpc", "unix:{run}/kamailio_ctl")
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("registrar", "max_expires", 3600)
modparam("usrloc", "db_mode", 0)
modparam("auth_db", "db_url", "sqlite://{db}")
modparam("auth_db", "calculate_ha1", 1)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "use_domain", 0)
modparam("auth_db", "load_credentials", "")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    force_rport();
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{ t_check_trans(); exit; }}
        t_check_trans();
    }}
    if (has_totag()) {{
        if (loose_route()) {{ route(RELAY); }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ route(RELAY); }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    remove_hf("Route");
    if (is_method("REGISTER")) {{
        if (!auth_check("$fd", "subscriber", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("INVITE|SUBSCRIBE|REFER")) {{ record_route(); }}
    route(RELAY);
}}

route[RELAY] {{
    # bench safety: relay to IP literals only (no DNS)
    if (!isdsturiset() && !($rd =~ "^127\\\\.")) {{
        if (!is_method("ACK")) {{ sl_send_reply("404", "Not a loopback destination"); }}
        exit;
    }}
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


@dataclass
class Kamailio:
    process: subprocess.Popen[bytes]
    port: int
    folder: Path

    def contacts(self) -> int:
        """Contacts in Kamailio's location table (ul.dump fails on 10,000 of them)."""
        out = subprocess.run(
            [
                "kamcmd",
                "-s",
                f"unix:{self.folder / 'run' / 'kamailio_ctl'}",
                "stats.get_statistics",
                "usrloc:location_contacts",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # "usrloc:location_contacts = 10000" (the exact spacing varies between versions).
        found = re.search(r"location_contacts\D*(\d+)", out.stdout + out.stderr)
        return int(found.group(1)) if found else -1


def start_kamailio(
    daemons: Daemons, folder: Path, subscribers: dict[str, str], children: int = 2
) -> Kamailio:
    kamailio = require("kamailio")
    require("kamcmd")
    sqlite3 = require("sqlite3")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run").mkdir(exist_ok=True)
    db = folder / "kamailio.sqlite"
    db.unlink(missing_ok=True)
    schema = "".join(
        Path(f"/usr/share/kamailio/db_sqlite/{name}-create.sql").read_text()
        for name in ("standard", "auth_db")
    )
    rows = ["BEGIN;"]
    for user, pw in subscribers.items():
        ha1 = hashlib.md5(f"{user}:{KAMAILIO_HOST}:{pw}".encode()).hexdigest()
        rows.append(
            "INSERT INTO subscriber(username,domain,password,ha1) "
            f"VALUES('{user}','{KAMAILIO_HOST}','{pw}','{ha1}');"
        )
    rows.append("COMMIT;")
    subprocess.run([sqlite3, str(db)], input=schema + "\n".join(rows), text=True, check=True)
    port = free_udp_port(KAMAILIO_HOST)
    cfg = folder / "kamailio.cfg"
    cfg.write_text(
        KAMAILIO_CFG.format(
            host=KAMAILIO_HOST, port=port, run=folder / "run", db=db, children=children
        )
    )
    check = subprocess.run([kamailio, "-c", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"setup failure: kamailio config:\n{check.stderr[-3000:]}")
    log = folder / "kamailio.log"
    process = daemons.start(
        "kamailio",
        [kamailio, "-f", str(cfg), "-DD", "-E", "-m", "512", "-M", "32", "-Y", str(folder / "run")],
        log,
    )
    wait_udp_listening(KAMAILIO_HOST, port, process, log)
    return Kamailio(process, port, folder)


# --- Sippy b2bua_simple ---------------------------------------------------------------------


def start_sippy(
    daemons: Daemons, folder: Path, next_hop: str
) -> tuple[subprocess.Popen[bytes], int]:
    binary = PYTHON.with_name("b2bua_simple")
    if not binary.exists():
        raise SystemExit("setup failure: .venv/bin/b2bua_simple missing (pip install sippy)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    env = dict(os.environ, SIPLOG_BEND="stderr", SIPLOG_LVL="WARN")
    log = folder / "sippy.log"
    cmd = [str(binary), "-f", "-l", LOCAL, "-p", str(port), "-n", next_hop]
    process = daemons.start("sippy", cmd, log, env=env)
    wait_udp_listening(LOCAL, port, process, log)
    return process, port


# --- Limen, in its own process ------------------------------------------------------------------


def start_limen(
    daemons: Daemons,
    folder: Path,
    *,
    icp: tuple[str, int],
    devices: int,
    icp_password_prefix: str = "icp-pw-",
    profile: Path | None = None,
    protection: bool = True,
    upstream: bool = True,
    realistic: bool = False,
) -> tuple[subprocess.Popen[bytes], int]:
    """``limen.app.run`` in a child process over a fresh store: one ICP at ``icp``, devices
    ``p0 .. p{devices-1}`` (set side ``p<n>``/``set-p<n>``, ICP side ``icpp<n>``), global
    options for the bench (UDP only, no keepalives, challenge_methods=[])."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    log = folder / "limen.log"
    cmd = [
        str(PYTHON),
        str(Path(__file__).resolve()),
        "limen",
        "--folder",
        str(folder),
        "--port",
        str(port),
        "--icp",
        f"{icp[0]}:{icp[1]}",
        "--devices",
        str(devices),
        "--icp-password-prefix",
        icp_password_prefix,
    ]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    if not protection:
        cmd += ["--protection", "off"]
    if upstream is False:
        cmd += ["--no-upstream"]
    if realistic:
        cmd += ["--realistic"]
    process = daemons.start("limen", cmd, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"setup failure: limen exited:\n{log.read_text()[-3000:]}")
        if "BENCH-READY" in log.read_text(errors="replace"):
            return process, port
        time.sleep(0.2)
    raise SystemExit(f"setup failure: limen did not start:\n{log.read_text()[-3000:]}")


def _limen_main(args: argparse.Namespace) -> None:
    from limen.app import prepare
    from limen.config import (
        ApiSettings,
        MediaSettings,
        ProvisioningSettings,
        SecuritySettings,
        Settings,
        SipSettings,
    )
    from limen.store import open_store
    from limen.store.schemas import DeviceCreate, IcpCreate

    logging.basicConfig(level=logging.WARNING)
    folder = Path(args.folder)
    icp_host, icp_port = args.icp.rsplit(":", 1)
    settings = Settings(
        config_path=str(folder / "limen.toml"),
        data_dir=str(folder / "data"),
        public_ip=LOCAL,
        log_level="WARNING",
        sip=SipSettings(
            bind=LOCAL,
            lan_ip=LOCAL,
            udp_port=args.port,
            tcp=False,
            tls=False,
            realm="limen.bench",
            server_header="",
        ),
        api=ApiSettings(enabled=False),
        provisioning=ProvisioningSettings(enabled=False),
        # Realistic (issue 13): the relay on, in this process (workers = 0, the default).
        media=MediaSettings(relay=args.realistic),
        # Protection on: every check runs per message (bans, ACL, rate counting, scanner
        # User-Agents); the one SIPp source is trusted so its load is never banned.
        # Protection off: no rate limit, no scanner list, and the gate of issue 9 replaced
        # by the pre-gate rule (a bench instrument, not a setting: no configuration of
        # Limen can switch the gate off).
        security=SecuritySettings(trusted=[f"{LOCAL}/32"])
        if args.protection == "on" and not args.realistic
        # Realistic: every default, the SIPp source NOT trusted (so it is counted, screened
        # and could be banned), except the per-source rate limit, which one SIPp UAC
        # carrying every phone's calls would trip (60 messages / 2 s by default): raised
        # so that it counts every message but never fires.
        else SecuritySettings(sip_rate_limit=1_000_000)
        if args.realistic
        else SecuritySettings(sip_rate_limit=0, scanner_user_agents=[]),
    )
    if args.no_upstream:
        # The call bench's ICP is the SIPp UAS, which knows no REGISTER: the binding of
        # the UAC's port must not be mirrored upstream (bench instrument).
        from limen.gateway.upstream import UpstreamRegistrar

        UpstreamRegistrar.bind = lambda *a, **k: None  # type: ignore[method-assign]
    if args.protection == "off":
        from limen.gateway.gate import SetSideGate

        def ungated(self: SetSideGate, txn: object, request: object, source: object) -> object:
            return self.claimed_device(request)  # type: ignore[arg-type]

        SetSideGate.admit = ungated  # type: ignore[assignment,method-assign]
    prepare(settings)
    store = open_store(settings)
    try:
        store.icps.create(
            # No OPTIONS pings toward the ICP (issue 15's link state): the call bench's
            # ICP is the SIPp UAS, which counts every request as a call.
            IcpCreate(
                name="icp",
                address=icp_host,
                port=int(icp_port),
                transport="udp",
                options_interval=0,
            )
        )
        store.devices.create_many(
            DeviceCreate(
                setside_username=f"p{n}",
                setside_password=f"set-p{n}",
                icp="icp",
                icpside_username=f"icpp{n}",
                icpside_password=f"{args.icp_password_prefix}{n}",
            )
            for n in range(args.devices)
        )
        if args.realistic:
            # Figure 11's defaults (challenge INVITE and SUBSCRIBE, SRTP Require toward the
            # phones and Prefer toward the PBX, call admission 4 calls / 20 attempts a
            # minute per device, keepalives) except: UDP on (SIPp and Sippy speak UDP;
            # figure 11 has it off) and the relay's ports outside the default range, so
            # that the bench never collides with a test's relay on the shared machine.
            store.options.set({"sip_udp": True, "srtp_port_min": 42000, "srtp_port_max": 52998})
        else:
            store.options.set(BARE_OPTIONS)
    finally:
        store.close()
    _run_limen(args, settings)


# The bare configuration: what Sippy's b2bua_simple does (no challenge, media off).
BARE_OPTIONS: dict[str, object] = {
    "sip_udp": True,
    "sip_tcp": False,
    "sip_tls": False,
    "options_keepalive": "Never",
    "challenge_methods": [],
    # One SIPp UAC is device p0 for every call: no per-device admission limits
    # (they exist to stop one phone taking every port, not to cap a bench).
    "max_calls_per_device": 0,
    "max_call_attempts_per_minute": 0,
}


def _run_limen(args: argparse.Namespace, settings: Any) -> None:
    from limen.app import run

    logging.getLogger().setLevel(logging.WARNING)

    def announce(line: str) -> None:
        print(line, flush=True)
        if "udp" in line.lower() or "sip" in line.lower():
            print("BENCH-READY", flush=True)

    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            run(settings, announce)
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
    else:
        run(settings, announce)


# --- SIPp runs ---------------------------------------------------------------------------------


@dataclass
class SippResult:
    rc: int
    successful: int
    failed: int
    elapsed: float
    rtts_ms: list[float]


def _stat_counts(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    if len(rows) < 2:
        return 0, 0
    header, last = rows[0], rows[-1]
    ok = int(last[header.index("SuccessfulCall(C)")])
    failed = int(last[header.index("FailedCall(C)")])
    return ok, failed


def _rtts(folder: Path, stem: str) -> list[float]:
    out: list[float] = []
    for path in folder.glob(f"{stem}_*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue
    return out


class SippRun:
    """One SIPp process (background) with its statistics file."""

    def __init__(self, folder: Path, name: str, args: list[str], scenario: Path) -> None:
        self.folder = folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stem = scenario.stem
        local = self.folder / scenario.name
        local.write_text(scenario.read_text())
        self.stat = self.folder / "stat.csv"
        cmd = [require("sipp"), "-sf", str(local), *args]
        cmd += ["-nostdin", "-trace_stat", "-stf", str(self.stat), "-fd", "1"]
        cmd += ["-trace_err", "-error_file", str(self.folder / "errors.log")]
        cmd += ["-trace_rtt", "-rtt_freq", "1"]
        self.started = time.monotonic()
        with (self.folder / "sipp.out").open("wb") as out:
            self.process = subprocess.Popen(
                cmd, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT
            )
        LIVE_SIPP.append(self.process)

    def wait(self, timeout: float) -> SippResult:
        try:
            rc = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGUSR1)  # SIPp: stop, finish, write stats
            try:
                rc = self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                rc = self.process.wait(5)
        elapsed = time.monotonic() - self.started
        ok, failed = _stat_counts(self.stat)
        return SippResult(rc, ok, failed, elapsed, _rtts(self.folder, self.stem))

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def errors(self) -> str:
        path = self.folder / "errors.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""


class Capture:
    """tcpdump on lo for one UDP port; :meth:`setup_times` = INVITE sent -> first 200 to
    it (per Call-ID, microsecond timestamps; SIPp's own rtt file has 1 ms resolution)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.path = folder / f"capture-{port}.pcap"
        cmd = [require("tcpdump"), "-i", "lo", "-n", "-B", "32768", "-s", "1500", "-U"]
        cmd += ["-w", str(self.path), "udp", "port", str(port)]
        self.log = folder / f"capture-{port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        LIVE_SIPP.append(self.process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "listening" not in self.log.read_text():
            time.sleep(0.05)
        self.port = port

    def stop(self) -> None:
        time.sleep(0.5)
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            self.process.wait(10)

    def setup_times(self) -> list[float]:
        data = self.path.read_bytes()
        magic = int.from_bytes(data[:4], "little")
        order = "little" if magic in (0xA1B2C3D4, 0xA1B23C4D) else "big"
        scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
        link = int.from_bytes(data[20:24], order)
        offset = 24
        sent: dict[bytes, float] = {}
        done: dict[bytes, float] = {}
        while offset + 16 <= len(data):
            sec = int.from_bytes(data[offset : offset + 4], order)
            frac = int.from_bytes(data[offset + 4 : offset + 8], order)
            incl = int.from_bytes(data[offset + 8 : offset + 12], order)
            packet = data[offset + 16 : offset + 16 + incl]
            offset += 16 + incl
            when = sec + frac * scale
            ip = packet[14:] if link == 1 else packet[16:] if link == 113 else packet[4:]
            if not ip or ip[0] >> 4 != 4:
                continue
            udp = ip[(ip[0] & 15) * 4 :]
            payload = udp[8:]
            head = payload[:1500]
            call_id = _header(head, b"call-id", b"i")
            if call_id is None:
                continue
            if head.startswith(b"INVITE ") and int.from_bytes(udp[:2], "big") == self.port:
                sent.setdefault(call_id, when)
            elif head.startswith(b"SIP/2.0 200") and b" INVITE" in (_header(head, b"cseq") or b""):
                done.setdefault(call_id, when)
        return [(done[c] - t) * 1000 for c, t in sent.items() if c in done]


def _header(head: bytes, *names: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        if not line:
            return None
        name, _, value = line.partition(b":")
        if name.strip().lower() in names:
            return value.strip()
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    limen = sub.add_parser("limen", help="run a Limen server for the bench")
    limen.add_argument("--folder", required=True)
    limen.add_argument("--port", type=int, required=True)
    limen.add_argument("--icp", required=True)
    limen.add_argument("--devices", type=int, default=1)
    limen.add_argument("--icp-password-prefix", default="icp-pw-")
    limen.add_argument("--profile", default="")
    limen.add_argument("--protection", choices=("on", "off"), default="on")
    limen.add_argument("--no-upstream", action="store_true")
    limen.add_argument("--realistic", action="store_true")
    parsed = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    _limen_main(parsed)


# --- floods (the long-run mode) -------------------------------------------------------------

# The unauthenticated flood of tests/acceptance/test_acc_security.py (50 source addresses,
# never-completed requests with fresh Call-IDs), aimed at any port on loopback: every
# 127/8 address is local on Linux, so 127.0.1.1-50 are 50 distinct, untrusted sources.
FLOOD_SOURCES = [f"127.0.1.{n}" for n in range(1, 51)]
FLOODER = """
import random, socket, sys, time
kind, rate, seconds, host, port = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), \\
    sys.argv[4], int(sys.argv[5])
sources = sys.argv[6].split(",")
def message(i, src):
    user = "u%d" % random.randint(1, 10**6)
    ruri = "sip:%s" % host if kind == "REGISTER" else "sip:%d@%s" % (8000 + i % 1000, host)
    return ("%s %s SIP/2.0\\r\\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%d.%d;rport\\r\\n"
            "From: <sip:%s@%s>;tag=%d\\r\\nTo: <sip:%s@%s>\\r\\nCall-ID: f%d.%d\\r\\n"
            "CSeq: 1 %s\\r\\nMax-Forwards: 70\\r\\nContact: <sip:%s@%s>\\r\\n"
            "Content-Length: 0\\r\\n\\r\\n" % (kind, ruri, src, i, random.getrandbits(30),
            user, host, i, user, host, i, random.getrandbits(30), kind, user, src)).encode()
socks = []
for src in sources:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0)); s.setblocking(False); socks.append(s)
start = time.monotonic(); sent = 0
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        n = sent % len(socks)
        try:
            socks[n].sendto(message(sent, sources[n]), (host, port))
        except OSError:
            pass
        sent += 1
    time.sleep(0.001)
print(sent)
"""


def flood(kind: str, rate: float, seconds: float, host: str, port: int) -> int:
    """Send ``kind`` requests (INVITE, REGISTER, OPTIONS) at ``rate``/s for ``seconds``
    from the 50 flood sources; returns how many were sent."""
    out = subprocess.run(
        [
            str(PYTHON),
            "-c",
            FLOODER,
            kind,
            str(rate),
            str(seconds),
            host,
            str(port),
            ",".join(FLOOD_SOURCES),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return int(out.stdout.strip() or 0)
