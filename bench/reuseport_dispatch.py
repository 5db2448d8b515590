"""Prototype for issue 13's next step (docs/benchmarks.md, "The limit is one core"): can a
dispatcher own every incoming SIP datagram while worker processes answer from the same
address and port, and what does the dispatcher cost per message?

Run: ``.venv/bin/python bench/reuseport_dispatch.py [--messages N]``. Loopback only.

1. One UDP "dispatcher" socket and four "worker" sockets bound to the same address:port
   with SO_REUSEPORT. The group gets a classic BPF program that returns 0
   (SO_ATTACH_REUSEPORT_CBPF, Linux >= 4.5, no privilege): the kernel then hands every
   incoming datagram to socket 0 -- the dispatcher, bound first -- whatever its 4-tuple.
   Checked: datagrams from 200 different source ports all reach the dispatcher, none a
   worker; a worker's reply leaves from the shared port (what phones and NATs need,
   RFC 3261 §18.2.2).
2. The dispatcher's work per message, timed: find the routing key without parsing (the
   Call-ID's worker suffix for Limen's own Call-IDs, else the From user of a set-side
   request), pick a worker, pass the datagram and its source over a Unix datagram
   socketpair; and the worker's receive of it.
"""

from __future__ import annotations

import argparse
import ctypes
import socket
import struct
import sys
import time
import zlib

SO_ATTACH_REUSEPORT_CBPF = 51  # include/uapi/asm-generic/socket.h
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k
WORKERS = 4

INVITE = (
    b"INVITE sip:8001@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:p0042@192.0.2.10>;tag=1928301774\r\n'
    b"To: <sip:8001@192.0.2.10>\r\n"
    b"Call-ID: a84b4c76e66710@198.51.100.7\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:p0042@198.51.100.7:5060>\r\n"
    b"User-Agent: bench\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 180\r\n\r\n" + b"v=0\r\n" + b"a=x\r\n" * 35
)
# An in-dialog request from the ICP side: the B-leg Call-ID is Limen's, with the index of
# the worker that owns the call.
BYE = INVITE.replace(b"INVITE sip:8001", b"BYE sip:8001").replace(
    b"a84b4c76e66710@198.51.100.7", b"5f0c9e2b7d41a8e3.w3@limen"
)


def attach_return_zero(sock: socket.socket) -> ctypes.Array[ctypes.c_char]:
    """Attach ``ret #0`` to the socket's reuseport group; returns the buffer that must
    outlive the call (the kernel copies it, but keep it simple)."""
    program = ctypes.create_string_buffer(struct.pack("HBBI", BPF_RET_K, 0, 0, 0))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    return program


def reuse_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


def header_value(data: bytes, long: bytes, compact: bytes) -> bytes:
    """The value of the first header called ``long`` (or its compact form), found with
    bytes.find only; b"" if absent. Enough for routing, never for validation."""
    for name in (long, compact):
        at = data.find(b"\r\n" + name + b":")
        if at < 0:
            at = data.find(b"\r\n" + name.lower() + b":")
        if at >= 0:
            start = at + len(name) + 3
            end = data.find(b"\r\n", start)
            return data[start:end].strip()
    return b""


def route(data: bytes, workers: int) -> int:
    call_id = header_value(data, b"Call-ID", b"i")
    dot = call_id.rfind(b".w")
    if dot >= 0 and call_id.endswith(b"@limen"):
        index = call_id[dot + 2 : call_id.index(b"@")]
        if index.isdigit():
            return int(index) % workers
    sender = header_value(data, b"From", b"f")
    sip = sender.find(b"sip:")
    at = sender.find(b"@", sip)
    user = sender[sip + 4 : at] if sip >= 0 and at > sip else call_id
    return zlib.crc32(user) % workers


def check_group() -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    dispatcher = reuse_socket(port)
    dispatcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    keep = attach_return_zero(dispatcher)
    workers = [reuse_socket(port) for _ in range(WORKERS)]
    clients = []
    for _ in range(200):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind(("127.0.0.1", 0))
        c.sendto(INVITE, ("127.0.0.1", port))
        clients.append(c)
    time.sleep(0.2)

    def drain(s: socket.socket) -> int:
        n = 0
        while True:
            try:
                s.recvfrom(65535)
            except BlockingIOError:
                return n
            n += 1

    at_dispatcher = drain(dispatcher)
    at_workers = sum(drain(w) for w in workers)
    workers[2].sendto(b"SIP/2.0 100 Trying\r\n\r\n", clients[0].getsockname())
    _, source = clients[0].recvfrom(65535)
    ok = at_dispatcher == 200 and at_workers == 0 and source[1] == port
    print(
        f"reuseport group of 1 dispatcher + {WORKERS} workers on 127.0.0.1:{port}, "
        f"cBPF 'ret #0': {at_dispatcher}/200 datagrams at the dispatcher, {at_workers} at "
        f"workers; a worker's reply came from port {source[1]}: {'OK' if ok else 'FAILED'}"
    )
    del keep
    for s in (dispatcher, *workers, *clients):
        s.close()
    return ok


def time_dispatch(messages: int) -> None:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(WORKERS)]
    for a, b in pairs:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    source = struct.pack("!4sH", socket.inet_aton("198.51.100.7"), 5060)
    batch = 256
    for name, data in (("INVITE (route by From user)", INVITE), ("BYE (route by Call-ID)", BYE)):
        routed = forwarded = received = 0.0
        counts = [0] * WORKERS
        for _ in range(messages // batch):
            t0 = time.perf_counter()
            targets = [route(data, WORKERS) for _ in range(batch)]
            t1 = time.perf_counter()
            for k in targets:
                pairs[k][0].send(source + data)
            t2 = time.perf_counter()
            for k in targets:
                pairs[k][1].recv(65535)
                counts[k] += 1
            t3 = time.perf_counter()
            routed += t1 - t0
            forwarded += t2 - t1
            received += t3 - t2
        n = messages // batch * batch
        print(
            f"{name}: key {routed / n * 1e6:.2f} µs + forward {forwarded / n * 1e6:.2f} µs "
            f"(dispatcher) + receive {received / n * 1e6:.2f} µs (worker) per message; "
            f"worker {counts.index(max(counts))}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    ok = check_group()
    time_dispatch(args.messages)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
