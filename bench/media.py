"""Media relay benchmark: N concurrent SRTP⇄RTP calls through Limen and through rtpengine.

Run: ``.venv/bin/python bench/media.py [--quick]`` (``--calls 50 100 ...``, ``--seconds S``).

Each call has one SRTP leg (phone side, AES_CM_128_HMAC_SHA1_80, SDES keys from the SDP the
relay returns) and one plain RTP leg (PBX side); both sides send 20 ms G.711 packets (172-byte
RTP, 50 packets/s each way), paced, so N calls = 100·N packets/s relayed. N steps up until
an engine loses more than 0.1%; the two engines run one after the other for each N, in the
same run:

- **Limen**: bench/relay_process.py hosting one ``limen.media.MediaRelay`` on uvloop,
  pinned to one core, set up over a JSON-lines control channel (phone offers SRTP on the
  ``set`` leg, the PBX answers plain on the ``icp`` leg).
- **rtpengine** (anchor): userspace (``--table=-1``, one worker thread), pinned to the same
  core, set up over its ng protocol (phone offers RTP/SAVP, ``transport-protocol: RTP/AVP``
  toward the PBX, the PBX answers plain).

Load: bench/media_gen.c, a one-thread C generator + sink with libsrtp2 (built on demand with
``cc -O2 ... -lsrtp2``; needs ``apt-get install libsrtp2-dev``), pinned to the other core.
It timestamps each packet's payload (CLOCK_REALTIME) and takes the kernel's receive time
(SO_TIMESTAMPNS), so latency is end to end through the relay on one host clock (the loopback
path alone is a few tens of µs, so this is an upper bound of the latency the relay adds).
It reports how late its 1 ms send ticks ran (p99 "gen lag"): a row where that exceeds one
ptime (20 ms) is marked "generator behind" and is not counted as the relay's figure (the
generator then sends in bursts and its own receive buffers may overflow). Relay CPU:
utime+stime of the relay process (all threads) from /proc/<pid>/stat over the measured
window. As root the relays and the generator run at nice -10 in their own sessions (with
autogroup scheduling a nice value only counts inside a session), both engines alike, so
that other work on a shared machine does not decide the figures (``--nice 0`` to disable).

Printed per N and engine: packets/s relayed (received by the sink per second), loss,
latency p50/p99/max, relay CPU, generator lag and CPU. Traffic only on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from media_support import NgClient, crypto_line, free_udp_port, media_of, new_key, sdp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOSS_LIMIT = 0.1  # percent
GEN_LAG_LIMIT_US = 20_000  # a generator tick later than one ptime: it did not keep up
AIM_CALLS = 1000
FULL_STEPS = [50, 100, 200, 400, 800, 1000, 1200, 1600, 2000, 2400]
QUICK_STEPS = [100, 400, 800, 1000, 1200, 1600, 2000]
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIMEN_PORTS = (20000, 30999)
RTPENGINE_PORTS = (8000, 19999)


def cores() -> tuple[int, int]:
    """(relay core, generator core): different cores when there are two."""
    available = sorted(os.sched_getaffinity(0))
    return available[0], available[-1]


NICE = 0  # set from --nice: the priority of the relays and the generator


def pin(core: int) -> Callable[[], None]:
    def apply() -> None:
        os.sched_setaffinity(0, {core})
        if NICE:
            # With autogroup scheduling a nice value only counts inside the session's group:
            # give the process its own session (group) and set the group's nice.
            os.setsid()
            try:
                with open("/proc/self/autogroup", "w") as group:
                    group.write(str(NICE))
            except OSError:
                pass
            os.setpriority(os.PRIO_PROCESS, 0, NICE)

    return apply


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def build_generator() -> Path:
    source = HERE / "media_gen.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = Path(tempfile.gettempdir()) / f"limen-media-gen-{digest}"
    if binary.exists():
        return binary
    if not Path("/usr/include/srtp2/srtp.h").exists():
        sys.exit("bench/media.py builds its generator with libsrtp2: apt-get install libsrtp2-dev")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("bench/media.py needs a C compiler (cc) to build bench/media_gen.c")
    partial = binary.with_suffix(".tmp")
    subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(partial), str(source), "-lsrtp2"], check=True
    )
    partial.rename(binary)
    return binary


def socket_of(i: int, calls_n: int, sockets: int) -> int:
    """The generator's socket of call i (sock_of in media_gen.c)."""
    per_tick = (calls_n + 19) // 20
    return (i // 20) // ((per_tick + sockets - 1) // sockets)


class Call:
    __slots__ = ("call_id", "pbx_answer", "phone_key", "phone_offer")

    def __init__(self, call_id: str, phone_port: int, pbx_port: int) -> None:
        self.call_id = call_id
        self.phone_key = new_key()
        self.phone_offer = sdp(phone_port, crypto=[crypto_line(self.phone_key)])
        self.pbx_answer = sdp(pbx_port, user="pbx")


# (relay port the phone sends to, relay port the PBX sends to, relay's key toward the phone)
Setup = tuple[int, int, bytes]


def negotiated(toward_pbx: bytes, toward_phone: bytes) -> Setup:
    pbx, phone = media_of(toward_pbx), media_of(toward_phone)
    if pbx.proto != "RTP/AVP" or pbx.crypto or phone.proto != "RTP/SAVP" or not phone.crypto:
        raise RuntimeError(f"unexpected negotiation: {pbx} / {phone}")
    return phone.port, pbx.port, phone.crypto[0][2]


class Limen:
    name = "Limen"

    def __init__(self, core: int, workers: int = 0) -> None:
        if workers:
            self.name = f"Limen-w{workers}"  # the relay in worker processes
        self.worker_pids: list[int] = []
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "relay_process.py"),
                f"--port-min={LIMEN_PORTS[0]}",
                f"--port-max={LIMEN_PORTS[1]}",
                f"--workers={workers}",
                *(
                    ["--profile", os.environ["LIMEN_BENCH_PROFILE"]]
                    if os.environ.get("LIMEN_BENCH_PROFILE")
                    else []
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            preexec_fn=pin(core),
        )
        self.pid = self.process.pid
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("relay process exited")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"relay process: {reply['error']}")
        return reply

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        return self._read()

    def setup(self, calls: list[Call]) -> list[Setup]:
        reply = self._request(
            {
                "op": "setup",
                "calls": [[c.call_id, c.phone_offer.decode()] for c in calls],
                "pbx": [c.pbx_answer.decode() for c in calls],
            }
        )
        self.worker_pids = [int(pid) for pid in reply.get("pids", [])]
        return [negotiated(a.encode(), b.encode()) for a, b in reply["calls"]]

    def cpu(self) -> float:
        """CPU seconds of the relay: this process and its workers."""
        return sum(cpu_seconds(pid) for pid in (self.pid, *self.worker_pids))

    def clear(self, calls: list[Call]) -> dict[str, int]:
        dropped: dict[str, int] = self._request({"op": "clear"})["dropped"]
        return dropped

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"op": "quit"}\n')
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


class Rtpengine:
    name = "rtpengine"

    def __init__(self, core: int) -> None:
        path = shutil.which("rtpengine")
        if path is None:
            sys.exit("rtpengine not found (Debian: apt-get install rtpengine-daemon)")
        port = free_udp_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as rtpengine
            prefix="limen-bench-rtpengine-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [
                path,
                "--config-file=none",
                "--table=-1",
                "--interface=127.0.0.1",
                f"--listen-ng=127.0.0.1:{port}",
                f"--port-min={RTPENGINE_PORTS[0]}",
                f"--port-max={RTPENGINE_PORTS[1]}",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--num-threads=1",
                "--delete-delay=0",
                "--timeout=3600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=pin(core),
        )
        self.pid = self.process.pid
        self.ng = NgClient(port)
        self.ng.sock.settimeout(0.3)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.ng({"command": "ping"}).get("result") == b"pong":
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"rtpengine did not start, see {self.log.name}")
        self.ng.sock.settimeout(5)

    def setup(self, calls: list[Call]) -> list[Setup]:
        out = []
        for call in calls:
            offer = self.ng(
                {
                    "command": "offer",
                    "call-id": call.call_id,
                    "from-tag": "phone",
                    "sdp": call.phone_offer,
                    "transport-protocol": "RTP/AVP",
                    "ICE": "remove",
                }
            )
            answer = self.ng(
                {
                    "command": "answer",
                    "call-id": call.call_id,
                    "from-tag": "phone",
                    "to-tag": "pbx",
                    "sdp": call.pbx_answer,
                }
            )
            if offer.get("result") != b"ok" or answer.get("result") != b"ok":
                raise RuntimeError(f"rtpengine refused: {offer} / {answer}")
            out.append(negotiated(offer["sdp"], answer["sdp"]))
        return out

    def clear(self, calls: list[Call]) -> dict[str, int]:
        for call in calls:
            self.ng({"command": "delete", "call-id": call.call_id, "from-tag": "phone"})
        return {}

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        self.ng.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


Engine = Limen | Rtpengine


def run_step(
    engine: Engine, calls_n: int, generator: Path, core: int, seconds: float, step: int
) -> dict[str, Any]:
    sockets = min(calls_n // 20 + 1, 16)  # per side; more sockets = more receive buffer
    warmup_ms, measure_ms, drain_ms = 1000, int(seconds * 1000), 300
    gen = subprocess.Popen(
        [generator, str(calls_n), str(sockets), str(warmup_ms), str(measure_ms), str(drain_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=pin(core),
    )
    try:
        assert gen.stdin is not None and gen.stdout is not None
        phone_ports = [int(p) for p in gen.stdout.readline().split()[1:]]
        pbx_ports = [int(p) for p in gen.stdout.readline().split()[1:]]
        calls = [
            Call(f"bench-{step}-{i}", phone_ports[s], pbx_ports[s])
            for i, s in ((i, socket_of(i, calls_n, sockets)) for i in range(calls_n))
        ]
        setups = engine.setup(calls)
        try:
            gen.stdin.write(
                b"".join(
                    b"%d %d %s %s\n"
                    % (phone, pbx, call.phone_key.hex().encode(), key.hex().encode())
                    for call, (phone, pbx, key) in zip(calls, setups, strict=True)
                )
            )
            gen.stdin.close()
            if gen.stdout.readline().strip() != b"measure-start":
                raise RuntimeError("generator failed")
            cpu0, t0 = engine.cpu(), time.monotonic()
            if gen.stdout.readline().strip() != b"measure-end":
                raise RuntimeError("generator failed")
            cpu1, t1 = engine.cpu(), time.monotonic()
            result: dict[str, Any] = json.loads(gen.stdout.readline())
            gen.wait(10)
        finally:
            result_dropped = engine.clear(calls)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    sent, received = sum(result["sent"]), sum(result["received"])
    result.update(
        calls=calls_n,
        engine=engine.name,
        pps=received / (measure_ms / 1000),
        loss=100.0 * (sent - received) / sent if sent else 100.0,
        relay_cpu=100.0 * (cpu1 - cpu0) / (t1 - t0),
        gen_cpu=100.0 * result["cpu_s"] / result["wall_s"],
        relay_dropped=result_dropped,
        load=load_average(),
    )
    return result


HEADER = (
    f"{'calls':>6} {'engine':<10} {'pkt/s relayed':>13} {'loss %':>8} {'p50 µs':>7} "
    f"{'p99 µs':>7} {'max µs':>7} {'relay CPU':>9} {'gen lag p99':>11} {'gen CPU':>7}  load"
)


def row(r: dict[str, Any]) -> str:
    lat, lag = r["latency_us"], r["lag_us"]
    extra = ""
    if r["auth_fail"] or r["unknown"] or r["send_errors"]:
        extra = f"  auth_fail={r['auth_fail']} unknown={r['unknown']} send_err={r['send_errors']}"
    if lag["p99"] > GEN_LAG_LIMIT_US:
        extra += "  generator behind: not the relay's figures"
    return (
        f"{r['calls']:>6} {r['engine']:<10} {r['pps']:>13,.0f} {r['loss']:>8.3f} "
        f"{lat['p50']:>7} {lat['p99']:>7} {lat['max']:>7} {r['relay_cpu']:>8.0f}% "
        f"{lag['p99']:>9}µs {r['gen_cpu']:>6.0f}%  {r['load']}{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, 4 s each")
    parser.add_argument("--calls", type=int, nargs="+", help="the N to try (default: steps)")
    parser.add_argument("--seconds", type=float, help="measured seconds per step")
    parser.add_argument("--only", choices=["limen", "rtpengine"], help="run one engine")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also run Limen with its relay in N worker processes (WorkerPoolEngine, all "
        "on the relay core: the cost of the split, not a scaling figure)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="nice value of relays and generator (default -10 as root: other work on the "
        "machine should not decide the figures; same for both engines)",
    )
    args = parser.parse_args()
    global NICE
    NICE = args.nice
    steps = args.calls or (QUICK_STEPS if args.quick else FULL_STEPS)
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks
    relay_core, gen_core = cores()
    os.sched_setaffinity(0, {gen_core})
    generator = build_generator()
    print(
        f"media relay bench: {seconds:g} s per step, relay core {relay_core}, generator core "
        f"{gen_core}, nice {NICE}, load average {load_average()}",
        flush=True,
    )
    engines: list[Engine] = []
    results: list[dict[str, Any]] = []
    try:
        if args.only != "rtpengine":
            engines.append(Limen(relay_core))
            if args.workers:
                engines.append(Limen(relay_core, args.workers))
        if args.only != "limen":
            engines.append(Rtpengine(relay_core))
        print(HEADER, flush=True)
        live = list(engines)
        for step, calls_n in enumerate(steps):
            for engine in list(live):
                r = run_step(engine, calls_n, generator, gen_core, seconds, step)
                results.append(r)
                print(row(r), flush=True)
                if r["loss"] > LOSS_LIMIT:
                    live.remove(engine)
            if not live:
                break
    finally:
        for engine in engines:
            engine.stop()
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    summary(results)


def summary(results: list[dict[str, Any]]) -> None:
    for name in sorted({r["engine"] for r in results}):
        ok = [
            r
            for r in results
            if r["engine"] == name
            and r["loss"] <= LOSS_LIMIT
            and r["lag_us"]["p99"] <= GEN_LAG_LIMIT_US
        ]
        if not ok:
            continue
        best = max(ok, key=lambda r: r["calls"])
        print(
            f"{name}: most calls with loss <= {LOSS_LIMIT}%: {best['calls']} "
            f"({best['pps']:,.0f} pkt/s, p99 {best['latency_us']['p99']} µs, "
            f"relay CPU {best['relay_cpu']:.0f}%)"
        )
    aim = [
        r
        for r in results
        if r["engine"] == "Limen" and r["calls"] >= AIM_CALLS and r["loss"] < LOSS_LIMIT
    ]
    met = any(r["latency_us"]["p99"] < 2000 and r["lag_us"]["p99"] <= GEN_LAG_LIMIT_US for r in aim)
    print(
        f"aim (>= {AIM_CALLS} SRTP<->RTP calls on one core, loss < {LOSS_LIMIT}%, p99 < 2 ms): "
        f"{'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
