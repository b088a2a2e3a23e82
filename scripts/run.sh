#!/usr/bin/env bash
# Install Herald into this checkout and run it all-in-one (gateway + HTTP API on :6001, in-memory).
# Extra arguments go to `herald serve`, e.g. scripts/run.sh --port 6002 --apps-file apps.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .
exec .venv/bin/herald serve "$@"
