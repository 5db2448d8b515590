#!/usr/bin/env bash
# `make test`: install what the tests need (Debian packages of the real peers, the venv
# with test extras), then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source_pkgs=(sip-tester sipvicious kamailio kamailio-tls-modules kamailio-sqlite-modules
  baresip-core linphone-cli rtpengine-daemon postgresql tshark sngrep nftables iproute2 sqlite3
  tcpdump iputils-ping conntrack openssl ca-certificates chromium dnsmasq-base)
missing=()
for p in "${source_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages for the tests: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Daemons must not start on install (tests start and stop what they need).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/bootstrap.sh test
echo "== ruff"
.venv/bin/ruff check limen tests bench
.venv/bin/ruff format --check limen tests bench
echo "== mypy --strict (sans-IO core)"
strict=(limen/sip)
for d in limen/sdp limen/rtp; do [ -d "$d" ] && strict+=("$d"); done
.venv/bin/mypy --strict "${strict[@]}"
echo "== mypy (rest)"
.venv/bin/mypy limen
echo "== pytest"
exec .venv/bin/pytest -q -ra "$@"
