"""REGISTER with digest: Limen's set-side registrar against Kamailio's (auth_db + usrloc),
same run, on loopback; and the memory a provisioned and a registered device cost.

Run: ``flock /tmp/limen-heavy.lock .venv/bin/python bench/register.py [--quick]``.
Exits non-zero on a setup failure.

REGISTER: SIPp registers N users with digest (REGISTER, 401, REGISTER with Authorization,
200; a new Call-ID each time) at

- **limen**: Limen in its own process (``limen.app.run``, 10,000 devices, UDP), its
  ICP-side registrations going to Kamailio's registrar, throttled as by default (one
  upstream registration per device, refreshed by Limen itself: a phone's re-registration
  never reaches the PBX). The search re-registers the already-bound devices.
- **limen-noup**: the same without upstream registrations (``--no-upstream``), first
  registrations included: shows whether upstream work changes the figure.
- **kamailio**: Kamailio's registrar directly (auth_db on SQLite, usrloc in memory,
  2 UDP children), the anchor.

For each, the highest rate (registrations/s) at which at least 99.9 % succeed and SIPp
keeps its pace (rates 100, 200, 400 ... then a bisection), and p50/p99 of the time from
the first REGISTER to its 200 (SIPp -trace_rtt, 1 ms resolution) at 80 % of that rate.
Aim (issue 13): Limen >= 4,000/s.

Memory (``--only memory``): see bench/memory.py, which this file's helpers serve.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from signalling_support import (
    KAMAILIO_HOST,
    LOCAL,
    REGISTER_XML,
    Daemons,
    SippRun,
    cpu_seconds,
    free_udp_port,
    percentile,
    start_kamailio,
    start_limen,
)

SUCCESS = 0.999
DEVICES = 10_000
AIM = 4000.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Trial:
    rate: float
    count: int
    ok: bool
    successful: int
    elapsed: float
    rtts: list[float] = field(default_factory=list)
    cpu: float = 0.0  # CPU seconds the server spent on this trial


@dataclass
class Found:
    best: float
    trials: list[Trial]


def write_csv(path: Path, domain: str, users: list[tuple[str, str]]) -> Path:
    lines = ["SEQUENTIAL"]
    lines += [f"{u};{domain};[authentication username={u} password={p}]" for u, p in users]
    path.write_text("\n".join(lines) + "\n")
    return path


def reg_trial(
    work: Path,
    name: str,
    remote: str,
    csv: Path,
    rate: float,
    seconds: float,
    pid: int | None = None,
    count: int | None = None,
) -> Trial:
    calls = count if count is not None else max(10, int(rate * seconds))
    seconds = calls / rate
    budget = seconds * 1.5 + 30
    scenario = work / "register.xml"
    cpu0 = cpu_seconds(pid) if pid else 0.0
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
            "-l",
            str(max(100, int(rate * 2))),
            "-recv_timeout",
            "8000",
            "-timeout",
            f"{budget:.0f}s",
        ],
        scenario,
    )
    res = run.wait(budget + 5)
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    paced = res.elapsed <= seconds * 1.15 + 1.5  # SIPp kept its pace
    ok = res.successful >= math.ceil(SUCCESS * calls) and paced
    log(
        f"  {name:10s} REGISTER {rate:7.0f}/s n={calls} ok={res.successful} "
        f"failed={res.failed} t={res.elapsed:.1f}s cpu={cpu:.1f}s {'PASS' if ok else 'FAIL'}"
    )
    if not ok and run.errors():
        log("    " + run.errors().strip().splitlines()[-1][:200])
    time.sleep(1.0)
    return Trial(rate, calls, ok, res.successful, res.elapsed, res.rtts_ms, cpu)


def search(run: Callable[[float], Trial], start: float, quick: bool) -> Found:
    """Double the rate until a failure, then bisect to ~8 % (quick: ~25 %)."""
    trials: list[Trial] = []
    rate, best, fail = start, 0.0, 0.0
    while rate <= 12800:
        trial = run(rate)
        trials.append(trial)
        if not trial.ok:
            fail = rate
            break
        best = rate
        rate *= 2
    if fail == 0.0 or best == 0.0:
        return Found(best, trials)
    lo, hi = best, fail
    resolution = 0.25 if quick else 0.08
    while (hi - lo) / lo > resolution:
        mid = round((lo + hi) / 2 / 10) * 10
        if mid in (lo, hi):
            break
        trial = run(mid)
        trials.append(trial)
        if trial.ok:
            lo = best = mid
        else:
            hi = mid
    return Found(best, trials)


def measure(
    name: str, run: Callable[[float], Trial], quick: bool, results: dict[str, dict[str, float]]
) -> None:
    log(f"REGISTER at {name}:")
    found = search(run, 100.0, quick)
    p50 = p99 = float("nan")
    cpu_per = float("nan")
    if found.best > 0:
        at80 = run(round(found.best * 0.8))
        p50, p99 = percentile(at80.rtts, 50), percentile(at80.rtts, 99)
        if at80.cpu and at80.successful:
            cpu_per = at80.cpu / at80.successful * 1e6
    results[name] = {"rate": found.best, "p50": p50, "p99": p99, "cpu_us": cpu_per}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coarser search, 3 s trials")
    parser.add_argument("--seconds", type=float, default=0.0, help="trial length (default 6)")
    parser.add_argument("--only", default="", help="comma list: limen,limen-noup,kamailio")
    parser.add_argument("--profile", default="", help="cProfile Limen (limen target) to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    only = set(filter(None, args.only.split(",")))
    work = Path(tempfile.mkdtemp(prefix="limen-bench-reg-"))
    (work / "register.xml").write_text(REGISTER_XML)
    daemons = Daemons()

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    results: dict[str, dict[str, float]] = {}
    load_before = loadavg()
    started = time.time()
    users = [(f"p{n}", f"set-p{n}") for n in range(DEVICES)]
    limen_csv = write_csv(work / "limen_users.csv", LOCAL, users)
    kam_csv = write_csv(
        work / "kam_users.csv", KAMAILIO_HOST, [(f"icpp{n}", f"icp-pw-{n}") for n in range(DEVICES)]
    )
    try:
        subscribers = {f"icpp{n}": f"icp-pw-{n}" for n in range(DEVICES)}
        kam = start_kamailio(daemons, work / "kamailio", subscribers)
        log(f"kamailio on {KAMAILIO_HOST}:{kam.port} (pid {kam.process.pid}); work {work}")
        kam_remote = f"{KAMAILIO_HOST}:{kam.port}"

        if not only or "limen" in only:
            profile = Path(args.profile).resolve() if args.profile else None
            proc, port = start_limen(
                daemons,
                work / "limen",
                icp=(KAMAILIO_HOST, kam.port),
                devices=DEVICES,
                profile=profile,
            )
            remote = f"{LOCAL}:{port}"
            log(f"limen ({DEVICES} devices, upstream to kamailio) on {remote} (pid {proc.pid})")
            time.sleep(2)
            # Bind every device once (and let the upstream registrations settle): the
            # search then measures re-registrations, as phones refresh in the field.
            reg_trial(work, "limen-bind", remote, limen_csv, 500, 0, proc.pid, count=DEVICES)
            deadline = time.monotonic() + 60
            contacts = kam.contacts()
            while 0 <= contacts < DEVICES * SUCCESS and time.monotonic() < deadline:
                time.sleep(2)
                contacts = kam.contacts()
            if contacts < 0:  # kamcmd could not read the count: give the upstream time
                time.sleep(15)
            log(f"  ICP-side contacts at kamailio: {contacts} (-1: kamcmd failed)")
            measure(
                "limen",
                lambda r: reg_trial(work, "limen", remote, limen_csv, r, seconds, proc.pid),
                args.quick,
                results,
            )
            daemons.stop(proc, sig=signal.SIGINT)

        if not only or "limen-noup" in only:
            proc, port = start_limen(
                daemons,
                work / "limen-noup",
                icp=(KAMAILIO_HOST, kam.port),
                devices=DEVICES,
                upstream=False,
            )
            remote = f"{LOCAL}:{port}"
            log(f"limen ({DEVICES} devices, no upstream) on {remote} (pid {proc.pid})")
            time.sleep(2)
            measure(
                "limen-noup",
                lambda r: reg_trial(work, "limen-noup", remote, limen_csv, r, seconds, proc.pid),
                args.quick,
                results,
            )
            daemons.stop(proc, sig=signal.SIGINT)

        if not only or "kamailio" in only:
            measure(
                "kamailio",
                lambda r: reg_trial(
                    work, "kamailio", kam_remote, kam_csv, r, seconds, kam.process.pid
                ),
                args.quick,
                results,
            )
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        daemons.stop_all()
    report(results, load_before, loadavg(), time.time() - started, seconds)
    if args.keep:
        log(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    results: dict[str, dict[str, float]], before: str, after: str, took: float, seconds: float
) -> None:
    print(f"\nREGISTER with digest, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load average {before} -> {after}; {took:.0f} s; trials of {seconds:g} s; N={DEVICES}")
    print("\n| target | registrations/s (>= 99.9 %) | p50 | p99 (at 80 %) | server CPU/REGISTER |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rate']:.0f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms "
            f"| {r['cpu_us']:.0f} µs |"
        )
    kam = results.get("kamailio", {}).get("rate", 0.0)
    for name in ("limen", "limen-noup"):
        if name in results:
            rate = results[name]["rate"]
            ratio = f"{rate / kam:.2f}x Kamailio" if kam else "no anchor"
            verdict = "PASS" if rate >= AIM else "MISS"
            print(f"{name}: {rate:.0f}/s = {ratio}; aim >= {AIM:.0f}/s: {verdict}")


if __name__ == "__main__":
    sys.exit(main())
