"""Provisioning (issue 6): how a remote phone gets its files, and the PBX its TMA file.

Entry points:

- :func:`serve_provisioning` / :class:`ProvisioningServer` — the HTTPS hash-path proxy on
  port 4445 (:mod:`limen.provisioning.server`), with its refusals
  (:mod:`~limen.provisioning.paths`, :mod:`~limen.provisioning.limits`) and its upstream
  TLS policy (:mod:`~limen.provisioning.upstream`);
- :mod:`limen.provisioning.phoneconfig` — ``aastra.cfg`` and ``<MAC>.cfg`` rendering for
  ICPs in "Limen serves configs" mode and ``limen phone config``;
- :mod:`limen.provisioning.tma` — the TMA CSV / XLSX export (seed figure 18).

Certificates (Limen's CA and the listeners' certificates) live in :mod:`limen.certs`.
"""

from __future__ import annotations

from limen.provisioning.server import (
    AccessRecord,
    IcpDirectory,
    ProvisioningMetrics,
    ProvisioningServer,
    serve_provisioning,
)

__all__ = [
    "AccessRecord",
    "IcpDirectory",
    "ProvisioningMetrics",
    "ProvisioningServer",
    "serve_provisioning",
]
