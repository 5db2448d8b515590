"""Signalling throughput: Limen (B2BUA) against Sippy B2BUA 2.5.0 (b2bua_simple) and
Kamailio 5.6 (stateful proxy, record_route + t_relay, no auth), same run, on loopback.

Run: ``.venv/bin/python bench/signalling.py [--quick]``. Exits non-zero on a setup failure.

Calls: SIPp UAC -> X -> SIPp UAS, INVITE/180/200/ACK, 0.5 s talk, BYE/200, no media. X is
Limen (its own process, ``limen.app.run``: one device, ICP = the SIPp UAS directly, media
relay off, challenge_methods=[]; the UAC's port registers device p0 first, so its INVITEs
pass the gate on their registration binding), "limen-off" (the same with the protections
of issues 9 and 10 off: the bench's measure of their hot-path cost), Sippy's
b2bua_simple (``-n`` = the UAS) or Kamailio. For
each X: the highest rate (calls/s) at which at least 99.9% of the calls succeed at BOTH
SIPp ends and the UAC keeps its pace (rates 50, 100, 200, 400 ... with -m = rate x
``--seconds``, then a binary search between the last pass and the first failure), and
p50/p99 call setup time (INVITE sent -> 200 received, SIPp -trace_rtt) at 80% of that rate.

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
    UAC_XML,
    UAS_HOST,
    UAS_XML,
    Capture,
    Daemons,
    SippRun,
    free_udp_port,
    percentile,
    rss_kib,
    start_kamailio,
    start_limen,
    start_sippy,
)

SUCCESS = 0.999
DEVICES = 10_000


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


@dataclass
class CallTarget:
    """X under test; ``setup(uas_port)`` starts a fresh X for one trial (so no state or
    retransmission leaks from one trial into the next) -> (SIPp remote, R-URI host, stop)."""

    name: str
    setup: Callable[[int], tuple[str, str, Callable[[], None]]]
    scenario: str = "uac.xml"


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
        if target.name.startswith("limen"):
            # Issue 9: only a device's registration binding (or digest) reaches the ICP,
            # so the UAC's port registers p0 first; its INVITEs (challenge_methods=[])
            # then pass on the binding, as a registered phone's do.
            bind_uac(work, remote, uac_port)
        uas = SippRun(
            work,
            f"{tag}-uas",
            ["-i", UAS_HOST, "-p", str(uas_port), "-m", str(calls), "-timeout", f"{budget:.0f}s"],
            work / "uas.xml",
        )
        time.sleep(0.3)
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
            ],
            work / target.scenario,
        )
        a = uac.wait(budget + 5)
        b = uas.wait(5)
    finally:
        if pcap is not None:
            pcap.stop()
        stop()
    rtts = pcap.setup_times() if pcap is not None else a.rtts_ms
    paced = a.elapsed <= seconds * 1.15 + 6
    need = math.ceil(SUCCESS * calls)
    ok = a.successful >= need and b.successful >= need and paced
    note = "" if paced else f"pace lost ({a.elapsed:.1f} s for {seconds:g} s of calls)"
    trial = Trial(rate, calls, ok, a.successful, b.successful, a.elapsed, rtts, note)
    log(
        f"  {target.name:8s} {rate:7.0f}/s  calls={calls} uac_ok={a.successful} "
        f"uac_failed={a.failed} uas_ok={b.successful} t={a.elapsed:.1f}s "
        f"{'PASS' if ok else 'FAIL'} {note}"
    )
    if not ok and a.failed and uac.errors():
        log("    " + uac.errors().strip().splitlines()[-1][:200])
    time.sleep(0.5)
    return trial


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


def fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coarse search, 5 s per step")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of calls per step")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: calls,register")
    parser.add_argument(
        "--only", default="", help="comma list of call targets: limen,sippy,kamailio"
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
    daemons = Daemons()

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    results: dict[str, dict[str, object]] = {}
    load_before = loadavg()
    started = time.time()
    try:
        # --- Kamailio: proxy for calls, registrar for the REGISTER part -----------------------
        subscribers = {f"icpp{n}": f"icp-pw-{n}" for n in range(DEVICES)}
        kam = start_kamailio(daemons, work / "kamailio", subscribers)
        log(f"kamailio on {KAMAILIO_HOST}:{kam.port} (pid {kam.process.pid}); work {work}")

        if "calls" not in skip:
            profile = Path(args.profile).resolve() if args.profile else None

            def limen_setup(
                uas_port: int, protection: bool = True
            ) -> tuple[str, str, Callable[[], None]]:
                folder = work / f"limen-calls-{uas_port}"
                proc, port = start_limen(
                    daemons,
                    folder,
                    icp=(UAS_HOST, uas_port),
                    devices=1,
                    profile=profile,
                    protection=protection,
                    upstream=False,
                )
                return f"{LOCAL}:{port}", LOCAL, lambda: daemons.stop(proc, sig=signal.SIGINT)

            def limen_off_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                return limen_setup(uas_port, protection=False)

            def sippy_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                folder = work / f"sippy-{uas_port}"
                proc, port = start_sippy(daemons, folder, f"{UAS_HOST}:{uas_port}")
                return f"{LOCAL}:{port}", LOCAL, lambda: daemons.stop(proc)

            def kamailio_setup(uas_port: int) -> tuple[str, str, Callable[[], None]]:
                return f"{KAMAILIO_HOST}:{kam.port}", f"{UAS_HOST}:{uas_port}", lambda: None

            targets = [
                CallTarget("limen", limen_setup),
                CallTarget("limen-off", limen_off_setup),
                CallTarget("sippy", sippy_setup, "uac_b2b.xml"),
                CallTarget("kamailio", kamailio_setup),
            ]
            for target in targets:
                if only and target.name not in only:
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
                results[target.name] = {
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
    names = [n for n in ("limen", "limen-off", "sippy", "kamailio") if n in results]
    if names:
        print(
            "| X (UAC -> X -> UAS) | max calls/s (>= 99.9% both ends) | at 80% "
            "| p50 setup | p99 setup |"
        )
        print("|---|---|---|---|---|")
        for n in names:
            r = results[n]
            ok80 = "" if r["ok80"] else " (FAILED at 80%)"
            print(
                f"| {n} | {r['cps']:g} | {r['rate80']}/s{ok80} | {fmt_ms(float(r['p50']))} "  # type: ignore[arg-type]
                f"| {fmt_ms(float(r['p99']))} |"  # type: ignore[arg-type]
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
    if "limen" in results and "sippy" in results and results["sippy"]["cps"]:
        ratio = float(results["limen"]["cps"]) / float(results["sippy"]["cps"])  # type: ignore[arg-type]
        print(
            f"Limen / Sippy calls/s: {ratio:.2f}x "
            f"(aim >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'})"
        )
    if "limen" in results and "limen-off" in results and results["limen-off"]["cps"]:
        ratio = float(results["limen"]["cps"]) / float(results["limen-off"]["cps"])  # type: ignore[arg-type]
        print(
            f"Limen protection on / off calls/s (gate, bans, rate counting, scanner filter): "
            f"{ratio:.2f} (aim >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
        )
    if "limen" in results and "kamailio" in results and results["kamailio"]["cps"]:
        ratio = float(results["limen"]["cps"]) / float(results["kamailio"]["cps"])  # type: ignore[arg-type]
        print(f"Limen / Kamailio calls/s: {ratio:.2f}x")
    if "limen" in results:
        p99 = float(results["limen"]["p99"])  # type: ignore[arg-type]
        print(
            f"Limen p99 setup at 80%: {fmt_ms(p99)} "
            f"(aim < 20 ms: {'met' if p99 < 20 else 'NOT met'})"
        )
    if "register" in results and results["register"]["kamailio"]:
        r = results["register"]
        print(f"Limen / Kamailio REGISTER/s: {float(r['limen']) / float(r['kamailio']):.2f}x")  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
