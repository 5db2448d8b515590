"""The per-call SIP history (bounds, memory), the ladder placement and the pcap that
tshark must read back message for message."""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from limen.gateway.history import SipHistory, SipRecord
from limen.sip import Transport, parse_message
from limen.sip.addressing import Destination, Source
from limen.web.pcap import write_pcap
from limen.web.render import ladder_rows, ladder_svg

SDP = (
    "v=0\r\no=ua 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)


def message(first: str, call_id: str, method: str, cseq: int = 1, body: str = "") -> bytes:
    lines = [
        first,
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1;rport",
        "Max-Forwards: 70",
        'From: "Desk 7000" <sip:7000@limen.example.com>;tag=a1b2c3',
        "To: <sip:7001@limen.example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:7000@192.0.2.10:5062>",
        "User-Agent: Mitel 6867i/5.1.0",
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


PHONE = Source(Transport.UDP, ("198.51.100.1", 5060), ("192.0.2.10", 5062))
PBX = Destination(Transport.UDP, "10.0.0.5", 5060)


def record_call(history: SipHistory, set_id: str, icp_id: str) -> None:
    """A typical call: 12 messages over both legs, INVITEs with SDP."""
    invite = "INVITE sip:7001@limen.example.com SIP/2.0"
    steps = [
        ("in", set_id, invite, "INVITE", SDP),
        ("out", set_id, "SIP/2.0 100 Trying", "INVITE", ""),
        ("out", icp_id, "INVITE sip:7001@10.0.0.5 SIP/2.0", "INVITE", SDP),
        ("in", icp_id, "SIP/2.0 180 Ringing", "INVITE", ""),
        ("out", set_id, "SIP/2.0 180 Ringing", "INVITE", ""),
        ("in", icp_id, "SIP/2.0 200 OK", "INVITE", SDP),
        ("out", set_id, "SIP/2.0 200 OK", "INVITE", SDP),
        ("in", set_id, "ACK sip:7001@198.51.100.1 SIP/2.0", "ACK", ""),
        ("out", icp_id, "ACK sip:7001@10.0.0.5 SIP/2.0", "ACK", ""),
        ("in", set_id, "BYE sip:7001@198.51.100.1 SIP/2.0", "BYE", ""),
        ("out", icp_id, "BYE sip:7001@10.0.0.5 SIP/2.0", "BYE", ""),
        ("in", icp_id, "SIP/2.0 200 OK", "BYE", ""),
    ]
    for direction, call_id, first, method, body in steps:
        parsed = parse_message(message(first, call_id, method, body=body))
        if direction == "in":
            source = (
                PHONE
                if call_id == set_id
                else Source(Transport.UDP, ("10.0.0.1", 5060), ("10.0.0.5", 5060))
            )
            history.received(parsed, source)
        else:
            dest = PBX if call_id == icp_id else Destination(Transport.UDP, "192.0.2.10", 5062)
            history.sent(parsed, bytes(parsed), dest)


def test_history_keeps_call_messages_and_skips_registrations() -> None:
    history = SipHistory()
    record_call(history, "set-1", "icp-1")
    history.received(
        parse_message(message("REGISTER sip:limen SIP/2.0", "reg-1", "REGISTER")), PHONE
    )
    records = history.messages(["set-1", "icp-1"])
    assert len(records) == 12 and len(history) == 2
    assert [r.label for r in records[:4]] == ["INVITE", "100 Trying", "INVITE", "180 Ringing"]
    rows = ladder_rows(records, {"set-1"})
    # phone → Limen, Limen → phone, Limen → PBX, PBX → Limen
    assert [(r.source, r.target) for r in rows[:4]] == [(0, 1), (1, 0), (1, 2), (2, 1)]
    svg = ladder_svg(rows, "/console/calls/k/messages/{n}")
    assert svg.count("<line x1=") == 12 + 3 and 'hx-get="/console/calls/k/messages/11"' in svg


def test_history_bounds() -> None:
    history = SipHistory(max_calls=10, max_messages=5, max_bytes=20_000)
    for n in range(30):
        record_call(history, f"set-{n}", f"icp-{n}")
    assert len(history) <= 10
    assert history.size <= 20_000
    assert history.messages(["set-0"]) == []  # evicted, oldest first
    newest = history.messages(["set-29", "icp-29"])
    assert len(newest) == 10  # 5 per Call-ID
    assert history.dropped(["set-29", "icp-29"]) == 2


def test_history_memory_per_call() -> None:
    """What one recorded call costs, for docs/architecture.md and the module docstring."""
    history = SipHistory(max_calls=4000, max_bytes=1 << 30)
    calls = 500
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for n in range(calls):
        record_call(history, f"set-{n}", f"icp-{n}")
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_call = grown / calls
    ids = [i for n in range(calls) for i in (f"set-{n}", f"icp-{n}")]
    text = sum(len(r.data) for r in history.messages(ids)) / calls
    print(f"SIP history: {per_call / 1024:.1f} KiB per 12-message call ({text:.0f} B of text)")
    # The parsed message objects are freed; only the bytes and a small record stay, and
    # the byte cap's estimate of that record is not below what it really costs.
    from limen.gateway.history import RECORD_OVERHEAD

    assert per_call <= history.size / calls * 1.1
    assert per_call - text < 12 * RECORD_OVERHEAD * 1.1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_pcap_opens_in_tshark_with_every_message(tmp_path: Path) -> None:
    history = SipHistory()
    record_call(history, "set-1", "icp-1")
    records = history.messages(["set-1", "icp-1"])
    # An IPv6 phone too: the pcap carries both families.
    v6 = SipRecord(
        records[-1].time + 0.1,
        "in",
        "udp",
        ("2001:db8::1", 5060),
        ("2001:db8::10", 5062),
        "set-1",
        message("OPTIONS sip:limen SIP/2.0", "set-1", "INFO", cseq=9),
    )
    path = tmp_path / "call.pcap"
    path.write_bytes(write_pcap([*records, v6]))
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-d", "udp.port==5062,sip",
         "-T", "json", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID",
         "-e", "ip.src", "-e", "ipv6.src", "-e", "udp.checksum.status", "-e", "_ws.expert"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    packets = [p["_source"]["layers"] for p in json.loads(out.stdout)]
    assert len(packets) == 13
    methods = [p.get("sip.Method", p.get("sip.Status-Code"))[0] for p in packets]
    assert methods[:6] == ["INVITE", "100", "INVITE", "180", "180", "200"]
    assert [p["sip.Call-ID"][0] for p in packets[:3]] == ["set-1", "set-1", "icp-1"]
    assert packets[0]["ip.src"] == ["192.0.2.10"]  # the phone sent the first INVITE
    assert packets[2]["ip.src"] == ["10.0.0.1"]  # Limen's ICP-side address
    assert packets[-1]["ipv6.src"] == ["2001:db8::10"]
    assert packets[-1]["udp.checksum.status"] == ["1"]  # IPv6 UDP checksum is right
