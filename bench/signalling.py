"""Signalling throughput: Limen (B2BUA) against Sippy B2BUA 2.5.0 (b2bua_simple) and
Kamailio 5.6 (stateful proxy, record_route + t_relay, no auth), same run, on loopback.

Commands (issue 13; docs/benchmarks.md):
- ``.venv/bin/python bench/signalling.py --quick --skip register``: calls/s of the bare and
  realistic Limen and Sippy's b2bua_simple in one run, p50/p99 setup at 80 % of each
  maximum, X's CPU at its maximum, ratios to Sippy and the aims as PASS/MISS lines.
- ``.venv/bin/python bench/signalling.py --longrun 400 --config bare`` (or ``realistic``):
  RSS at start, after a 5,000-call warm-up, after 100,000 calls (``--calls``) and after
  the INVITE and REGISTER floods, then "RSS back within 10 %: PASS/MISS".
- ``--cost RATE``: Limen's CPU per call at a fixed rate, protections on and off.
Exits non-zero on a setup failure.

The two Limen configurations:
- **bare** (``limen-bare``): what b2bua_simple does: no challenge, media relay off, one
  device p0 registered from the UAC's port (the gate of issue 9 lets its INVITEs through
  on that binding), the SIPp source trusted, no per-device admission limits.
- **realistic** (``limen-real``): the figure 11 defaults (INVITE challenged with digest,
  SRTP Require toward the phone and Prefer toward the PBX, call admission 4 calls and
  20 attempts a minute per device), the in-process media relay on, every edge protection
  at its default with the SIPp source NOT trusted. The UAC plays 5,000 phones in turn
  (so admission never fires below 1,666 calls/s), each INVITE offers RTP/SAVP with an SDES
  a=crypto line and answers the 407; the UAS answers RTP/SAVP with its own key. No RTP
  flows (SIPp cannot do SRTP): each call still gets its relay ports and two SRTP
  contexts. Deviations, each because the bench would trip it: UDP on (figure 11: off),
  the per-source rate limit raised to 1,000,000 (one SIPp source carries every phone),
  no OPTIONS pings to the ICP (the SIPp UAS would count them as calls), the relay's
  ports at 42000-52998 (outside the tests' range on a shared machine).

Calls: SIPp UAC -> X -> SIPp UAS, INVITE/180/200/ACK, 0.5 s talk, BYE/200. X is Limen
(its own process, ``limen.app.run``, ICP = the SIPp UAS directly) in either configuration,
"limen-off" (bare with the protections of issues 9 and 10 off: their hot-path cost; only
with ``--only``), Sippy's b2bua_simple (``-n`` = the UAS) or Kamailio (``--only``). For
each X: the highest rate (calls/s) at which at least 99.9% of the calls succeed at BOTH
SIPp ends and the UAC keeps its pace (rates 50, 100, 200, 400 ... with -m = rate x
``--seconds``, then a binary search between the last pass and the first failure), and
p50/p99 call setup time (the UAC's first INVITE sent -> its 200 received, from a tcpdump
capture) at 80% of that rate.

REGISTER: phones register with digest (REGISTER, 401, REGISTER with Authorization, 200).
Through Limen (10,000 devices; Limen challenges with the set-side credentials; its one
ICP-side registration per device goes to Kamailio's registrar when the device first
registers) and, as anchor, directly at Kamailio's registrar (auth_db on SQLite). Rates
are searched like the calls; the Limen search re-registers the already-bound devices.

Memory: RSS of the Limen process with the 10,000 devices provisioned, before and after all
of them registered (and their ICP-side registrations settled), divided by 10,000.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from signalling_support import (
    KAMAILIO_HOST,
    LOCAL,
    REGISTER_XML,
    UAC_B2B_XML,
    UAC_REAL_XML,
    UAC_XML,
    UAS_HOST,
    UAS_SRTP_XML,
    UAS_XML,
    Capture,
    Daemons,
    SippRun,
    cpu_seconds,
    flood,
    free_udp_port,
    percentile,
    rss_kib,
    start_kamailio,
    start_limen,
    start_sippy,
)

SUCCESS = 0.999
DEVICES = 10_000
# The realistic configuration's phones: the UAC takes one in turn per call, so call
# admission's default of 20 attempts a minute per device allows 20 * 5000 / 60 = 1,666
# calls/s, above any rate reached here (the search would report admission, not CPU).
REAL_DEVICES = 5_000
WARMUP_CALLS = 5_000
PACE_SLACK = 2.0  # seconds; see call_trial
DEFAULT_TARGETS = ("limen-bare", "limen-real", "sippy")
# The process under test of the current trial (CPU time at each rate).
CURRENT_PID: dict[str, int] = {}


@dataclass
class Trial:
    rate: float
    calls: int
    ok: bool
    uac_ok: int
    uas_ok: int
    elapsed: float
    rtts: list[float]
    note: str = ""
    cpu: float = math.nan  # CPU seconds of X (user + system) while the UAC ran


@dataclass
class CallTarget:
    """X under test; ``setup(uas_port)`` starts a fresh X for one trial (so no state or
    retransmission leaks from one trial into the next) -> (SIPp remote, R-URI host, stop)."""

    name: str
    setup: Callable[[int], tuple[str, str, Callable[[], None]]]
    scenario: str = "uac.xml"
    uas_scenario: str = "uas.xml"
    # SIPp UAC arguments of this target (the realistic one: -inf with the devices' names
    # and digest credentials, one device per call in turn)
    uac_args: tuple[str, ...] = ()
    # the UAC's port registers p0 first (the bare Limen: its INVITEs are not challenged)
    bind: bool = False


@dataclass
class Found:
    best: float
    trials: list[Trial]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def call_trial(
    work: Path, target: CallTarget, rate: float, seconds: float, capture: bool = False
) -> Trial:
    calls = max(10, int(rate * seconds))
    tag = f"{target.name}-{rate:g}-{time.monotonic_ns()}"
    budget = seconds * 1.5 + 30
    uas_port = free_udp_port(UAS_HOST)
    remote, rdomain, stop = target.setup(uas_port)
    uac_port = free_udp_port()
    pcap = Capture(work, uac_port) if capture else None
    try:
        if target.bind:
            # Issue 9: only a device's registration binding (or digest) reaches the ICP,
            # so the UAC's port registers p0 first; its INVITEs (challenge_methods=[])
            # then pass on the binding, as a registered phone's do.
            bind_uac(work, remote, uac_port)
        uas = SippRun(
            work,
            f"{tag}-uas",
            ["-i", UAS_HOST, "-p", str(uas_port), "-m", str(calls), "-timeout", f"{budget:.0f}s"],
            work / target.uas_scenario,
        )
        time.sleep(0.3)
        pid = CURRENT_PID.get(target.name)
        cpu_before = cpu_seconds(pid) if pid else math.nan
        uac = SippRun(
            work,
            f"{tag}-uac",
            [
                remote,
                "-i",
                LOCAL,
                "-p",
                str(uac_port),
                "-m",
                str(calls),
                "-r",
                f"{rate:g}",
                "-s",
                "bench",
                "-key",
                "caller",
                "p0",
                "-key",
                "fdomain",
                LOCAL,
                "-key",
                "rdomain",
                rdomain,
                "-recv_timeout",
                "8000",
                "-timeout",
                f"{budget:.0f}s",
                # a stray 180 after the 200 (Sippy reorders them under load) is ignored,
                # not fatal; a missing answer still fails the call (recv_timeout)
                "-default_behaviors",
                "all,-abortunexp",
                *target.uac_args,
            ],
            work / target.scenario,
        )
        a = uac.wait(budget + 5)
        cpu = cpu_seconds(pid) - cpu_before if pid else math.nan
        b = uas.wait(5)
    finally:
        if pcap is not None:
            pcap.stop()
        stop()
    rtts = pcap.setup_times() if pcap is not None else a.rtts_ms
    # Kept pace: the last call started on time and ended (its 0.5 s talk, set-up) within
    # PACE_SLACK. A slack of 6 s (until 2026-12-06) let a saturated X pass by queueing:
    # Sippy "passed" 400/s taking 9.9 s for 5 s of calls at 96 % of its core.
    paced = a.elapsed <= seconds * 1.15 + PACE_SLACK
    need = math.ceil(SUCCESS * calls)
    ok = a.successful >= need and b.successful >= need and paced
    note = "" if paced else f"pace lost ({a.elapsed:.1f} s for {seconds:g} s of calls)"
    trial = Trial(rate, calls, ok, a.successful, b.successful, a.elapsed, rtts, note, cpu)
    log(
        f"  {target.name:10s} {rate:7.0f}/s  calls={calls} uac_ok={a.successful} "
        f"uac_failed={a.failed} uas_ok={b.successful} t={a.elapsed:.1f}s "
        f"cpu={cpu / a.elapsed * 100:.0f}% {cpu / max(1, a.successful) * 1e6:.0f}µs/call "
        f"load={loadavg()} {'PASS' if ok else 'FAIL'} {note}"
    )
    if not ok and a.failed and uac.errors():
        log("    " + uac.errors().strip().splitlines()[-1][:200])
    time.sleep(0.5)
    return trial


def protection_cost(work: Path, daemons: Daemons, rate: float, seconds: float) -> None:
    """Limen's own CPU time per call (user + system, /proc) at a fixed rate, with the
    protections of issues 9 and 10 on and off, in alternating rounds: a measure of their
    hot-path cost that the machine's other load disturbs far less than a rate search."""
    results: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(3):
        for protection in (True, False):
            uas_port = free_udp_port(UAS_HOST)
            folder = work / f"limen-cost-{round_}-{protection}"
            proc, port = start_limen(
                daemons,
                folder,
                icp=(UAS_HOST, uas_port),
                devices=1,
                protection=protection,
                upstream=False,
            )
            remote = f"{LOCAL}:{port}"
            calls = int(rate * seconds)
            try:
                bind_uac_port = free_udp_port()
                bind_uac(work, remote, bind_uac_port)
                uas = SippRun(
                    work,
                    f"cost-uas-{uas_port}",
                    [
                        "-i",
                        UAS_HOST,
                        "-p",
                        str(uas_port),
                        "-m",
                        str(calls),
                        "-timeout",
                        f"{seconds * 2 + 30:.0f}s",
                    ],
                    work / "uas.xml",
                )
                time.sleep(0.3)
                before = cpu_seconds(proc.pid)
                uac = SippRun(
                    work,
                    f"cost-uac-{uas_port}",
                    [
                        remote,
                        "-i",
                        LOCAL,
                        "-p",
                        str(bind_uac_port),
                        "-m",
                        str(calls),
                        "-r",
                        f"{rate:g}",
                        "-s",
                        "bench",
                        "-key",
                        "caller",
                        "p0",
                        "-key",
                        "fdomain",
                        LOCAL,
                        "-key",
                        "rdomain",
                        LOCAL,
                        "-recv_timeout",
                        "8000",
                        "-timeout",
                        f"{seconds * 2 + 30:.0f}s",
                        "-default_behaviors",
                        "all,-abortunexp",
                    ],
                    work / "uac.xml",
                )
                a = uac.wait(seconds * 2 + 35)
                uas.wait(5)
                spent = cpu_seconds(proc.pid) - before
            finally:
                daemons.stop(proc, sig=signal.SIGINT)
            per_call = spent / max(1, a.successful) * 1e6
            results[protection].append(per_call)
            log(
                f"  round {round_ + 1} protection {'on ' if protection else 'off'}: "
                f"{a.successful}/{calls} calls, Limen CPU {spent:.2f} s = {per_call:.0f} µs/call"
            )
    on, off = sorted(results[True])[1], sorted(results[False])[1]
    print(
        f"\nProtection cost at {rate:g} calls/s ({seconds:g} s per round, medians of 3; "
        f"load before {loadavg()}):"
    )
    print(
        f"| Limen | CPU per call |\n|---|---|\n| protections on | {on:.0f} µs |\n"
        f"| protections off | {off:.0f} µs |"
    )
    verdict = "met" if off / on >= 0.95 else "NOT met"
    print(f"capacity on / off = {off / on:.3f} (aim >= 0.95: {verdict})")


def long_run(
    work: Path, daemons: Daemons, real_csv: Path, rate: float, calls: int, realistic: bool
) -> int:
    """Limen's RSS (realistic or bare configuration) at start, during and after ``calls``
    calls at ``rate``/s, then after two floods (INVITE, REGISTER: 5,000/s for 10 s each
    from 50 untrusted sources; the realistic configuration's raised rate limit lets them
    all through, so every one is parsed and answered; the bare one bans each source after
    its first 60 messages). Each "after" is read 40 s later, once transactions and
    lingering dialogs have ended (Timer K/J: 32 s at most, RFC 3261 §17)."""
    uas_port = free_udp_port(UAS_HOST)
    proc, port = start_limen(
        daemons,
        work / "limen-long",
        icp=(UAS_HOST, uas_port),
        devices=REAL_DEVICES if realistic else 1,
        upstream=False,
        realistic=realistic,
    )
    uac_port = free_udp_port()
    if not realistic:
        bind_uac(work, f"{LOCAL}:{port}", uac_port)
    load_before = loadavg()
    time.sleep(2)
    rss_start = rss_kib(proc.pid)
    peak = rss_start

    def run_calls(count: int, label: str) -> tuple[int, float]:
        nonlocal peak
        budget = count / rate * 1.5 + 60
        uas = SippRun(
            work,
            f"{label}-uas",
            ["-i", UAS_HOST, "-p", str(uas_port), "-m", str(count), "-timeout", f"{budget:.0f}s"],
            work / ("uas_srtp.xml" if realistic else "uas.xml"),
        )
        time.sleep(0.3)
        cpu_before = cpu_seconds(proc.pid)
        uac = SippRun(
            work,
            f"{label}-uac",
            [
                f"{LOCAL}:{port}",
                "-i",
                LOCAL,
                "-p",
                str(uac_port),
                "-m",
                str(count),
                "-r",
                f"{rate:g}",
                "-s",
                "bench",
                "-key",
                "rdomain",
                LOCAL,
                "-key",
                "caller",
                "p0",
                "-key",
                "fdomain",
                LOCAL,
                *(("-inf", str(real_csv)) if realistic else ()),
                "-recv_timeout",
                "8000",
                "-timeout",
                f"{budget:.0f}s",
                "-default_behaviors",
                "all,-abortunexp",
            ],
            work / ("uac_real.xml" if realistic else "uac.xml"),
        )
        while uac.process.poll() is None:
            time.sleep(5)
            peak = max(peak, rss_kib(proc.pid))
            log(f"  {label}: RSS {rss_kib(proc.pid) / 1024:.1f} MB, load {loadavg()}")
        a = uac.wait(10)
        uas.wait(10)
        cpu = cpu_seconds(proc.pid) - cpu_before
        time.sleep(40)
        return a.successful, cpu

    # Warm-up: fills what is bounded by design (the SIP history's 32 MiB, about 3,500
    # calls; interned strings, caches), so that growth after it is what could be a leak.
    warm_ok, _ = run_calls(WARMUP_CALLS, "warm-up")
    rss_warm = rss_kib(proc.pid)
    done, cpu = run_calls(calls, "long")
    rss_calls = rss_kib(proc.pid)
    sent = {}
    for kind in ("INVITE", "REGISTER"):
        sent[kind] = flood(kind, 5000, 10, LOCAL, port)
        peak = max(peak, rss_kib(proc.pid))
    time.sleep(40)
    rss_end = rss_kib(proc.pid)
    daemons.stop(proc, sig=signal.SIGINT)
    print(
        f"\nLong run ({'realistic' if realistic else 'bare'} Limen; load before {load_before}, "
        f"after {loadavg()}; {os.cpu_count()} CPUs)\n"
    )
    print("| moment | Limen RSS |\n|---|---|")
    print(f"| start (ready, 2 s idle) | {rss_start / 1024:.1f} MB |")
    print(f"| after a warm-up of {warm_ok:,} calls (+40 s) | {rss_warm / 1024:.1f} MB |")
    print(
        f"| after {done:,} of {calls:,} calls at {rate:g}/s (+40 s; "
        f"{cpu / max(1, done) * 1e6:.0f} µs CPU per call) | {rss_calls / 1024:.1f} MB |"
    )
    print(
        f"| after floods of {sent['INVITE']:,} INVITEs and {sent['REGISTER']:,} REGISTERs "
        f"from 50 sources (+40 s) | {rss_end / 1024:.1f} MB |"
    )
    print(f"| peak (sampled every 5 s) | {peak / 1024:.1f} MB |")
    print(f"\nRSS back within 10 % of the warmed-up level: {pass_miss(rss_end <= rss_warm * 1.10)}")
    print(
        f"RSS back within 10 % of the start (before any call): "
        f"{pass_miss(rss_end <= rss_start * 1.10)}"
    )
    return 0 if done >= SUCCESS * calls else 1


def bind_uac(work: Path, remote: str, uac_port: int) -> None:
    csv = write_csv(work / "bind_p0.csv", LOCAL, [("p0", "set-p0")])
    run = SippRun(
        work,
        f"bind-{uac_port}-{time.monotonic_ns()}",
        [
            remote,
            "-i",
            LOCAL,
            "-p",
            str(uac_port),
            "-inf",
            str(csv),
            "-m",
            "1",
            "-recv_timeout",
            "5000",
            "-timeout",
            "20s",
        ],
        work / "register.xml",
    )
    result = run.wait(25)
    if result.successful != 1:
        raise SystemExit(f"setup failure: p0 did not register from port {uac_port}")


def search(run: Callable[[float], Trial], start: float, quick: bool) -> Found:
    """Step the rate up x2 until a failure, then bisect to ~10% (quick: ~25%)."""
    trials: list[Trial] = []
    rate, best, fail = start, 0.0, 0.0
    while rate <= 6400:
        trial = run(rate)
        trials.append(trial)
        if not trials[0].uac_ok:
            raise SystemExit(f"setup failure: no call/registration succeeded at {rate:g}/s")
        if not trial.ok:
            fail = rate
            break
        best = rate
        rate *= 2
    if fail == 0.0:
        return Found(best, trials)
    resolution = 0.25 if quick else 0.08
    lo, hi = best, fail
    if lo == 0.0:
        lo = max(5.0, start / 8)
        hi = start
        # below the start rate: try a few smaller ones
        while hi - lo > max(2.0, resolution * lo):
            mid = round((lo + hi) / 2)
            trial = run(mid)
            trials.append(trial)
            if trial.ok:
                lo = best = mid
            else:
                hi = mid
        return Found(best, trials)
    while (hi - lo) / lo > resolution:
        mid = round((lo + hi) / 2 / 5) * 5 or (lo + hi) / 2
        if mid in (lo, hi):
            break
        trial = run(mid)
        trials.append(trial)
        if trial.ok:
            lo = best = mid
        else:
            hi = mid
    return Found(best, trials)


def reg_trial(work: Path, name: str, remote: str, csv: Path, rate: float, seconds: float) -> Trial:
    calls = max(10, int(rate * seconds))
    budget = seconds * 1.5 + 30
    run = SippRun(
        work,
        f"{name}-reg-{rate:g}-{time.monotonic_ns()}",
        [
            remote,
            "-i",
            LOCAL,
            "-p",
            str(free_udp_port()),
            "-inf",
            str(csv),
            "-m",
            str(calls),
            "-r",
            f"{rate:g}",
            "-recv_timeout",
            "8000",
            "-timeout",
            f"{budget:.0f}s",
        ],
        work / "register.xml",
    )
    res = run.wait(budget + 5)
    paced = res.elapsed <= seconds * 1.15 + 5
    ok = res.successful >= math.ceil(SUCCESS * calls) and paced
    log(
        f"  {name:8s} REGISTER {rate:7.0f}/s n={calls} ok={res.successful} "
        f"failed={res.failed} t={res.elapsed:.1f}s {'PASS' if ok else 'FAIL'}"
    )
    if not ok and run.errors():
        log("    " + run.errors().strip().splitlines()[-1][:200])
    time.sleep(1.0)
    return Trial(rate, calls, ok, res.successful, 0, res.elapsed, res.rtts_ms)


def write_csv(path: Path, domain: str, users: list[tuple[str, str]]) -> Path:
    lines = ["SEQUENTIAL"]
    lines += [f"{u};{domain};[authentication username={u} password={p}]" for u, p in users]
    path.write_text("\n".join(lines) + "\n")
    return path


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pass_miss(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coarse search, 5 s per step")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of calls per step")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: calls,register")
    parser.add_argument(
        "--only",
        default="",
        help="comma list of call targets (default limen-bare,limen-real,sippy; also "
        "limen-off, kamailio)",
    )
    parser.add_argument(
        "--longrun",
        type=float,
        default=0.0,
        metavar="RATE",
        help="only the long run: realistic Limen's RSS at start, after --calls calls at "
        "RATE calls/s and after a flood",
    )
    parser.add_argument("--calls", type=int, default=100_000, help="calls of the long run")
    parser.add_argument(
        "--config",
        choices=("realistic", "bare"),
        default="realistic",
        help="the long run's Limen configuration",
    )
    parser.add_argument(
        "--cost",
        type=float,
        default=0.0,
        metavar="RATE",
        help="only the protections' cost: Limen's CPU per call at RATE calls/s, protections "
        "on and off, alternating (3 rounds each)",
    )
    parser.add_argument("--profile", default="", help="cProfile the Limen call server to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    work = Path(tempfile.mkdtemp(prefix="limen-bench-sig-"))
    (work / "uac.xml").write_text(UAC_XML)
    (work / "uac_b2b.xml").write_text(UAC_B2B_XML)
    (work / "uas.xml").write_text(UAS_XML)
    (work / "register.xml").write_text(REGISTER_XML)
    (work / "uac_real.xml").write_text(UAC_REAL_XML)
    (work / "uas_srtp.xml").write_text(UAS_SRTP_XML)
    real_csv = write_csv(
        work / "real_users.csv", LOCAL, [(f"p{n}", f"set-p{n}") for n in range(REAL_DEVICES)]
    )
    daemons = Daemons()

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    results: dict[str, dict[str, object]] = {}
    load_before = loadavg()
    started = time.time()
    try:
        if args.longrun:
            return long_run(
                work, daemons, real_csv, args.longrun, args.calls, args.config == "realistic"
            )
        # --- Kamailio: proxy for calls, registrar for the REGISTER part -----------------------
        subscribers = {f"icpp{n}": f"icp-pw-{n}" for n in range(DEVICES)}
        kam = start_kamailio(daemons, work / "kamailio", subscribers)
        log(f"kamailio on {KAMAILIO_HOST}:{kam.port} (pid {kam.process.pid}); work {work}")

        if args.cost:
            protection_cost(work, daemons, args.cost, seconds)
            return 0
        if "calls" not in skip:
            profile = Path(args.profile).resolve() if args.profile else None

            def limen_setup(
                uas_port: int, protection: bool = True, realistic: bool = False
            ) -> tuple[str, str, Callable[[], None]]:
                folder = work / f"limen-calls-{uas_port}"
                proc, port = start_limen(
                    daemons,
                    folder,
                    icp=(UAS_HOST, uas_port),
                    devices=REAL_DEVICES if realistic else 1,
                    profile=profile,
                    protection=protection,
                    upstream=False,
                    realistic=realistic,
                )
                name = "limen-real" if realistic else "limen-bare" if protection else "limen-off"
                CURRENT_PID[name] = proc.pid
                return f"{LOCAL}:{port}", LOCAL, lambda: daemons.stop(proc, sig=signal.SIGINT)

            def limen_off_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                return limen_setup(uas_port, protection=False)

            def limen_real_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                return limen_setup(uas_port, realistic=True)

            def sippy_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                folder = work / f"sippy-{uas_port}"
                proc, port = start_sippy(daemons, folder, f"{UAS_HOST}:{uas_port}")
                CURRENT_PID["sippy"] = proc.pid
                return f"{LOCAL}:{port}", LOCAL, lambda: daemons.stop(proc)

            def kamailio_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                return f"{KAMAILIO_HOST}:{kam.port}", f"{UAS_HOST}:{uas_port}", lambda: None

            targets = [
                CallTarget("limen-bare", limen_setup, bind=True),
                CallTarget(
                    "limen-real",
                    limen_real_setup,
                    "uac_real.xml",
                    "uas_srtp.xml",
                    ("-inf", str(real_csv)),
                ),
                CallTarget("limen-off", limen_off_setup, bind=True),
                CallTarget("sippy", sippy_setup, "uac_b2b.xml"),
                CallTarget("kamailio", kamailio_setup),
            ]
            wanted = {"limen-bare" if n == "limen" else n for n in only} or set(DEFAULT_TARGETS)
            for target in targets:
                if target.name not in wanted:
                    continue
                log(f"calls through {target.name}:")

                def run(rate: float, target: CallTarget = target) -> Trial:
                    return call_trial(work, target, rate, seconds)

                found = search(run, 50.0, args.quick)
                p50 = p99 = float("nan")
                at80 = None
                if found.best > 0:
                    at80 = call_trial(work, target, round(found.best * 0.8), seconds, True)
                    p50, p99 = percentile(at80.rtts, 50), percentile(at80.rtts, 99)
                at_max = [t for t in found.trials if t.ok and t.rate == found.best]
                results[target.name] = {
                    "cpu_pct": at_max[-1].cpu / at_max[-1].elapsed * 100 if at_max else math.nan,
                    "cpu_call": at_max[-1].cpu / max(1, at_max[-1].uac_ok) * 1e6
                    if at_max
                    else math.nan,
                    "cps": found.best,
                    "p50": p50,
                    "p99": p99,
                    "rate80": round(found.best * 0.8),
                    "ok80": at80.ok if at80 else False,
                    "trials": len(found.trials),
                }

        if "register" not in skip:
            users = [(f"p{n}", f"set-p{n}") for n in range(DEVICES)]
            limen_csv = write_csv(work / "limen_users.csv", LOCAL, users)
            kam_users = [(f"icpp{n}", f"icp-pw-{n}") for n in range(DEVICES)]
            kam_csv = write_csv(work / "kam_users.csv", KAMAILIO_HOST, kam_users)
            reg, reg_port = start_limen(
                daemons, work / "limen-reg", icp=(KAMAILIO_HOST, kam.port), devices=DEVICES
            )
            log(f"limen (register, {DEVICES} devices) on {LOCAL}:{reg_port} (pid {reg.pid})")
            time.sleep(3)
            rss_before = rss_kib(reg.pid)
            first = reg_trial(work, "limen", f"{LOCAL}:{reg_port}", limen_csv, 250, DEVICES / 250)
            deadline = time.monotonic() + 120
            upstream = kam.contacts()
            while upstream < first.uac_ok and time.monotonic() < deadline:
                time.sleep(2)
                upstream = kam.contacts()
            time.sleep(3)
            rss_after = rss_kib(reg.pid)
            per_device = (rss_after - rss_before) * 1024 / max(1, first.uac_ok)
            log(
                f"  RSS {rss_before} KiB -> {rss_after} KiB, {first.uac_ok} registered, "
                f"{upstream} ICP-side contacts at Kamailio"
            )
            results["memory"] = {
                "before": rss_before,
                "after": rss_after,
                "registered": first.uac_ok,
                "upstream": upstream,
                "per_device": per_device,
            }
            log("REGISTER through limen (re-registrations of bound devices):")
            lfound = search(
                lambda r: reg_trial(work, "limen", f"{LOCAL}:{reg_port}", limen_csv, r, seconds),
                100.0,
                args.quick,
            )
            daemons.stop(reg)
            log("REGISTER directly at kamailio:")
            kfound = search(
                lambda r: reg_trial(
                    work, "kamailio", f"{KAMAILIO_HOST}:{kam.port}", kam_csv, r, seconds
                ),
                100.0,
                args.quick,
            )
            results["register"] = {"limen": lfound.best, "kamailio": kfound.best}
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        daemons.stop_all()
    report(results, seconds, args.quick, load_before, loadavg(), time.time() - started)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"work folder kept: {work}")
    return 0


def report(
    results: dict[str, dict[str, object]],
    seconds: float,
    quick: bool,
    load_before: str,
    load_after: str,
    took: float,
) -> None:
    print(
        f"\nSignalling bench ({'quick' if quick else 'full'}, {seconds:g} s per step, "
        f"took {took / 60:.1f} min; load average before {load_before}, after {load_after}; "
        f"{os.cpu_count()} CPUs)\n"
    )
    names = [
        n for n in ("limen-bare", "limen-real", "limen-off", "sippy", "kamailio") if n in results
    ]
    sippy = float(results["sippy"]["cps"]) if "sippy" in results else 0.0  # type: ignore[arg-type]
    if names:
        print(
            "| X (UAC -> X -> UAS) | max calls/s (>= 99.9% both ends) | / Sippy bare "
            "| X's CPU at max (one core = 100 %) | CPU per call | at 80% | p50 setup "
            "| p99 setup |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for n in names:
            r = results[n]
            cps = float(r["cps"])  # type: ignore[arg-type]
            vs_sippy = f"{cps / sippy:.2f}x" if sippy else "n/a"
            ok80 = "" if r["ok80"] else " (FAILED at 80%)"
            print(
                f"| {n} | {cps:g} | {vs_sippy} | {float(r['cpu_pct']):.0f} % "  # type: ignore[arg-type]
                f"| {float(r['cpu_call']):.0f} µs | {r['rate80']}/s{ok80} "  # type: ignore[arg-type]
                f"| {fmt_ms(float(r['p50']))} | {fmt_ms(float(r['p99']))} |"  # type: ignore[arg-type]
            )
        print()
        aims = [
            ("limen-bare", "bare Limen / Sippy bare calls/s", 2.0),
            ("limen-real", "realistic Limen / Sippy bare calls/s", 1.0),
        ]
        for name, text, aim in aims:
            if name in results and sippy:
                ratio = float(results[name]["cps"]) / sippy  # type: ignore[arg-type]
                print(f"{text}: {ratio:.2f}x (aim >= {aim:g}x): {pass_miss(ratio >= aim)}")
        for name in ("limen-bare", "limen-real"):
            if name in results:
                p99 = float(results[name]["p99"])  # type: ignore[arg-type]
                print(
                    f"{name} p99 setup at 80 % of its max ({results[name]['rate80']}/s): "
                    f"{fmt_ms(p99)} (aim < 20 ms): {pass_miss(p99 < 20)}"
                )
    if "register" in results:
        r = results["register"]
        print("\n| REGISTER with digest (401 + 200) | registrations/s (>= 99.9%) |")
        print("|---|---|")
        print(f"| through Limen (set-side digest) | {r['limen']:g} |")
        print(f"| Kamailio registrar (auth_db, SQLite) | {r['kamailio']:g} |")
    if "memory" in results:
        m = results["memory"]
        print(
            f"\nMemory: Limen RSS {m['before']} KiB -> {m['after']} KiB with {m['registered']} "
            f"devices registered ({m['upstream']} ICP-side contacts at Kamailio): "
            f"{float(m['per_device']) / 1024:.2f} KiB per registered device"  # type: ignore[arg-type]
        )
    print()
    if "limen-bare" in results and "limen-off" in results and results["limen-off"]["cps"]:
        ratio = float(results["limen-bare"]["cps"]) / float(results["limen-off"]["cps"])  # type: ignore[arg-type]
        print(f"Limen protection on / off calls/s: {ratio:.2f} (aim >= 0.95)")
    if "limen-bare" in results and "kamailio" in results and results["kamailio"]["cps"]:
        ratio = float(results["limen-bare"]["cps"]) / float(results["kamailio"]["cps"])  # type: ignore[arg-type]
        print(f"bare Limen / Kamailio calls/s: {ratio:.2f}x")
    if "register" in results and results["register"]["kamailio"]:
        r = results["register"]
        print(f"Limen / Kamailio REGISTER/s: {float(r['limen']) / float(r['kamailio']):.2f}x")  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
