# Shared by scripts/run.sh and scripts/test.sh: system packages Herald and its tests use.
ensure_system_packages() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v node >/dev/null || missing+=(nodejs npm)
  if [ "${HERALD_WITH_BROWSER:-1}" = "1" ] && ! command -v chromium >/dev/null; then
    missing+=(chromium)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "installing ${missing[*]}" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "please install: ${missing[*]}" >&2
      exit 1
    fi
  fi
}

# The tests also need: docker-compose (Debian's) for tests/deploy/test_compose.py when a Docker
# engine is there (the local-docker script installs docker.io and starts it).
ensure_test_packages() {
  if command -v docker >/dev/null && ! command -v docker-compose >/dev/null; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "installing docker-compose" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    else
      echo "docker-compose is missing: tests/deploy/test_compose.py will be skipped" >&2
    fi
  fi
}
