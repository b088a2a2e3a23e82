"""Real `redis-server` processes on free ports for tests: a single server (plain TCP, TLS, a unix
socket, with an ACL), a local Redis Cluster (optionally over TLS), and a Sentinel setup (a master, a
replica and three sentinels)."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from tests.helpers import free_port
from tests.tlscerts import Certs

STARTUP_TIMEOUT_S = 10
CLUSTER_BUS_OFFSET = 10000
SENTINEL_MASTER = "herald-master"
# Sentinel timings for tests: a master is down after 1 s without answers, and a failover stuck for 5 s
# is retried (defaults are 30 s and 3 min).
SENTINEL_DOWN_AFTER_MS = 1000
SENTINEL_FAILOVER_TIMEOUT_MS = 5000


# With an ACL, the test's own user next to the ones under test: it reads ACL LOG and looks at keys.
ADMIN_USER, ADMIN_PASSWORD = "test-admin", "test-admin-pw"
ADMIN_ACL = f"user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all"


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis refuses ports above 55535."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _can_bind(port) and _can_bind(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    return path


def tls_args(certs: Certs, client_cert: bool = True) -> list[str]:
    """Herald's flags that make it trust `certs`' CA (and present the client certificate)."""
    args = ["--redis-tls-ca-file", str(certs.ca)]
    if client_cert:
        args += ["--redis-tls-cert-file", str(certs.client_cert), "--redis-tls-key-file", str(certs.client_key)]
    return args


def _tls_config(certs: Certs, auth_clients: str) -> list[str]:
    return [f"tls-cert-file {certs.server_cert}", f"tls-key-file {certs.server_key}",
            f"tls-ca-cert-file {certs.ca}", f"tls-auth-clients {auth_clients}"]


def _tls_client_kwargs(certs: Certs) -> dict[str, Any]:
    # The test's own clients don't check host names (tests/unit/redis/test_connect.py checks Herald's).
    return {"ssl": True, "ssl_ca_certs": str(certs.ca), "ssl_certfile": str(certs.client_cert),
            "ssl_keyfile": str(certs.client_key), "ssl_check_hostname": False}


class RedisServer:
    """One redis-server without persistence; `stop()` then `start()` simulates an outage and a
    restart that lost every key, as a Redis without persistence does.

    `tls`: TLS only (no plaintext port), clients must present a certificate unless `tls_auth_clients`
    says otherwise. `unix`: a unix socket only. `acl`: ACL file lines (`user ...`); the default user is
    then disabled and `username`/`password` are the credentials the URL and `client()` use.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        cluster: bool = False,
        tls: Certs | None = None,
        tls_auth_clients: str = "yes",
        cluster_node_timeout_ms: int = 5000,
        unix: bool = False,
        acl: Sequence[str] = (),
        username: str | None = None,
        password: str | None = None,
        config: Sequence[str] = (),
        db: int = 0,
    ) -> None:
        self.workdir = workdir
        self.port = port or (free_cluster_port() if cluster else free_port())
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.acl = list(acl)
        self.username, self.password = username, password
        self.config = list(config)
        self.db = db
        # Unix socket paths are limited to ~107 bytes; pytest's tmp paths can be longer.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="hr-")) if unix else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def unix_path(self) -> Path | None:
        return self.socket_dir / "redis.sock" if self.socket_dir else None

    def _userinfo(self) -> str:
        if self.password is None:
            return ""
        return f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"

    @property
    def url(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self._userinfo()}{self.unix_path}" + (f"?db={self.db}" if self.db else "")
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self._userinfo()}127.0.0.1:{self.port}" + (f"/{self.db}" if self.db else "")

    def herald_args(self) -> list[str]:
        """The flags that point Herald at this server."""
        return ["--redis-url", self.url, *(tls_args(self.tls, self.tls_auth_clients != "no") if self.tls else [])]

    def _config_lines(self) -> list[str]:
        lines = ["bind 127.0.0.1", 'save ""', "appendonly no", f"dir {self.workdir}"]
        if self.unix_path is not None:
            lines += ["port 0", f"unixsocket {self.unix_path}", "unixsocketperm 700"]
        elif self.tls is not None:
            lines += ["port 0", f"tls-port {self.port}", *_tls_config(self.tls, self.tls_auth_clients)]
            if self.cluster:
                lines += ["tls-cluster yes"]
            lines += ["tls-replication yes"]
        else:
            lines += [f"port {self.port}"]
        if self.cluster:
            lines += ["cluster-enabled yes", f"cluster-config-file nodes-{self.port}.conf",
                      f"cluster-node-timeout {self.cluster_node_timeout_ms}"]
        if self.acl:
            acl_file = self.workdir / f"users-{self.port}.acl"
            acl_file.write_text("\n".join(["user default off", *self.acl, ADMIN_ACL]) + "\n")
            lines += [f"aclfile {acl_file}"]
        return lines + self.config

    def start(self) -> RedisServer:
        conf = self.workdir / f"redis-{self.port}.conf"
        conf.write_text("\n".join(self._config_lines()) + "\n")
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen([redis_binary(), str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = self.client(socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start: {self.log()}") from None
                time.sleep(0.05)
        client.close()
        return self

    def log(self) -> str:
        path = self.workdir / f"redis-{self.port}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client as the URL's user, on its database (the test's eyes into Redis)."""
        opts: dict[str, Any] = {"username": self.username, "password": self.password, "db": self.db, **kwargs}
        if self.unix_path is not None:
            return redis.Redis(unix_socket_path=str(self.unix_path), **opts)
        if self.tls is not None:
            opts |= _tls_client_kwargs(self.tls)
        return redis.Redis(host="127.0.0.1", port=self.port, **opts)


    def admin(self) -> redis.Redis:
        """With an ACL: a client as the test's own admin user, which may read `ACL LOG`."""
        return self.client(username=ADMIN_USER, password=ADMIN_PASSWORD)


class RedisClusterFixture:
    """Three masters (each with `replicas` replicas), made with `redis-cli --cluster create` (over TLS
    with `tls`). `node_timeout_ms` is how long a master may be silent before its replica takes over."""

    def __init__(self, workdir: Path, masters: int = 3, tls: Certs | None = None, acl: Sequence[str] = (),
                 username: str | None = None, password: str | None = None, replicas: int = 0,
                 node_timeout_ms: int = 5000) -> None:
        self.tls = tls
        self.acl = list(acl)
        self.replicas = replicas
        # Replicas start their first sync at once (Redis waits 5 s for more replicas by default).
        config = ["repl-diskless-sync-delay 0"]
        self.servers = [RedisServer(workdir, cluster=True, tls=tls, acl=acl, username=username, password=password,
                                    cluster_node_timeout_ms=node_timeout_ms, config=config)
                        for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def herald_args(self) -> list[str]:
        return self.servers[0].herald_args()

    def start(self) -> RedisClusterFixture:
        for server in self.servers:
            server.start()
        addrs = [f"127.0.0.1:{s.port}" for s in self.servers]
        tls = []
        if self.tls is not None:
            tls = ["--tls", "--cacert", str(self.tls.ca), "--cert", str(self.tls.client_cert),
                   "--key", str(self.tls.client_key)]
        if self.acl:
            tls += ["--user", ADMIN_USER, "--pass", ADMIN_PASSWORD]
        subprocess.run(
            ["redis-cli", *tls, "--cluster", "create", *addrs, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for server in self.servers:
            client = server.admin() if self.acl else server.client()
            while client.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
            # A replica that never synced can't take over: wait for every replica's first sync.
            while (info := client.info("replication"))["role"] != "master" and info["master_link_status"] != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a Redis Cluster replica did not sync: {server.log()}")
                time.sleep(0.05)
            client.close()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class SentinelSetup:
    """A master, one replica and three sentinels on loopback. The data nodes require `password`, the
    sentinels `sentinel_password`; with `tls` everything speaks TLS only."""

    def __init__(self, workdir: Path, password: str = "data-pw", sentinel_password: str = "sentinel-pw",
                 tls: Certs | None = None, sentinels: int = 3) -> None:
        self.workdir = workdir
        self.password, self.sentinel_password = password, sentinel_password
        self.tls = tls
        auth = [f"requirepass {password}", f"masterauth {password}"]
        self.master = RedisServer(workdir, tls=tls, password=password, config=auth)
        self.replica = RedisServer(workdir, tls=tls, password=password,
                                   config=[*auth, f"replicaof 127.0.0.1 {self.master.port}"])
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return (f"{scheme}://:{quote(self.password, safe='')}@{hosts}/{SENTINEL_MASTER}"
                f"?sentinel_password={quote(self.sentinel_password, safe='')}")

    def herald_args(self) -> list[str]:
        return ["--redis-url", self.url, *(tls_args(self.tls) if self.tls else [])]

    def _sentinel_config(self, port: int) -> list[str]:
        lines = ["bind 127.0.0.1", f"dir {self.workdir}",
                 f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} 2",
                 f"sentinel auth-pass {SENTINEL_MASTER} {self.password}",
                 f"sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}",
                 f"sentinel failover-timeout {SENTINEL_MASTER} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                 f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        if self.tls is not None:
            lines += ["port 0", f"tls-port {port}", "tls-replication yes", *_tls_config(self.tls, "yes")]
        else:
            lines += [f"port {port}"]
        return lines

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        self.wait_replicated()
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"  # sentinels rewrite their config: one file each
            conf.write_text("\n".join(self._sentinel_config(port)) + "\n")
            log = open(self.workdir / f"sentinel-{port}.log", "ab")  # noqa: SIM115 - lives with the process
            self.sentinel_procs.append(subprocess.Popen([redis_binary(), str(conf), "--sentinel"],
                                                        stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S * 2
        while not self._sentinels_agree():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not find the master, the replica and each other")
            time.sleep(0.1)
        return self

    def wait_replicated(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        replica = self.replica.client()
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not sync with the master: {self.replica.log()}")
            time.sleep(0.05)
        replica.close()

    def sentinel_client(self, port: int) -> redis.Redis:
        opts: dict[str, Any] = {"password": self.sentinel_password, "socket_timeout": 1}
        if self.tls is not None:
            opts |= _tls_client_kwargs(self.tls)
        return redis.Redis(host="127.0.0.1", port=port, **opts)

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            try:
                with self.sentinel_client(port) as client:
                    state = client.sentinel_master(SENTINEL_MASTER)
            except redis.RedisError:
                return False
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                return False
        return True

    def master_port(self) -> int:
        """The port the sentinels currently name as the master's."""
        with self.sentinel_client(self.sentinel_ports[0]) as client:
            _host, port = client.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
        return int(port)

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self.sentinel_procs = []
        self.master.stop()
        self.replica.stop()
