"""Acceptance, issue 5: the media relay with real peers in the namespace lab.

- **Tones both ways** (baresip ⇄ baresip): a TLS phone behind the home NAT with mandatory
  SRTP (device override "Require") and a LAN extension registered directly at Kamailio with
  plain RTP. Each plays its own tone (phone 440 Hz, extension 1000 Hz; aufile WAVs written
  here) and records what it hears (sndfile ``dump-*-dec.wav``); the dominant frequency of
  every recording must be the OTHER side's tone. The phone calls the extension (and holds
  and resumes mid-call: baresip's ctrl_tcp ``hold``/``resume``, re-INVITEs relayed through
  Limen and the PBX; the recordings must carry the tone again after the resume), then the
  extension calls the phone.
  SRTP-only on the WAN: tcpdump on the wan router's link to the DMZ captures every UDP
  datagram Limen's relay ports send, tcpdump on the LAN captures the extension's plain RTP.
  Criterion: every RTP datagram toward the phone is 12 + 160 + 10 bytes (PCMU 20 ms plus
  the 80-bit HMAC-SHA1 tag of AES_CM_128_HMAC_SHA1_80; plain RTP would be 172), and none of
  their 160-byte payloads equals any plain PCMU payload the extension sent (a 1000 Hz tone
  at 8 kHz repeats every 8 samples, so its plain payloads are a handful of byte strings
  that would show up verbatim if any packet left unencrypted). RTCP toward the phone is
  SRTCP (E flag set in the index before the tag).
- **NAT rebinding + injection** (Python SRTP phone in ``homepc`` ⇄ baresip extension): the
  phone re-INVITEs with a new media socket (new NAT mapping) mid-call; audio flows both
  ways after it (the extension's recording is 440 Hz, what the phone decrypts from the new
  socket is 1000 Hz). Meanwhile a host on the internet (``wan``) sends SRTP with a wrong key
  to the call's relay port: Limen's call-end log line counts them as ``srtp-auth`` drops and
  the audio is unaffected.
- **488**: a phone offering plain RTP/AVP to a "Require" device gets 488.
- **Media timeout**: a phone stops sending media (vanished) while the extension (SIPp,
  which sends no RTP) stays; after ``[media] media_timeout`` (4 s in the lab) Limen sends
  BYE on both legs: the extension's SIPp scenario completes on the BYE, the phone's SIP
  socket receives its BYE.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from acc_lab import (
    DMZ_LAN_IP,
    EXT_IP,
    HOMEPC_IP,
    MEDIA_EXTENSIONS,
    MEDIA_USERS,
    PBX_IP,
    PUBLIC_IP,
    WAN_IP,
    Baresip,
    BaresipCtrl,
    Lab,
    ext_password,
    icp_aors,
    icp_user,
    ns_socket,
    screen_counts,
    set_password,
    start_baresip,
)
from gw_call_support import UdpUa

from limen.rtp import SrtpContext
from limen.rtp.srtp import SrtpDirection
from limen.sdp.sdes import CryptoAttribute, CryptoSuite, generate_crypto
from limen.sip import Request, Response

pytestmark = [pytest.mark.netns, pytest.mark.peers, pytest.mark.timeout(150)]

PHONE_HZ, EXT_HZ = 440.0, 1000.0
RATE = 8000
SUITE = CryptoSuite.AES_CM_128_HMAC_SHA1_80
PLAIN_RTP_SIZE = 12 + 160  # header + 20 ms of PCMU
# + the 80-bit HMAC-SHA1 tag (AES_CM_128_HMAC_SHA1_80, phone's offer) or the 128-bit GCM tag
# (AEAD_AES_256_GCM, baresip's pick among Limen's offered suites).
SRTP_RTP_SIZES = {PLAIN_RTP_SIZE + 10, PLAIN_RTP_SIZE + 16}
RELAY_PORTS = (20000, 31000)  # global options srtp_port_min/max (defaults)
EXT_BARESIP = MEDIA_EXTENSIONS[0]
EXT_SIPP = MEDIA_EXTENSIONS[1]
EXT_SIP_PORT, EXT_CTRL, PHONE_SIP_PORT, PHONE_CTRL = 5090, 4445, 5072, 4444


# --- audio ----------------------------------------------------------------------------------


def goertzel(samples: list[int], hz: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * hz / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant(samples: list[int]) -> float:
    """The strongest frequency between 100 and 3500 Hz (10 Hz steps), a small DFT."""
    window = samples[:1600]
    return max(range(100, 3500, 10), key=lambda hz: goertzel(window, hz))


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))


def loud_windows(samples: list[int], size: int = 1600) -> list[list[int]]:
    """0.2 s windows that carry sound (not silence/comfort noise)."""
    windows = [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]
    return [w for w in windows if rms(w) > 500]


def read_wav(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as f:
        assert f.getsampwidth() == 2 and f.getnchannels() == 1 and f.getframerate() == RATE, (
            path,
            f.getparams(),
        )
        data = f.readframes(f.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def ulaw_encode(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    for exp in range(7, -1, -1):
        if magnitude & (0x4000 >> (7 - exp)):
            exponent = exp
            break
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def tone_payloads(hz: float, count: int) -> list[bytes]:
    return [
        bytes(
            ulaw_encode(int(8000 * math.sin(2 * math.pi * hz * (n * 160 + i) / RATE)))
            for i in range(160)
        )
        for n in range(count)
    ]


def check_tone(samples: list[int], hz: float, *, min_seconds: float, what: str) -> int:
    """Every loud 0.2 s window's dominant frequency is ``hz`` (±15 Hz); returns the count."""
    loud = loud_windows(samples)
    assert len(loud) * 0.2 >= min_seconds, f"{what}: only {len(loud) * 0.2:.1f} s of sound"
    found = [dominant(w) for w in loud]
    wrong = [f for f in found if abs(f - hz) > 15]
    assert not wrong, f"{what}: expected {hz} Hz, windows at {sorted(set(wrong))}"
    return len(loud)


# --- captures -------------------------------------------------------------------------------


@dataclass
class Capture:
    path: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> list[tuple[float, int, int, bytes]]:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        return read_pcap(self.path)


def capture(lab: Lab, role: str, interface: str, bpf: str, name: str) -> Capture:
    path = lab.folder / f"{name}.pcap"
    process = subprocess.Popen(
        [*lab.ns.exec(role), "tcpdump", "-i", interface, "-U", "-Z", "root", "-w", str(path), bpf],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 5
    while not path.exists():  # tcpdump creates the file once it listens
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.05)
    return Capture(path, process)


def read_pcap(path: Path) -> list[tuple[float, int, int, bytes]]:
    """UDP datagrams (time, sport, dport, payload) of an Ethernet pcap (stdlib)."""
    data = path.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(endian + "I", data[20:24])[0] == 1, "expected Ethernet frames"
    out = []
    offset = 24
    while offset + 16 <= len(data):
        sec, usec, size, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + size]
        offset += 16 + size
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        if ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        sport, dport, length = struct.unpack("!HHH", udp[:6])
        out.append((sec + usec / 1e6, sport, dport, udp[8:length]))
    return out


def is_rtcp(payload: bytes) -> bool:
    return 72 <= payload[1] & 0x7F <= 76  # PT 200-204 (RFC 5761 §4)


# --- peers ----------------------------------------------------------------------------------


def wait_log(phone: Baresip, pattern: str, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, phone.log())) < count:
        assert time.monotonic() < deadline, f"no {count}x {pattern!r}:\n{phone.log()[-4000:]}"
        time.sleep(0.1)


async def wait_at_pbx(lab: Lab, aor: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while aor not in icp_aors(lab.pbx, prefix=aor):
        assert time.monotonic() < deadline, f"{aor} not registered at the PBX"
        await asyncio.sleep(0.2)


def recordings(phone: Baresip) -> list[Path]:
    return sorted((phone.folder / "rec").glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def ext_phone(lab: Lab) -> Iterator[tuple[Baresip, BaresipCtrl]]:
    """A baresip extension on the LAN: registered at Kamailio over UDP, plain RTP, plays
    1000 Hz, records, answers on its own."""
    account = (
        f"<sip:{EXT_BARESIP}@{PBX_IP};transport=udp>;auth_pass={ext_password(EXT_BARESIP)};"
        f'outbound="sip:{PBX_IP}:5060;transport=udp";regint=600;answermode=auto;'
        "audio_codecs=pcmu"
    )
    # baresip binds its RTP sockets to the wildcard address: without this route its RTP
    # would leave from lan's first address (the PBX's), not the extension's SDP address, and
    # Limen's PBX side only accepts media from the SDP address (no latching toward the PBX).
    route = ["ip", "-n", lab.ns["lan"], "route"]
    subprocess.run([*route, "add", f"{DMZ_LAN_IP}/32", "dev", "lan-dmz", "src", EXT_IP], check=True)
    phone = start_baresip(
        lab,
        "lan",
        EXT_IP,
        EXT_BARESIP,
        "baresip-ext",
        EXT_SIP_PORT,
        account=account,
        tone_hz=EXT_HZ,
        tone_seconds=60,
        ctrl_port=EXT_CTRL,
        record=True,
    )
    try:
        deadline = time.monotonic() + 20
        while EXT_BARESIP not in icp_aors(lab.pbx, prefix=EXT_BARESIP):
            assert time.monotonic() < deadline, f"{EXT_BARESIP} not registered:\n{phone.log()}"
            time.sleep(0.2)
        yield phone, BaresipCtrl(lab, "lan", (EXT_IP, EXT_CTRL))
    finally:
        phone.stop()
        subprocess.run([*route, "del", f"{DMZ_LAN_IP}/32"], check=False)


# --- 1 + 2a: tones both ways, SRTP only on the WAN, hold/resume ------------------------------


async def test_tones_both_ways_srtp_only_on_the_wan_and_hold_resume(
    lab: Lab, ext_phone: tuple[Baresip, BaresipCtrl]
) -> None:
    ext, ext_ctrl = ext_phone
    user = MEDIA_USERS[0]
    phone = start_baresip(
        lab,
        "homepc",
        HOMEPC_IP,
        user,
        "baresip-media",
        PHONE_SIP_PORT,
        tone_hz=PHONE_HZ,
        tone_seconds=60,
        ctrl_port=PHONE_CTRL,
        record=True,
    )
    ctrl = BaresipCtrl(lab, "homepc", (HOMEPC_IP, PHONE_CTRL))
    lo, hi = RELAY_PORTS
    wan = capture(
        lab, "wan", "wan-dmz", f"udp and src host {PUBLIC_IP} and src portrange {lo}-{hi}", "wan"
    )
    lan = capture(lab, "lan", "lan-dmz", f"udp and src host {EXT_IP}", "lan")
    try:
        await wait_at_pbx(lab, icp_user(user))
        established = len(re.findall("(?i)call established", ext.log()))
        # The phone calls the extension through Limen and the PBX; hold, resume.
        ctrl.command("dial", f"sip:{EXT_BARESIP}@{PUBLIC_IP}")
        wait_log(phone, "(?i)call established", 1)
        wait_log(ext, "(?i)call established", established + 1)
        await asyncio.sleep(2)
        assert ctrl.command("hold")["ok"], "hold"
        held = time.time()
        await asyncio.sleep(1.5)
        assert ctrl.command("resume")["ok"], "resume"
        resumed = time.time()
        await asyncio.sleep(2.5)
        hung_up = time.time()
        ctrl.command("hangup", timeout=2)
        wait_log(phone, "(?i)call closed|terminated", 1)
        await asyncio.sleep(0.5)
        # The extension calls the phone (its ICP-side number at the PBX).
        ext_ctrl.command("dial", f"sip:{icp_user(user)}@{PBX_IP}")
        wait_log(phone, "(?i)call established", 2)
        await asyncio.sleep(3)
        ext_ctrl.command("hangup", timeout=2)
        wait_log(phone, "(?i)call closed|terminated", 2)
        await asyncio.sleep(0.5)
    finally:
        wan_packets, lan_packets = wan.stop(), lan.stop()
        phone.stop()
    log = phone.log()
    # The hold and the resume were re-INVITEs (sendonly, then sendrecv) answered 200.
    assert "a=sendonly" in log and log.count("a=sendrecv") >= 2, log[-4000:]
    # What each end heard: the other end's tone, both calls. baresip 1.0's sndfile stops
    # writing at the first re-INVITE, so call 1's recordings cover the time before the hold.
    heard_phone, heard_ext = recordings(phone), recordings(ext)[-2:]
    assert len(heard_phone) == 2 and len(heard_ext) == 2, (heard_phone, heard_ext)
    first = check_tone(read_wav(heard_phone[0]), EXT_HZ, min_seconds=1.4, what="phone, call 1")
    check_tone(read_wav(heard_ext[0]), PHONE_HZ, min_seconds=1.4, what="extension, call 1")
    second = check_tone(read_wav(heard_phone[1]), EXT_HZ, min_seconds=2, what="phone, call 2")
    check_tone(read_wav(heard_ext[1]), PHONE_HZ, min_seconds=2, what="extension, call 2")

    # Hold and resume, from the captures: the extension (recvonly while held) stopped
    # sending during the hold and sent again after the resume, and Limen sent the phone
    # SRTP again after the resume (the relay's ICP side fell back to plain RTP once; the
    # hold/resume re-offers toward the PBX stayed plain).
    def between(packets: list[tuple[float, int, int, bytes]], start: float, end: float) -> int:
        return sum(1 for t, _, _, p in packets if start <= t < end and not is_rtcp(p))

    assert between(lan_packets, held + 0.5, resumed) <= 5
    after_ext = between(lan_packets, resumed + 0.5, hung_up)
    after_phone = between(wan_packets, resumed + 0.5, hung_up)
    assert after_ext >= 60 and after_phone >= 60, (after_ext, after_phone)
    # SRTP only toward the phone.
    plain = {p[12:] for *_, p in lan_packets if len(p) >= 12 and not is_rtcp(p)}
    lan_rtp = [p for *_, p in lan_packets if len(p) >= 12 and not is_rtcp(p)]
    assert len(lan_rtp) >= 200 and {len(p) for p in lan_rtp} == {PLAIN_RTP_SIZE}, len(lan_rtp)
    rtp = [p for *_, p in wan_packets if not is_rtcp(p)]
    rtcp = [p for *_, p in wan_packets if is_rtcp(p)]
    sizes = {len(p) for p in rtp}
    assert len(rtp) >= 200 and sizes <= SRTP_RTP_SIZES, (len(rtp), sizes)
    assert not {p[12 : 12 + 160] for p in rtp} & plain, "plain PCMU left toward the phone"
    print(
        f"\nphone heard {EXT_HZ} Hz ({first * 0.2:.1f} s sound call 1, {second * 0.2:.1f} s call"
        f" 2); after resume: {after_ext} RTP from the extension, {after_phone} SRTP to the "
        f"phone; WAN: {len(rtp)} RTP datagrams, sizes {sorted(sizes)} B, {len(rtcp)} RTCP; "
        f"LAN: {len(lan_rtp)} plain RTP {PLAIN_RTP_SIZE} B ({len(plain)} distinct payloads)"
    )


# --- a Python SIP/SRTP phone in homepc -------------------------------------------------------


class HomeUa(UdpUa):
    """gw_call_support's UDP UA with its socket in ``homepc`` (its own address in Via and
    Contact, behind the home NAT)."""

    def use(self, sock: socket.socket) -> None:
        self.sock.close()
        self.sock = sock
        self.port = sock.getsockname()[1]

    async def send(self, data: bytes | Request | Response) -> None:
        raw = bytes(data)
        raw = raw.replace(b"UDP 127.0.0.1:", f"UDP {HOMEPC_IP}:".encode())
        raw = raw.replace(b"@127.0.0.1:", f"@{HOMEPC_IP}:".encode())
        await asyncio.get_running_loop().sock_sendto(self.sock, raw, self.limen)


def offer(port: int, crypto: CryptoAttribute | None, version: int = 1) -> bytes:
    profile = "RTP/SAVP" if crypto is not None else "RTP/AVP"
    lines = [
        "v=0",
        f"o=phone 1 {version} IN IP4 {HOMEPC_IP}",
        "s=-",
        f"c=IN IP4 {HOMEPC_IP}",
        "t=0 0",
        f"m=audio {port} {profile} 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    ]
    if crypto is not None:
        lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class SrtpPhone:
    """SIP over UDP + SRTP PCMU media, in ``homepc``."""

    lab: Lab
    user: str
    ua: HomeUa = field(init=False)
    media: socket.socket = field(init=False)
    ours: CryptoAttribute = field(default_factory=lambda: generate_crypto(1, SUITE))
    call_id: str = field(default_factory=lambda: "acc-media-" + secrets.token_hex(6))
    invite: Request | None = None
    answer: Response | None = None
    relay_port: int = 0
    inbound: list[tuple[bytes, SrtpContext]] = field(default_factory=list)  # newest first
    heard: dict[int, list[int]] = field(default_factory=dict)  # media port → samples
    cseq: int = 1
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ua = HomeUa(self.user, set_password(self.user), (PUBLIC_IP, 5060))
        self.ua.use(ns_socket(self.lab, "homepc", bind=(HOMEPC_IP, 0)))
        self.media = self.new_media_socket()
        self.outbound = SrtpContext(SUITE, self.ours.key_salt, SrtpDirection.OUTBOUND)

    def new_media_socket(self) -> socket.socket:
        return ns_socket(self.lab, "homepc", bind=(HOMEPC_IP, 0))

    @property
    def media_port(self) -> int:
        return int(self.media.getsockname()[1])

    def _answer_keys(self, response: Response) -> None:
        sdp = response.body.decode()
        found = re.search(r"a=crypto:(.+)", sdp)
        assert found is not None and "RTP/SAVP" in sdp, sdp
        assert f"c=IN IP4 {PUBLIC_IP}" in sdp, sdp
        self.relay_port = int(re.search(r"m=audio (\d+)", sdp).group(1))  # type: ignore[union-attr]
        key = CryptoAttribute.parse(found.group(1).strip()).key_salt
        if not self.inbound or self.inbound[0][0] != key:
            self.inbound.insert(0, (key, SrtpContext(SUITE, key, SrtpDirection.INBOUND)))

    async def call(self, target: str, body: bytes | None = None) -> Response:
        invite = self.ua.request(
            "INVITE",
            f"sip:{target}@{PUBLIC_IP}",
            call_id=self.call_id,
            body=body if body is not None else offer(self.media_port, self.ours),
        )
        invite, final = await self.ua.transact(invite)
        self.invite, self.cseq = invite, invite.cseq.seq
        if final.status == 200:
            self.answer = final
            self._answer_keys(final)
            await self.ack(invite.cseq.seq)
        return final

    def in_dialog(self, method: str, body: bytes = b"") -> Request:
        assert self.invite is not None and self.answer is not None
        self.cseq += 1
        contact = self.answer.get("Contact")
        assert contact is not None
        return self.ua.request(
            method,
            contact.strip("<>").split(">")[0],
            to=str(self.invite.to.uri),
            to_tag=self.answer.to_tag,
            cseq=self.cseq,
            call_id=self.call_id,
            body=body,
        )

    async def ack(self, cseq: int) -> None:
        assert self.invite is not None and self.answer is not None
        contact = self.answer.get("Contact")
        assert contact is not None
        await self.ua.send(
            self.ua.request(
                "ACK",
                contact.strip("<>").split(">")[0],
                to=str(self.invite.to.uri),
                to_tag=self.answer.to_tag,
                cseq=cseq,
                call_id=self.call_id,
            )
        )

    async def reinvite_from_new_socket(self) -> Response:
        """NAT rebinding: a new media socket (a new mapping at the NAT), re-INVITE with it."""
        old, self.media = self.media, self.new_media_socket()
        request = self.in_dialog("INVITE", offer(self.media_port, self.ours, version=2))
        request, final = await self.ua.transact(request)
        self.cseq = request.cseq.seq
        assert final.status == 200, final
        self._answer_keys(final)
        await self.ack(request.cseq.seq)
        self._tasks.append(asyncio.create_task(self._receive(self.media)))
        old.close()  # the old mapping is gone
        return final

    async def bye(self) -> Response:
        _, final = await self.ua.transact(self.in_dialog("BYE"))
        return final

    def start_media(self) -> None:
        self._tasks.append(asyncio.create_task(self._send()))
        self._tasks.append(asyncio.create_task(self._receive(self.media)))

    async def stop_media(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        payloads = tone_payloads(PHONE_HZ, 50)  # 440 Hz: one second repeats exactly
        seq = 0
        start = loop.time()
        while True:
            seq += 1
            packet = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0x5EED0001)
            data = self.outbound.protect(packet + payloads[seq % 50])
            await loop.sock_sendto(self.media, data, (PUBLIC_IP, self.relay_port))
            await asyncio.sleep(max(0.0, start + seq * 0.02 - loop.time()))

    async def _receive(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        port = sock.getsockname()[1]
        samples = self.heard.setdefault(port, [])
        while True:
            data = await loop.sock_recv(sock, 4096)
            if 72 <= data[1] & 0x7F <= 76:
                continue  # SRTCP
            for _, context in self.inbound:
                try:
                    packet = context.unprotect(data)
                    break
                except Exception:  # the key before a re-keying re-INVITE
                    continue
            else:
                raise AssertionError("SRTP from Limen failed authentication")
            samples.extend(ulaw_decode(b) for b in packet[12:])

    def close(self) -> None:
        self.ua.close()
        self.media.close()


def limen_key(lab: Lab, call_id: str) -> str:
    """Limen's log key of the call whose set-side Call-ID is ``call_id``."""
    pattern = rf"\[(\w+)\] INVITE \S+ from the set side \(Call-ID {call_id}\)"
    found = re.search(pattern, lab.limen.stderr())
    assert found is not None, lab.limen.stderr()[-3000:]
    return found.group(1)


@pytest.fixture
async def srtp_phone(lab: Lab) -> AsyncIterator[list[SrtpPhone]]:
    phones: list[SrtpPhone] = []
    yield phones
    for phone in phones:
        await phone.stop_media()
        phone.close()


# --- 2b + 3: NAT rebinding by re-INVITE, wrong-key SRTP from elsewhere ---------------------------


async def test_nat_rebinding_and_wrong_key_injection_keep_audio(
    lab: Lab, ext_phone: tuple[Baresip, BaresipCtrl], srtp_phone: list[SrtpPhone]
) -> None:
    ext, _ = ext_phone
    phone = SrtpPhone(lab, MEDIA_USERS[1])
    srtp_phone.append(phone)
    before = len(recordings(ext))
    final = await phone.call(EXT_BARESIP)
    assert final.status == 200, final
    first_port = phone.media_port
    phone.start_media()
    await asyncio.sleep(2)
    await phone.reinvite_from_new_socket()
    second_port = phone.media_port
    assert second_port != first_port
    # An attacker on the internet: SRTP-shaped packets with a key of its own.
    attacker = ns_socket(lab, "wan", bind=(WAN_IP, 0))
    rogue = SrtpContext(SUITE, os.urandom(30), SrtpDirection.OUTBOUND)
    loop = asyncio.get_running_loop()
    injected = 50
    try:
        for seq in range(1, injected + 1):
            packet = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x0BADC0DE) + bytes(160)
            await loop.sock_sendto(attacker, rogue.protect(packet), (PUBLIC_IP, phone.relay_port))
            await asyncio.sleep(0.02)
    finally:
        attacker.close()
    await asyncio.sleep(1.5)
    await phone.stop_media()
    final = await phone.bye()
    assert final.status == 200, final
    await asyncio.sleep(1.0)
    # Audio both ways before and after the rebinding.
    before_rebind = phone.heard.get(first_port, [])
    after_rebind = phone.heard.get(second_port, [])
    check_tone(before_rebind, EXT_HZ, min_seconds=1.0, what="phone before the rebinding")
    check_tone(after_rebind, EXT_HZ, min_seconds=2.4, what="phone after the rebinding")
    heard = recordings(ext)
    assert len(heard) == before + 1, heard
    samples = read_wav(heard[-1])
    check_tone(samples, PHONE_HZ, min_seconds=4.0, what="extension")
    check_tone(samples[-RATE:], PHONE_HZ, min_seconds=0.4, what="extension, last second")
    # The injected packets were dropped and counted (Limen's call-end line for the set leg).
    key = limen_key(lab, phone.call_id)
    lines = [
        line
        for line in lab.limen.stderr().splitlines()
        if f"media {key} set#0:" in line and "dropped" in line
    ]
    assert lines, lab.limen.stderr()[-3000:]
    dropped = re.search(r"'srtp-auth': (\d+)", lines[-1])
    assert dropped is not None and int(dropped.group(1)) >= injected, lines[-1]
    print(
        f"\nphone heard {EXT_HZ} Hz on both sockets ({len(before_rebind) / RATE:.1f} s then "
        f"{len(after_rebind) / RATE:.1f} s); extension heard {PHONE_HZ} Hz; {lines[-1]}"
    )


# --- 4: plain RTP under "Require" -----------------------------------------------------------


async def test_plain_rtp_offer_under_require_gets_488(
    lab: Lab, srtp_phone: list[SrtpPhone]
) -> None:
    phone = SrtpPhone(lab, MEDIA_USERS[2])
    srtp_phone.append(phone)
    final = await phone.call(EXT_BARESIP, body=offer(phone.media_port, None))
    assert final.status == 488, final


# --- 5: media timeout -----------------------------------------------------------------------


async def test_media_timeout_ends_a_call_whose_phone_vanished(
    lab: Lab, srtp_phone: list[SrtpPhone]
) -> None:
    port = 6700
    register = await lab.sipp(
        "lan",
        "ext-media-register",
        "register",
        local_ip=EXT_IP,
        port=port,
        remote=f"{PBX_IP}:5060",
        inf=[
            f"{EXT_SIPP};{PBX_IP};[authentication username={EXT_SIPP} "
            f"password={ext_password(EXT_SIPP)}];600"
        ],
    )
    assert await register.wait(20) == 0, register.explain()
    callee = await lab.sipp("lan", "ext-media-timeout", "uas_rr", local_ip=EXT_IP, port=port)
    phone = SrtpPhone(lab, MEDIA_USERS[3])
    srtp_phone.append(phone)
    final = await phone.call(EXT_SIPP)
    assert final.status == 200, final
    phone.start_media()
    await asyncio.sleep(1)
    await phone.stop_media()  # the phone vanishes from the media path
    vanished = time.monotonic()
    message = await phone.ua.receive(timeout=10)
    while not isinstance(message, Request):
        message = await phone.ua.receive(timeout=10)
    waited = time.monotonic() - vanished
    assert message.method == "BYE" and message.call_id == phone.call_id, message
    await phone.ua.send(message.create_response(200))
    assert 3.5 <= waited <= 8, waited  # media_timeout = 4 s in the lab
    rc = await callee.wait(10)  # the extension got its BYE too and answered it
    assert rc == 0 and screen_counts(callee) == (1, 0), callee.explain()
    key = limen_key(lab, phone.call_id)
    assert f"[{key}] call ends: media timeout" in lab.limen.stderr()
    print(f"\nBYE to the phone {waited:.1f} s after its media stopped; extension got BYE")
