#!/usr/bin/env bash
# The reliability suite (tests/reliability/) at its long sizes: more users, events, examples and a
# 5-minute soak. Each scenario prints what it measured (time to converge, memory, lost events); the
# short forms run in scripts/test.sh. Needs the test environment scripts/test.sh installs; root for the
# network-namespace partition scenario (skipped, with the reason, without it).
set -euo pipefail
cd "$(dirname "$0")/.."
HERALD_LONG_TESTS=1 exec .venv/bin/pytest tests/reliability -s -q --timeout 1800 "$@"
