#!/usr/bin/env bash
# `make run`: set up Limen and start it on its embedded defaults (SQLite in ./data,
# a generated self-signed certificate, ./limen.toml written if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
[ -f limen.toml ] || .venv/bin/limen init --config limen.toml
exec .venv/bin/limen serve --config limen.toml
