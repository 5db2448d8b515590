"""The process's file-descriptor limit (issue 10).

Every TCP/TLS connection, media socket and database file takes a descriptor; under the
usual default soft limit of 1,024, 2,000 connections made every call fail. ``limen serve``
raises its own soft limit at start and says so when it cannot reach what it needs.
Standard library only, so that it is cheap to import.
"""

from __future__ import annotations

import logging

log = logging.getLogger("limen")


def raise_open_files_limit(target: int, needed: int = 0) -> str | None:
    """Raise the RLIMIT_NOFILE soft limit towards ``target`` (capped at the hard limit).

    Returns a warning for the operator when the limit cannot be raised, or ends below
    ``needed`` (what the configured connection limits take); None otherwise. ``target``
    0 leaves the inherited limit alone.
    """
    if target <= 0:
        return None
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return "cannot raise the open files limit on this platform"
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == infinity else min(target, hard)
    if soft != infinity and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            return (
                f"open files limit stays at {soft} (wanted {target}): {exc}; "
                "raise it with `ulimit -n` or LimitNOFILE= in the systemd unit"
            )
        soft = wanted
    shown = "unlimited" if soft == infinity else str(soft)
    if soft != infinity and soft < needed:
        return (
            f"open files limit is {shown} (hard limit {hard}), below the {needed} that the "
            "configured connection limits need: raise LimitNOFILE= in the systemd unit or "
            "limits.conf, or lower max_connections"
        )
    log.info("open files limit: %s (asked for %d, hard limit %s)", shown, target, hard)
    return None
