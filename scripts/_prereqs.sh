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
# engine is there (the local-docker script installs docker.io and starts it), and iproute2 (`ip`) for
# the network-namespace partition scenario of tests/reliability (skipped with the reason without it).
ensure_test_packages() {
  if ! command -v ip >/dev/null; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "installing iproute2" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    else
      echo "iproute2 is missing: the partition scenario of tests/reliability will be skipped" >&2
    fi
  fi
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

# PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) for the apps-database tests
# (tests/appsdb.py). This project's machines run both already (trust auth for postgres, root without a
# password for MariaDB). Where one isn't listening: start it if installed, else install it with apt
# when root, and give it the access the tests use. Without either, those tests skip and say why.
_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

_wait_listening() {
  for _ in $(seq 1 60); do _listening "$1" && return 0; sleep 0.5; done
  return 1
}

_can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; }

ensure_databases() {
  local installed=()
  if ! _listening 5432; then
    if ! command -v pg_ctlcluster >/dev/null && _can_apt; then
      echo "installing postgresql" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      installed+=(postgresql)
    fi
    if command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = "0" ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
      if _wait_listening 5432 && [[ " ${installed[*]} " == *" postgresql "* ]]; then
        # A fresh cluster asks TCP clients for a password: give postgres the one the tests' URL may carry.
        su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" || true
      fi
    fi
    _listening 5432 || echo "no PostgreSQL on 127.0.0.1:5432: its apps-database tests will skip" >&2
  fi
  if ! _listening 3306; then
    if ! command -v mariadbd >/dev/null && _can_apt; then
      echo "installing mariadb-server" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
      installed+=(mariadb)
    fi
    if command -v mariadbd >/dev/null && [ "$(id -u)" = "0" ]; then
      install -d -o mysql -g mysql /run/mysqld 2>/dev/null || true
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
      if _wait_listening 3306 && [[ " ${installed[*]} " == *" mariadb "* ]]; then
        # A fresh install lets root in through the unix socket only; the tests connect over TCP.
        mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" || true
      fi
    fi
    _listening 3306 || echo "no MariaDB/MySQL on 127.0.0.1:3306: its apps-database tests will skip" >&2
  fi
}
