"""Memory per device: what one provisioned and one registered device cost a running Limen.

Run: ``flock /tmp/limen-heavy.lock .venv/bin/python bench/memory.py [--trace]``.

Measured on real processes, on loopback, with Kamailio's registrar as the ICP (it takes
Limen's ICP-side registrations, so the registered state includes them):

1. Limen (``limen.app.run`` in its own process, bench/signalling_support.py's setup) with
   1 device: RSS from /proc once started and settled.
2. Limen with N devices (default 10,000): RSS once settled. Per provisioned device =
   (RSS_N - RSS_1) / (N - 1).
3. SIPp registers all N devices with digest (500/s); once Kamailio holds N ICP-side
   contacts, and once the SIP transactions of those REGISTERs have ended (UDP Timer J,
   64*T1 = 32 s, plus margin), RSS again. Per registered device = (RSS_reg - RSS_N) / N.
   The figure 3 s after the last registration (transactions still alive) is printed too.

Aims (issue 13): <= 5 KiB per provisioned device, <= 10 KiB per registered device.

``--trace``: a second Limen with tracemalloc on, snapshots on SIGUSR1 after provisioning
and after registration; prints the source lines that allocate the most per device.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from register import REGISTER_XML, loadavg, log, reg_trial, write_csv
from signalling_support import (
    KAMAILIO_HOST,
    LOCAL,
    PYTHON,
    ROOT,
    Daemons,
    free_udp_port,
    rss_kib,
    start_kamailio,
    start_limen,
)

AIM_PROVISIONED = 5.0  # KiB
AIM_REGISTERED = 10.0  # KiB
TRANSACTIONS_END = 40.0  # s: Timer J (32 s with T1 = 0.5 s) and margin


def settle_rss(pid: int, seconds: float = 3.0) -> int:
    time.sleep(seconds)
    return rss_kib(pid)


def start_traced(
    daemons: Daemons, folder: Path, icp: tuple[str, int], devices: int
) -> tuple[subprocess.Popen[bytes], int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    log_path = folder / "limen.log"
    cmd = [str(PYTHON), str(Path(__file__).resolve()), "traced-limen", "--folder", str(folder)]
    cmd += ["--port", str(port), "--icp", f"{icp[0]}:{icp[1]}", "--devices", str(devices)]
    process = daemons.start("limen-traced", cmd, log_path)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"setup failure: limen exited:\n{log_path.read_text()[-3000:]}")
        if "BENCH-READY" in log_path.read_text(errors="replace"):
            return process, port
        time.sleep(0.5)
    raise SystemExit("setup failure: traced limen did not start")


def snapshot(process: subprocess.Popen[bytes], path: Path) -> tracemalloc.Snapshot:
    os.kill(process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.5)
    time.sleep(1.0)
    return tracemalloc.Snapshot.load(str(path))


def top_lines(
    after: tracemalloc.Snapshot, before: tracemalloc.Snapshot | None, per: int, limit: int = 12
) -> list[str]:
    stats = after.compare_to(before, "lineno") if before else after.statistics("lineno")
    out = []
    # Lines allocating for (about) every device: imports and one-off tables are not.
    stats = [s for s in stats if getattr(s, "count_diff", s.count) >= per // 2]
    for stat in stats[:limit]:
        frame = stat.traceback[0]
        name = frame.filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
        size = getattr(stat, "size_diff", stat.size)
        count = getattr(stat, "count_diff", stat.count)
        out.append(
            f"  {size / per:8.0f} B/device {count / per:5.1f} blocks/device  {name}:{frame.lineno}"
        )
    return out


def register_all(
    work: Path, remote: str, csv: Path, pid: int, devices: int, rate: float = 500
) -> int:
    trial = reg_trial(work, "bind", remote, csv, rate, 0, pid, count=devices)
    return trial.successful


def wait_contacts(kam: object, devices: int) -> int:
    deadline = time.monotonic() + 120
    count = kam.contacts()  # type: ignore[attr-defined]
    while 0 <= count < devices * 0.999 and time.monotonic() < deadline:
        time.sleep(2)
        count = kam.contacts()  # type: ignore[attr-defined]
    if count < 0:  # kamcmd could not read the count: give the upstream time
        time.sleep(15)
    return int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc top lines too")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--settle", type=float, default=TRANSACTIONS_END, help="wait for transactions to end"
    )
    args = parser.parse_args()
    n = args.devices
    work = Path(tempfile.mkdtemp(prefix="limen-bench-mem-"))
    (work / "register.xml").write_text(REGISTER_XML)
    csv = write_csv(work / "users.csv", LOCAL, [(f"p{i}", f"set-p{i}") for i in range(n)])
    daemons = Daemons()
    load_before = loadavg()
    lines: list[str] = []
    try:
        kam = start_kamailio(
            daemons, work / "kamailio", {f"icpp{i}": f"icp-pw-{i}" for i in range(n)}
        )
        icp = (KAMAILIO_HOST, kam.port)
        proc, _ = start_limen(daemons, work / "limen-1", icp=icp, devices=1)
        rss_one = settle_rss(proc.pid)
        daemons.stop(proc, sig=signal.SIGINT)
        proc, port = start_limen(daemons, work / "limen-n", icp=icp, devices=n)
        rss_n = settle_rss(proc.pid)
        log(f"RSS with 1 device {rss_one} KiB, with {n} devices {rss_n} KiB")
        registered = register_all(work, f"{LOCAL}:{port}", csv, proc.pid, n)
        contacts = wait_contacts(kam, n)
        rss_busy = settle_rss(proc.pid)
        rss_reg = settle_rss(proc.pid, args.settle)
        log(f"{registered} registered, {contacts} ICP-side contacts; RSS {rss_busy} -> {rss_reg}")
        daemons.stop(proc, sig=signal.SIGINT)
        per_prov = (rss_n - rss_one) / (n - 1)
        per_reg = (rss_reg - rss_n) / max(1, registered)
        per_busy = (rss_busy - rss_n) / max(1, registered)
        lines += [
            f"\nMemory per device, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"N={n}, load {load_before} -> {loadavg()}",
            f"RSS: 1 device {rss_one} KiB; {n} provisioned {rss_n} KiB; {registered} registered "
            f"({contacts} ICP-side contacts at Kamailio) {rss_reg} KiB "
            f"({rss_busy} KiB 3 s after the last REGISTER)",
            f"per provisioned device: {per_prov:.2f} KiB (aim <= {AIM_PROVISIONED:g}): "
            f"{'PASS' if per_prov <= AIM_PROVISIONED else 'MISS'}",
            f"per registered device:  {per_reg:.2f} KiB (aim <= {AIM_REGISTERED:g}): "
            f"{'PASS' if per_reg <= AIM_REGISTERED else 'MISS'} "
            f"({per_busy:.2f} KiB while its REGISTER transactions lived)",
        ]
        if args.trace:
            proc, port = start_traced(daemons, work / "limen-traced", icp, n)
            time.sleep(3)
            provisioned = snapshot(proc, work / "limen-traced" / "snap-1")
            # tracemalloc slows Limen several times: register at a rate it keeps up with.
            traced_ok = register_all(work, f"{LOCAL}:{port}", csv, proc.pid, n, rate=100)
            time.sleep(args.settle)
            registered_snap = snapshot(proc, work / "limen-traced" / "snap-2")
            daemons.stop(proc, sig=signal.SIGINT)
            lines.append("\ntracemalloc, provisioned (every allocation live at start / N):")
            lines += top_lines(provisioned, None, n)
            growth = sum(st.size_diff for st in registered_snap.compare_to(provisioned, "filename"))
            lines.append(
                f"tracemalloc, registered ({traced_ok} registered; live Python memory grew "
                f"{growth / 1024 / max(1, traced_ok):.2f} KiB per registered device once the "
                "transactions ended; top lines per device):"
            )
            lines += top_lines(registered_snap, provisioned, max(1, traced_ok))
    finally:
        daemons.stop_all()
    print("\n".join(lines))
    if args.keep:
        log(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def traced_limen() -> None:
    """The child of ``--trace``: bench/signalling_support.py's Limen with tracemalloc on."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--folder", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--icp", required=True)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    folder = Path(args.folder)
    shots = iter(("snap-1", "snap-2", "snap-3"))

    def dump(signum: int, frame: object) -> None:
        name = next(shots, "snap-x")
        tmp = folder / f"{name}.tmp"
        tracemalloc.take_snapshot().dump(str(tmp))
        tmp.rename(folder / name)

    signal.signal(signal.SIGUSR1, dump)
    tracemalloc.start(1)
    import signalling_support

    signalling_support._limen_main(
        argparse.Namespace(
            folder=args.folder,
            port=args.port,
            icp=args.icp,
            devices=args.devices,
            icp_password_prefix="icp-pw-",
            profile="",
            protection="on",
            no_upstream=False,
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "traced-limen":
        sys.path.insert(0, str(ROOT))
        traced_limen()
    else:
        sys.exit(main())
