"""Limen raises its own file-descriptor limit at start and says so when it cannot
(issue 10). Run in a child process so the test runner's own limit is not changed."""

# limen.app calls limen.rlimits.raise_open_files_limit from run(), before the loop starts.

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import resource, sys
    from limen.rlimits import raise_open_files_limit
    soft, hard = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    message = raise_open_files_limit(int(sys.argv[3]), int(sys.argv[4]))
    print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    print(message or "")
    """
)


def run_child(soft: int, hard: int, target: int, needed: int = 0) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(soft), str(hard), str(target), str(needed)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    return int(out[0]), out[1] if len(out) > 1 else ""


def test_soft_limit_raised_to_the_target() -> None:
    soft, message = run_child(1024, 8192, 4096)
    assert soft == 4096
    assert message == ""


def test_capped_at_the_hard_limit() -> None:
    soft, message = run_child(1024, 2048, 65536, needed=2000)
    assert soft == 2048
    assert message == ""


def test_said_when_below_what_the_connection_limits_need() -> None:
    soft, message = run_child(1024, 2048, 65536, needed=12000)
    assert soft == 2048
    assert "open files limit is 2048" in message and "below the 12000" in message


def test_zero_leaves_the_limit_alone() -> None:
    soft, message = run_child(1000, 2048, 0)
    assert soft == 1000
    assert message == ""
