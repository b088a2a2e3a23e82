#!/usr/bin/env bash
# A local Herald cluster in one command: builds the chat page (npm) if needed, then the images, and
# starts Redis, two gateways, the trigger API, HAProxy and the chat demo (docker-compose.yml here).
#
#   deploy/compose/up.sh            # then open http://127.0.0.1:16080 (the chat) or point pusher-js at :16001
#   deploy/compose/up.sh down       # stop and remove everything
#
# Needs Docker with `docker-compose` (Debian: apt-get install docker-compose) or the `docker compose`
# plugin, and Node.js 20 for the chat page. Ports: see docker-compose.yml (HERALD_COMPOSE_*_PORT).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if command -v docker-compose >/dev/null; then compose=(docker-compose); else compose=(docker compose); fi
compose+=(-f "$here/docker-compose.yml" -p "${HERALD_COMPOSE_PROJECT:-herald}")

if [ "${1:-up}" = "down" ]; then
  exec "${compose[@]}" down --remove-orphans
fi

# The chat page links the React package (react/dist) and is built by Vite.
if [ ! -f "$root/examples/chat/dist/index.html" ]; then
  [ -f "$root/react/dist/index.js" ] || (cd "$root/react" && npm ci --no-audit --no-fund && npm run build)
  (cd "$root/examples/chat" && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build --silent)
fi

HERALD_VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/herald/__init__.py")"
export HERALD_VERSION
"${compose[@]}" up -d --build
lb="${HERALD_COMPOSE_LB_PORT:-16001}"
# Ready when HAProxy sees a live gateway and a live trigger API (its /haproxy-ready answers 200).
ready() {
  # A subshell: a failed `exec` redirection ends only it.
  ( exec 3<>"/dev/tcp/127.0.0.1/$lb" && printf 'GET /haproxy-ready HTTP/1.0\r\n\r\n' >&3 \
    && read -r _ status _ <&3 && [ "$status" = "200" ] ) 2>/dev/null
}
for _ in $(seq 120); do ready && break; sleep 0.5; done
ready || { echo "HAProxy on port $lb is not ready; see: ${compose[*]} logs" >&2; exit 1; }
echo
echo "  Herald cluster up: pusher-js -> ws://127.0.0.1:$lb/app/chat-key, HTTP API -> http://127.0.0.1:$lb/apps/1/..."
echo "  app id 1, key chat-key, secret chat-secret; chat demo: http://127.0.0.1:${HERALD_COMPOSE_CHAT_PORT:-16080}"
echo "  logs: docker-compose -f deploy/compose/docker-compose.yml -p ${HERALD_COMPOSE_PROJECT:-herald} logs -f;  stop: $0 down"
