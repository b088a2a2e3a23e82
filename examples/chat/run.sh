#!/usr/bin/env bash
# The chat demo in one command: installs what is missing, builds the page, starts Herald (all-in-one,
# in memory) and the chat backend, and prints the URL. Ctrl-C stops both.
#
#   examples/chat/run.sh                 # http://127.0.0.1:8000
#   CHAT_HOST=0.0.0.0 examples/chat/run.sh   # reachable from other machines (Herald too)
#
# Ports: CHAT_PORT (8000), HERALD_PORT (6001). Messages go to examples/chat/data/chat.sqlite3.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
HOST="${CHAT_HOST:-127.0.0.1}"
CHAT_PORT="${CHAT_PORT:-8000}"
HERALD_PORT="${HERALD_PORT:-6001}"
PY="$ROOT/.venv/bin/python"

# Python: Herald (editable, from this checkout) and the backend's dependencies.
if [ ! -x "$PY" ]; then
  python3 -m venv "$ROOT/.venv"
fi
if ! "$PY" -c 'import herald, pusher' 2>/dev/null; then
  "$PY" -m pip install -q -e "$ROOT" -r server/requirements.txt
fi

# Node: the recovery helper's and the hooks package's builds (linked as herald-channels-recovery and
# herald-channels-react), then this app's dependencies and build.
if [ ! -f "$ROOT/recovery/dist/index.js" ]; then
  (cd "$ROOT/recovery" && npm ci --no-audit --no-fund && npm run build)
fi
if [ ! -f "$ROOT/react/dist/index.js" ]; then
  (cd "$ROOT/react" && npm ci --no-audit --no-fund && npm run build)
fi
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$PY" -m herald serve --host "$HOST" --port "$HERALD_PORT" --apps-file herald-apps.json --log-level warning &
pids+=($!)
for _ in $(seq 100); do
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$HERALD_PORT/ready', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.2
done

HERALD_API_HOST=127.0.0.1 HERALD_API_PORT="$HERALD_PORT" HERALD_WS_PORTS="$HERALD_PORT" \
  CHAT_COOKIE_SECRET="${CHAT_COOKIE_SECRET:-demo-only-$(hostname)}" \
  "$PY" server/app.py --host "$HOST" --port "$CHAT_PORT" --log-level warning &
pids+=($!)

shown_host="$HOST"
[ "$HOST" = "0.0.0.0" ] && shown_host="$(hostname -I 2>/dev/null | awk '{print $1}')"
echo
echo "  Herald chat: http://${shown_host:-127.0.0.1}:$CHAT_PORT   (Herald on port $HERALD_PORT; Ctrl-C stops)"
echo "  Sign in as Alice in one window and as Bob in a private window."
echo
wait -n "${pids[@]}"
