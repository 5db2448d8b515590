"""SIP parser benchmark: Limen's message layer against Sippy B2BUA's, in the same run.

Run: ``.venv/bin/python bench/sip_parse.py`` (or ``make bench``). One core, CPython.
For each message (an INVITE with SDP, a REGISTER with Authorization) it prints messages
per second for:

- parse + serialise (the proxy fast path: nothing edited);
- parse + typed access (top Via branch and sent-by, CSeq, Call-ID, From/To tags) +
  serialise: what a transaction/dialog layer needs for every message;
- the same two for Sippy B2BUA (``SipRequest(text)``, ``getHFBody`` and ``localStr()``),
  the anchor;
- a plain eager split of the text into lines and ``name: value`` pairs, as a floor.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable

from limen.sip import parse_message

INVITE = (
    "INVITE sip:7001@pbx.example.com;transport=tls SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 198.51.100.23:49152;branch=z9hG4bK-524287-1---9b3f0c0e5ad7c4a1;rport\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:7000@198.51.100.23:49152;transport=tls;ob>;+sip.instance="
    '"<urn:uuid:00000000-0000-1000-8000-00085d4330b8>"\r\n'
    "To: <sip:7001@pbx.example.com>\r\n"
    'From: "Alice Martin" <sip:7000@pbx.example.com>;tag=a7c3f1e2\r\n'
    "Call-ID: 7f3c2d1e-9a8b-4c5d-8e7f-6a5b4c3d2e1f@198.51.100.23\r\n"
    "CSeq: 2 INVITE\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE\r\n"
    "Content-Type: application/sdp\r\n"
    "Supported: replaces, 100rel, timer, norefersub\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "Min-SE: 90\r\n"
    "User-Agent: Aastra 6867i/6.2.0.1011\r\n"
    'Proxy-Authorization: Digest username="7000",realm="pbx.example.com",'
    'nonce="ZK3qYQAAAABZ0z4bAAAAAAAAAAAAAAAA",uri="sip:7001@pbx.example.com",'
    'response="0b6fd6a7ce5b1a3f8a1b3fdf1b0b9e53",algorithm=MD5,cnonce="1a2b3c4d",'
    "qop=auth,nc=00000001\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)
SDP = (
    "v=0\r\n"
    "o=- 1234567890 1234567890 IN IP4 198.51.100.23\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.23\r\n"
    "t=0 0\r\n"
    "m=audio 20000 RTP/SAVP 0 8 9 18 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)
REGISTER = (
    "REGISTER sip:pbx.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 198.51.100.23:49152;branch=z9hG4bK-524287-1---4cf2a9b1;rport\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:7000@198.51.100.23:49152;transport=tls>;expires=900\r\n"
    "To: <sip:7000@pbx.example.com>\r\n"
    "From: <sip:7000@pbx.example.com>;tag=5d3e2f1a\r\n"
    "Call-ID: 0b3d4c5e-6f7a-8b9c-0d1e-2f3a4b5c6d7e@198.51.100.23\r\n"
    "CSeq: 3 REGISTER\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    "User-Agent: Aastra 6867i/6.2.0.1011\r\n"
    'Authorization: Digest username="7000",realm="limen",nonce="AAABjXr2qYQ3c2e1f0a9b8c7d6e5f4a3",'
    'uri="sip:pbx.example.com",response="6629fae49393a05397450978507c4ef1",algorithm=MD5,'
    'cnonce="0a4f113b",qop=auth,nc=00000001\r\n'
    "Expires: 900\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
MESSAGES = {
    "INVITE+SDP": INVITE.format(length=len(SDP)) + SDP,
    "REGISTER+auth": REGISTER,
}


def limen_parse_serialise(data: bytes) -> None:
    bytes(parse_message(data))


def limen_parse_typed_serialise(data: bytes) -> None:
    msg = parse_message(data)
    via = msg.top_via
    _ = (via.branch, via.sent_by, msg.cseq.seq, msg.cseq.method, msg.call_id)
    _ = (msg.from_.tag, msg.to.tag)
    bytes(msg)


def eager_split(data: bytes) -> None:
    head, _, _body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    [line.split(":", 1) for line in lines[1:]]


def make_sippy() -> dict[str, Callable[[bytes], None]]:
    from sippy.SipRequest import SipRequest

    def parse_serialise(data: bytes) -> None:
        SipRequest(data.decode()).localStr()

    def parse_typed_serialise(data: bytes) -> None:
        req = SipRequest(data.decode())
        via = req.getHFBody("via")
        _ = (via.getBranch(), via.getTAddr(), req.getHFBody("cseq").getCSeq())
        _ = (req.getHFBody("call-id").body, req.getHFBody("from").getTag())
        _ = req.getHFBody("to").getTag()
        req.localStr()

    return {
        "sippy parse+serialise": parse_serialise,
        "sippy parse+typed+serialise": parse_typed_serialise,
    }


def rate(func: Callable[[bytes], None], data: bytes, seconds: float) -> float:
    """Best messages/second over 5 rounds of roughly ``seconds / 5`` each."""
    n = 200
    while True:  # calibrate a batch that takes ~20 ms
        t0 = time.perf_counter()
        for _ in range(n):
            func(data)
        dt = time.perf_counter() - t0
        if dt > 0.02:
            break
        n *= 2
    batches = max(1, int(seconds / 5 / dt))
    best = 0.0
    gc.collect()
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(batches):
            for _ in range(n):
                func(data)
        elapsed = time.perf_counter() - t0
        best = max(best, batches * n / elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()
    cases: dict[str, Callable[[bytes], None]] = {
        "limen parse+serialise": limen_parse_serialise,
        "limen parse+typed+serialise": limen_parse_typed_serialise,
    }
    try:
        cases.update(make_sippy())
    except ImportError:
        print("sippy not installed: pip install sippy==2.5.0 (anchor missing)", file=sys.stderr)
    cases["eager split (floor)"] = eager_split
    print(f"python {platform.python_version()} on {platform.machine()}, one core")
    results: dict[tuple[str, str], float] = {}
    for label, text in MESSAGES.items():
        data = text.encode()
        print(f"\n{label} ({len(data)} bytes)")
        for name, func in cases.items():
            r = rate(func, data, args.seconds)
            results[(label, name)] = r
            print(f"  {name:32} {r:>10,.0f} msg/s  {1e6 / r:6.1f} us/msg")
        sippy = results.get((label, "sippy parse+typed+serialise"))
        ours = results[(label, "limen parse+typed+serialise")]
        if sippy:
            print(f"  limen / sippy (typed)            {ours / sippy:10.1f}x")


if __name__ == "__main__":
    main()
