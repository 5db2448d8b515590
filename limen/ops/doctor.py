"""``limen doctor``: check a configured (or running) deployment; each finding with a fix.

The checks follow what breaks deployments in the field report (seed §2.9, §2.11) and in
issue 11's first-day trial:

- ``clock``: the offset between Limen and each ICP, from the ``Date`` header of the ICP's
  answer to OPTIONS (RFC 3261 §20.17) or of its provisioning link (RFC 9110 §6.6.1).
  Pairing is OAuth 1.0a: a signed request older than ``api.timestamp_lifetime`` is
  refused (RFC 5849 §3.3), and certificates are checked against the clock.
- ``icp-sip``, ``icp-link``, ``icp-hash``: each ICP answers OPTIONS on its SIP address, its
  provisioning (XML) link answers HTTP(S), each provisioning hash path is known to it.
- ``fqdn``: the public FQDN resolves, to the public IP.
- ``certificates``: the listeners' certificates name the public FQDN and IP, and are not
  (about to be) expired.
- ``listeners``: each listener's port is free, or held by this Limen (it answers SIP, or
  its TLS certificate is the one in the configuration), not by another program.
- ``rtp-range``: the SRTP port range against the calls it must carry.
- ``resources``: RAM and CPUs against the number of devices (the report's VM needed 8 GB
  where 2 GB were advised).
- ``nat``: NAT and firewall hints (a private public_ip, UDP without keepalives, ...).

Every network probe has a short timeout, so the whole run is bounded. Findings are
``ok``, ``info``, ``warn`` or ``fail``; any ``fail`` makes the command exit non-zero.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import errno
import http.client
import ipaddress
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from limen.config import Settings
from limen.ops.listeners import PlannedListener, bind_error, describe_bind_error, planned_listeners
from limen.sip.addressing import bracket
from limen.store.options import GlobalOptions
from limen.store.schemas import IcpRecord

Status = Literal["ok", "info", "warn", "fail"]
CHECKS = (
    "clock",
    "icp-sip",
    "icp-link",
    "icp-hash",
    "fqdn",
    "certificates",
    "listeners",
    "rtp-range",
    "resources",
    "nat",
)
# Clock offsets: above WARN a log comparison gets confusing; above FAIL pairing and
# certificate checks break (OAuth timestamps are checked against api.timestamp_lifetime,
# which may be set much tighter than its 600 s default).
CLOCK_WARN = 2.0
CLOCK_FAIL = 30.0
# Sizing (docs/benchmarks.md: 20.5 KiB RSS per registered device, 135 MiB with 10,000
# provisioned): a base for the process, its store and media buffers, and three times the
# measured per-device cost as headroom; one CPU per 2,000 devices, two at least above 500.
RAM_BASE = 512 * 1024 * 1024
RAM_PER_DEVICE = 64 * 1024
DEVICES_PER_CPU = 2000
# Each relayed call holds 4 ports: RTP + RTCP on each side (even RTP, odd RTCP).
PORTS_PER_CALL = 4


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    subject: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class DoctorInput:
    """What the checks read: settings, the store's configuration, and knobs."""

    settings: Settings
    options: GlobalOptions
    icps: list[IcpRecord]
    devices: int
    realm_recorded: str | None = None
    timeout: float = 2.0
    expected_calls: int | None = None
    now: Callable[[], float] = time.time


# -- probes -----------------------------------------------------------------------------------


@dataclass
class SipAnswer:
    status: int
    reason: str
    headers: dict[str, str]
    sent_at: float
    received_at: float


def _options_request(host: str, port: int, transport: str, local: tuple[str, int]) -> bytes:
    branch = "z9hG4bK-doctor-" + secrets.token_hex(6)
    via_host = bracket(local[0])
    target = bracket(host)
    lines = [
        f"OPTIONS sip:{target}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {via_host}:{local[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:doctor@{via_host}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{target}:{port}>",
        f"Call-ID: doctor-{secrets.token_hex(8)}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "User-Agent: limen-doctor",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def _parse_answer(data: bytes, sent: float, received: float) -> SipAnswer | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("SIP/2.0") or not parts[1].isdigit():
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return SipAnswer(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, sent, received)


def sip_options(
    host: str, port: int, transport: str, timeout: float, clock: Callable[[], float] = time.time
) -> SipAnswer:
    """Send one OPTIONS and wait for its final answer (OSError/TimeoutError otherwise)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    if transport == "udp":
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.settimeout(timeout)
            udp.connect((host, port))
            request = _options_request(host, port, "udp", udp.getsockname()[:2])
            sent = clock()
            udp.send(request)
            while True:
                udp.settimeout(max(0.01, deadline - time.monotonic()))
                data = udp.recv(65535)
                answer = _parse_answer(data, sent, clock())
                if answer is not None and answer.status >= 200:
                    return answer
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        sock: socket.socket = raw
        if transport == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a reachability probe, not a trust decision
            sock = context.wrap_socket(raw, server_hostname=None)
        request = _options_request(host, port, transport, sock.getsockname()[:2])
        sent = clock()
        sock.sendall(request)
        buffer = b""
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65535)
            if not chunk:
                raise ConnectionError("connection closed before an answer")
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                answer = _parse_answer(head + b"\r\n\r\n", sent, clock())
                length = int(answer.headers.get("content-length", "0") or 0) if answer else 0
                buffer = rest[length:]
                if answer is not None and answer.status >= 200:
                    return answer
    finally:
        raw.close()


@dataclass
class HttpAnswer:
    status: int
    date: str | None
    sent_at: float
    received_at: float


def http_get(
    host: str,
    port: int,
    path: str,
    tls: bool,
    timeout: float,
    clock: Callable[[], float] = time.time,
) -> HttpAnswer:
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # reachability; the proxy enforces trust itself
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        sent = clock()
        conn.request("GET", path, headers={"User-Agent": "limen-doctor"})
        response = conn.getresponse()
        response.read(65536)
        return HttpAnswer(response.status, response.getheader("Date"), sent, clock())
    finally:
        conn.close()


def clock_offset(date_header: str, sent: float, received: float) -> float:
    """Seconds the peer's clock is ahead of ours (its Date against our midpoint)."""
    peer = email.utils.parsedate_to_datetime(date_header)
    if peer.tzinfo is None:
        peer = peer.replace(tzinfo=dt.UTC)
    return peer.timestamp() - (sent + received) / 2


# -- checks -----------------------------------------------------------------------------------


def _sip_transport(icp: IcpRecord) -> str:
    return icp.transport.lower() if icp.transport.lower() in ("udp", "tcp", "tls") else "udp"


def check_icps(inp: DoctorInput, only: set[str]) -> list[Finding]:
    out: list[Finding] = []
    if not inp.icps:
        return [
            Finding(
                "icp-sip",
                "warn",
                "ICPs",
                "no ICP configured: phones have no PBX to reach",
                "limen icp add NAME --address PBX_ADDRESS (see docs/guide.md, 'The ICP')",
            )
        ]
    lifetime = inp.settings.api.timestamp_lifetime
    for icp in inp.icps:
        transport = _sip_transport(icp)
        where = f"{icp.address}:{icp.port} ({transport.upper()})"
        offsets: list[tuple[str, float]] = []
        if only & {"icp-sip", "clock"}:
            try:
                answer = sip_options(
                    icp.address.strip("[]"), icp.port, transport, inp.timeout, inp.now
                )
            except (OSError, TimeoutError) as exc:
                out.append(
                    Finding(
                        "icp-sip",
                        "fail",
                        icp.name,
                        f"no answer to SIP OPTIONS at {where}: {exc.__class__.__name__} {exc}",
                        "check the ICP's address, port and transport (limen icp edit), that "
                        "the PBX accepts SIP from Limen's LAN address, and any firewall between",
                    )
                )
            else:
                out.append(
                    Finding(
                        "icp-sip",
                        "ok",
                        icp.name,
                        f"answers OPTIONS at {where}: {answer.status} {answer.reason}".rstrip(),
                    )
                )
                if "date" in answer.headers:
                    with contextlib.suppress(TypeError, ValueError):
                        offsets.append(
                            (
                                "SIP Date",
                                clock_offset(
                                    answer.headers["date"], answer.sent_at, answer.received_at
                                ),
                            )
                        )
        if only & {"icp-link", "clock", "icp-hash"} and icp.link_enabled:
            scheme = "https" if icp.tls else "http"
            link = f"{scheme}://{icp.address}:{icp.xml_destination_port}/"
            try:
                reply = http_get(
                    icp.address.strip("[]"),
                    icp.xml_destination_port,
                    "/",
                    icp.tls,
                    inp.timeout,
                    inp.now,
                )
            except (OSError, TimeoutError, http.client.HTTPException) as exc:
                if "icp-link" in only:
                    out.append(
                        Finding(
                            "icp-link",
                            "fail",
                            icp.name,
                            f"provisioning link {link} does not answer: {exc}",
                            "check the ICP's XML destination port and TLS setting (limen icp "
                            "edit --xml-destination-port / --tls), and that the PBX's config "
                            "server runs",
                        )
                    )
            else:
                if "icp-link" in only:
                    out.append(
                        Finding("icp-link", "ok", icp.name, f"{link} answers HTTP {reply.status}")
                    )
                if reply.date:
                    with contextlib.suppress(TypeError, ValueError):
                        offsets.append(
                            (
                                "HTTP Date",
                                clock_offset(reply.date, reply.sent_at, reply.received_at),
                            )
                        )
                if "icp-hash" in only:
                    out += _check_hashes(inp, icp)
        if "clock" in only:
            out.append(_clock_finding(icp, offsets, lifetime))
    return out


def _check_hashes(inp: DoctorInput, icp: IcpRecord) -> list[Finding]:
    if icp.serves_configs:
        return [Finding("icp-hash", "info", icp.name, "Limen serves this ICP's phone files")]
    if not icp.hashes:
        return [
            Finding(
                "icp-hash",
                "warn",
                icp.name,
                "no provisioning hash: phones cannot fetch their files through Limen",
                f"limen icp edit {icp.name} --hash HASH (the hash the PBX generated, seed 2.7)",
            )
        ]
    out = []
    for value in icp.hashes:
        path = f"/{value}/"
        try:
            reply = http_get(
                icp.address.strip("[]"),
                icp.xml_destination_port,
                path,
                icp.tls,
                inp.timeout,
                inp.now,
            )
        except (OSError, TimeoutError, http.client.HTTPException) as exc:
            out.append(Finding("icp-hash", "fail", icp.name, f"{path} could not be fetched: {exc}"))
            continue
        if reply.status in (404, 410) or reply.status >= 500:
            out.append(
                Finding(
                    "icp-hash",
                    "fail",
                    icp.name,
                    f"the PBX answers {reply.status} for the hash path {path}",
                    "copy the hash again from the PBX (it changes when the PBX regenerates it) "
                    f"and set it: limen icp edit {icp.name} --hash HASH",
                )
            )
        else:
            out.append(
                Finding("icp-hash", "ok", icp.name, f"hash path {path} answers {reply.status}")
            )
    return out


def _clock_finding(icp: IcpRecord, offsets: list[tuple[str, float]], lifetime: int) -> Finding:
    if not offsets:
        return Finding(
            "clock",
            "warn",
            icp.name,
            "could not read the ICP's clock (no Date header in its answers, or no answer)",
            "make sure both use NTP; pairing fails when the clocks disagree (seed 2.9)",
        )
    source, offset = max(offsets, key=lambda item: abs(item[1]))
    text = f"ICP clock is {abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'} Limen's"
    fix = (
        "synchronise both with NTP (e.g. `chronyc tracking` here, the PBX's time settings); "
        f"OAuth pairing refuses requests more than {lifetime} s off (api.timestamp_lifetime)"
    )
    if abs(offset) > min(CLOCK_FAIL, lifetime):
        return Finding("clock", "fail", icp.name, f"{text} ({source})", fix)
    if abs(offset) > CLOCK_WARN:
        return Finding("clock", "warn", icp.name, f"{text} ({source})", fix)
    return Finding("clock", "ok", icp.name, f"{text} ({source})")


def check_fqdn(inp: DoctorInput) -> list[Finding]:
    s = inp.settings
    fqdn, ip = s.public_fqdn.strip(), s.public_ip.strip()
    if not fqdn:
        return [
            Finding(
                "fqdn",
                "info",
                "public_fqdn",
                f"no public FQDN: phones are given the address {ip or '(none)'}",
            )
        ]
    try:
        infos = socket.getaddrinfo(fqdn, None, proto=socket.IPPROTO_TCP)
        addresses = sorted({str(info[4][0]) for info in infos})
    except (OSError, UnicodeError) as exc:
        bad: Status = "fail" if s.fqdn_for_phones else "warn"
        return [
            Finding(
                "fqdn",
                bad,
                fqdn,
                f"{fqdn} does not resolve here ({exc})"
                + ("; phones are given this name (fqdn_for_phones)" if s.fqdn_for_phones else ""),
                f"publish an A record {fqdn} → {ip or 'the public IP'}"
                + (", or set fqdn_for_phones = false" if s.fqdn_for_phones else ""),
            )
        ]
    if ip and ip not in addresses:
        return [
            Finding(
                "fqdn",
                "fail" if s.fqdn_for_phones else "warn",
                fqdn,
                f"{fqdn} resolves to {', '.join(addresses)}, not to public_ip {ip}",
                f"fix the DNS record of {fqdn}, or public_ip in the configuration",
            )
        ]
    return [Finding("fqdn", "ok", fqdn, f"{fqdn} resolves to {', '.join(addresses)}")]


def check_certificates(inp: DoctorInput) -> list[Finding]:
    from limen import certs

    s = inp.settings
    out: list[Finding] = []
    now = dt.datetime.fromtimestamp(inp.now(), dt.UTC)
    wanted = []
    if s.public_fqdn.strip():
        wanted.append(f"DNS={s.public_fqdn.strip().lower()}")
    if s.public_ip.strip():
        wanted.append(f"IP={ipaddress.ip_address(s.public_ip.strip())}")
    for item in certs.certificate_slots(s):
        if not item.enabled:
            continue
        if not item.cert_path.exists():
            out.append(
                Finding(
                    "certificates",
                    "fail" if item.operator else "warn",
                    item.title,
                    f"{item.cert_path} does not exist",
                    "check the configured path"
                    if item.operator
                    else "run `limen init` (or `limen serve`, which issues it)",
                )
            )
            continue
        try:
            info = certs.describe_certificate(item.cert_path, item.name, now=now)
        except (ValueError, OSError) as exc:
            out.append(Finding("certificates", "fail", item.title, f"unreadable: {exc}"))
            continue
        missing = [name for name in wanted if name not in info.sans]
        renew = (
            "give the operator certificate these names"
            if item.operator
            else f"limen cert renew {item.name}"
        )
        if missing:
            out.append(
                Finding(
                    "certificates",
                    "fail",
                    item.title,
                    f"does not name {', '.join(missing)} (has {', '.join(info.sans)}): phones "
                    "checking the name will refuse it",
                    renew,
                )
            )
        left = info.not_after - now
        if left.total_seconds() <= 0:
            out.append(
                Finding(
                    "certificates",
                    "fail",
                    item.title,
                    f"expired on {info.not_after:%Y-%m-%d}",
                    renew,
                )
            )
        elif left <= dt.timedelta(days=s.certs.warn_days):
            out.append(
                Finding(
                    "certificates",
                    "warn",
                    item.title,
                    f"expires on {info.not_after:%Y-%m-%d} ({left.days} days)",
                    renew,
                )
            )
        elif not missing:
            out.append(
                Finding(
                    "certificates",
                    "ok",
                    item.title,
                    f"names {', '.join(info.sans)}; valid until {info.not_after:%Y-%m-%d}",
                )
            )
    return out


def _probe_host(listener: PlannedListener) -> str:
    if listener.host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if listener.host == "::":
        return "::1"
    return listener.host


def _served_by_us(listener: PlannedListener, inp: DoctorInput) -> bool | None:
    """Whether the program holding the port is this Limen: it answers SIP (plain ports) or
    shows the certificate of the configuration (TLS ports). None: cannot tell."""
    from limen import certs

    host = _probe_host(listener)
    if listener.what in ("SIP/UDP", "SIP/TCP"):
        try:
            sip_options(host, listener.port, listener.what[-3:].lower(), inp.timeout)
        except (OSError, TimeoutError):
            return False
        return True
    files = {s.title: s.cert_path for s in certs.certificate_slots(inp.settings)}
    title = {"SIP/TLS": "SIP/TLS"}.get(listener.what, listener.what)
    path = files.get(title)
    if path is None or not path.exists():
        return None
    try:
        ours = certs.load_certificates(path)[0]
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((host, listener.port), timeout=inp.timeout) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError, IndexError):
        return False
    from cryptography import x509

    return der is not None and x509.load_der_x509_certificate(der) == ours


def check_listeners(inp: DoctorInput) -> list[Finding]:
    out: list[Finding] = []
    for listener in planned_listeners(inp.settings, [(i.address, i.port) for i in inp.icps]):
        exc = bind_error(listener)
        if exc is None:
            out.append(
                Finding(
                    "listeners",
                    "info",
                    str(listener),
                    "port free: Limen is not listening there now (ready for `limen serve`)",
                )
            )
            continue
        ours = _served_by_us(listener, inp) if exc.errno == errno.EADDRINUSE else None
        if ours:
            out.append(Finding("listeners", "ok", str(listener), "bound by Limen"))
        else:
            out.append(
                Finding(
                    "listeners",
                    "fail",
                    str(listener),
                    describe_bind_error(listener, exc)
                    if ours is None or exc.errno != errno.EADDRINUSE
                    else f"port held by another program: {listener} is not answered by Limen",
                    f"find it with `ss -lntup | grep :{listener.port}`; stop it or change "
                    f"{listener.setting}",
                )
            )
    return out


def check_rtp_range(inp: DoctorInput) -> list[Finding]:
    o = inp.options
    ports = o.srtp_port_max - o.srtp_port_min + 1
    capacity = ports // PORTS_PER_CALL
    wanted = inp.expected_calls if inp.expected_calls is not None else inp.devices
    basis = "expected calls" if inp.expected_calls is not None else "devices (all in a call)"
    out: list[Finding] = []
    text = (
        f"{o.srtp_port_min}-{o.srtp_port_max}: {ports} ports, {capacity} simultaneous calls "
        f"({PORTS_PER_CALL} ports each); {wanted} {basis}"
    )
    fix = (
        "widen the range: limen options set srtp_port_max N (and open it in the firewall: "
        "limen firewall)"
    )
    if capacity < wanted:
        out.append(Finding("rtp-range", "fail", "srtp ports", text, fix))
    else:
        out.append(Finding("rtp-range", "ok", "srtp ports", text))
    low, high = _ephemeral_range()
    if low is not None and high is not None and o.srtp_port_min <= high and low <= o.srtp_port_max:
        out.append(
            Finding(
                "rtp-range",
                "warn",
                "srtp ports",
                f"the range overlaps the kernel's ephemeral ports {low}-{high}: outgoing "
                "connections may take relay ports",
                "sysctl -w net.ipv4.ip_local_port_range='32768 60999' or move the range",
            )
        )
    return out


def _ephemeral_range() -> tuple[int | None, int | None]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None, None


def _memory_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_resources(inp: DoctorInput) -> list[Finding]:
    devices = inp.devices
    need = RAM_BASE + devices * RAM_PER_DEVICE
    total = _memory_total()
    cpus = os.cpu_count() or 1
    want_cpus = max(2 if devices > 500 else 1, -(-devices // DEVICES_PER_CPU))
    out: list[Finding] = []
    mib = 1024 * 1024
    if total is None:
        out.append(Finding("resources", "warn", "RAM", "cannot read /proc/meminfo"))
    else:
        text = (
            f"{total // mib} MiB RAM for {devices} devices (needs about {need // mib} MiB: "
            f"{RAM_BASE // mib} MiB + {RAM_PER_DEVICE // 1024} KiB per device)"
        )
        fix = (
            "give the machine more RAM; the field report's VM needed 8 GB where 2 GB were "
            "advised (seed 2.11)"
        )
        if total < need:
            out.append(Finding("resources", "fail", "RAM", text, fix))
        elif total < 2 * need:
            out.append(Finding("resources", "warn", "RAM", text + "; little headroom", fix))
        else:
            out.append(Finding("resources", "ok", "RAM", text))
    text = f"{cpus} CPU(s) for {devices} devices (advised: {want_cpus})"
    if cpus < want_cpus:
        out.append(
            Finding(
                "resources",
                "warn",
                "CPU",
                text,
                "add CPUs, and set [media] workers to spread the relay over them",
            )
        )
    else:
        out.append(Finding("resources", "ok", "CPU", text))
    return out


# Addresses a phone on the internet cannot reach: RFC 1918, shared address space (RFC 6598,
# carrier-grade NAT), IPv6 unique local (RFC 4193), link-local.
_PRIVATE = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
]


def check_nat(inp: DoctorInput) -> list[Finding]:
    s, o = inp.settings, inp.options
    out: list[Finding] = []
    ip = s.public_ip.strip()
    phones_get = s.set_side_host
    if not ip:
        out.append(
            Finding(
                "nat",
                "fail",
                "public_ip",
                "no public_ip: Limen cannot tell phones an address they can reach",
                "set public_ip in limen.toml to the address phones reach Limen at",
            )
        )
    else:
        address = ipaddress.ip_address(ip)
        if address.is_loopback or address.is_unspecified:
            out.append(
                Finding(
                    "nat",
                    "fail",
                    "public_ip",
                    f"public_ip {ip} cannot be reached by phones",
                    "set public_ip to the address phones reach Limen at (limen.toml)",
                )
            )
        elif any(address in net for net in _PRIVATE):
            out.append(
                Finding(
                    "nat",
                    "warn",
                    "public_ip",
                    f"public_ip {ip} is a private address: phones at home cannot reach it",
                    "if Limen sits behind a NAT router, set public_ip to the router's public "
                    "address and forward the ports `limen firewall` lists (SIP, 4445, "
                    f"UDP {o.srtp_port_min}-{o.srtp_port_max}) to this machine",
                )
            )
        else:
            out.append(Finding("nat", "ok", "public_ip", f"phones are given {phones_get}"))
    if phones_get.endswith(".local"):
        out.append(
            Finding(
                "nat",
                "fail",
                "set side",
                f"phones are given {phones_get}: .local names resolve only by mDNS on one LAN",
                "set fqdn_for_phones = false (phones then get public_ip) or a public name",
            )
        )
    if o.sip_udp and o.options_hb == "Never":
        out.append(
            Finding(
                "nat",
                "warn",
                "options_hb",
                "phones may use UDP but Limen sends no OPTIONS keepalives: home routers "
                "close idle UDP mappings and calls to the phones get lost",
                'limen options set options_hb "Only behind NAT"',
            )
        )
    if o.heartbeat_interval > 30 and o.options_hb != "Never":
        out.append(
            Finding(
                "nat",
                "warn",
                "heartbeat_interval",
                f"keepalives every {o.heartbeat_interval} s: many home routers drop UDP "
                "mappings after 30 s",
                "limen options set heartbeat_interval 20",
            )
        )
    if not (o.sip_tls or o.sip_tcp or o.sip_udp):
        out.append(
            Finding(
                "nat",
                "fail",
                "transports",
                "sip_udp, sip_tcp and sip_tls are all off: no phone can register",
                "limen options set sip_tls on",
            )
        )
    for name, enabled, listening in (
        ("sip_udp", o.sip_udp, s.sip.udp),
        ("sip_tcp", o.sip_tcp, s.sip.tcp),
        ("sip_tls", o.sip_tls, s.sip.tls),
    ):
        if enabled and not listening:
            out.append(
                Finding(
                    "nat",
                    "fail",
                    name,
                    f"{name} is on but limen.toml turns that listener off ([sip] "
                    f"{name[4:]} = false)",
                    f"remove `{name[4:]} = false` from [sip] in limen.toml",
                )
            )
    realm = s.sip.realm.strip()
    if inp.realm_recorded and realm and realm != inp.realm_recorded:
        out.append(
            Finding(
                "nat",
                "warn",
                "realm",
                f"[sip] realm {realm!r} differs from the realm in use {inp.realm_recorded!r}: "
                "at the next start phones that cached the old one get 403",
                f'keep realm = "{inp.realm_recorded}" unless every phone is reconfigured',
            )
        )
    out.append(_firewall_finding())
    out.append(
        Finding(
            "nat",
            "info",
            "ports",
            "phones need SIP (TLS 5061 by default), HTTPS 4445 and the UDP relay range open "
            "from the internet; the admin API only from the PBX and admins",
            "limen firewall > limen.nft; nft -f limen.nft",
        )
    )
    return out


def _firewall_finding() -> Finding:
    """Whether the rule set of `limen firewall` is loaded (root and nft needed to tell)."""
    import shutil
    import subprocess

    nft = shutil.which("nft")
    if nft is None or os.geteuid() != 0:
        return Finding("nat", "info", "firewall", "cannot tell (needs root and nft)")
    try:
        done = subprocess.run(
            [nft, "list", "table", "inet", "limen"], capture_output=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return Finding("nat", "info", "firewall", "nft did not answer")
    if done.returncode == 0:
        return Finding("nat", "ok", "firewall", "the `inet limen` nftables table is loaded")
    return Finding(
        "nat",
        "warn",
        "firewall",
        "no `inet limen` nftables table: nothing here limits what reaches Limen's ports",
        "limen firewall --admin-from ADMIN_NETWORK > limen.nft && nft -f limen.nft "
        "(or an equivalent rule set on the router)",
    )


def run_checks(inp: DoctorInput, only: set[str] | None = None) -> list[Finding]:
    selected = only if only else set(CHECKS)
    unknown = selected - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)} (known: {', '.join(CHECKS)})")
    out: list[Finding] = []
    if selected & {"clock", "icp-sip", "icp-link", "icp-hash"}:
        out += check_icps(inp, selected)
    if "fqdn" in selected:
        out += check_fqdn(inp)
    if "certificates" in selected:
        out += check_certificates(inp)
    if "listeners" in selected:
        out += check_listeners(inp)
    if "rtp-range" in selected:
        out += check_rtp_range(inp)
    if "resources" in selected:
        out += check_resources(inp)
    if "nat" in selected:
        out += check_nat(inp)
    order = {name: index for index, name in enumerate(CHECKS)}
    return sorted(out, key=lambda f: order[f.check])
