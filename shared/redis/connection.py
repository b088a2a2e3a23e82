"""Every connection Herald makes to Redis comes from here: the settings (a URL plus TLS options) are
parsed once into `RedisSettings`, and one `RedisConnector` builds from them both the redis-py client
for commands and the lean pub/sub subscriber's connections, so TLS, unix sockets, ACL users, the
database and Sentinel apply to both alike (docs: README, "Redis").

URL forms:

    redis://[[user]:password@]host[:port][/db]            plain TCP (port 6379)
    rediss://[[user]:password@]host[:port][/db]           TLS; the server's certificate is verified
    unix://[[user]:password@]/path/to/redis.sock[?db=N]   a unix socket
    redis+sentinel://[[user]:password@]host1[:port],host2[:port]/master-name[/db]
    rediss+sentinel://...                                  the same, TLS to the sentinels and the master

The credentials in the URL are the data nodes' (the master's); `?sentinel_username=` and
`?sentinel_password=` authenticate to the sentinels when they require it. A Redis Cluster uses the
`redis://` / `rediss://` forms (any node's address) and is detected by asking that node.

`parse_redis_url` does no I/O (tested on its own); errors are `RedisConfigError` with a one-line message
that the CLI prints before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import (
    Connection,
    RedisSSLContext,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedSSLConnection
from redis.exceptions import RedisError

log = logging.getLogger("herald.redis")

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# Commands fail fast while Redis is away, so HTTP requests answer 503 instead of hanging.
SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0
# Connections to Redis per process, and how long a command waits for a free one before failing.
POOL_CONNECTIONS = 128
POOL_WAIT_S = 5.0
# redis-py's cluster pool can't wait, so it gets room for bursts (per Redis node).
CLUSTER_POOL_CONNECTIONS = 1024
# A TLS handshake that has not finished by then counts as a failed connection attempt.
TLS_HANDSHAKE_TIMEOUT_S = 5.0

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
# Query parameters each form accepts; anything else is refused rather than silently ignored.
_QUERY_KEYS = {
    "redis": {"db"},
    "rediss": {"db"},
    "unix": {"db", "username", "password"},
    "redis+sentinel": {"db", "sentinel_username", "sentinel_password"},
    "rediss+sentinel": {"db", "sentinel_username", "sentinel_password"},
}
# Sentinel master names as Redis accepts them in `sentinel monitor` (no spaces or slashes).
_MASTER_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")

Address = tuple[str, int]
P = TypeVar("P", bound=asyncio.Protocol)


class RedisConfigError(ValueError):
    """The Redis settings can't work (a malformed or unsupported URL, unusable TLS files)."""


@dataclass(frozen=True)
class TlsOptions:
    """`--redis-tls-*` / `HERALD_REDIS_TLS_*`: how to check the server and prove who we are.

    Without a CA file the system's trusted CAs verify the server; `insecure` turns verification off
    (certificate and host name), for test setups only."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    @property
    def given(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.key_file or self.insecure)


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how to talk to it; made by `parse_redis_url`."""

    kind: str  # "tcp", "unix" or "sentinel"
    tls: TlsOptions | None = None  # None: plaintext
    address: Address | None = None  # tcp
    path: str | None = None  # unix
    sentinels: tuple[Address, ...] = ()  # sentinel
    master_name: str | None = None  # sentinel
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Where Redis is, for logs (never the password)."""
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        if self.kind == "unix":
            where = f"unix://{user}{self.path}"
        elif self.kind == "sentinel":
            hosts = ",".join(_format_address(a) for a in self.sentinels)
            where = f"{scheme}+sentinel://{user}{hosts}/{self.master_name}"
        else:
            assert self.address is not None
            where = f"{scheme}://{user}{_format_address(self.address)}"
        return f"{where}/{self.db}" if self.db else where


def _format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(text: str, url_form: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise RedisConfigError(f"invalid port {text!r} in the Redis URL ({url_form})")
    return int(text)


def _host_port(text: str, default_port: int, url_form: str) -> Address:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RedisConfigError(f"unclosed '[' in the Redis URL host {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RedisConfigError(f"unexpected {rest!r} after the host in the Redis URL")
        port = _port(rest[1:], url_form) if rest else default_port
    elif text.count(":") > 1:
        raise RedisConfigError(f"IPv6 hosts need brackets in the Redis URL: [{text}]")
    else:
        host, sep, port_text = text.partition(":")
        port = _port(port_text, url_form) if sep else default_port
    if not host:
        raise RedisConfigError(f"the Redis URL has no host ({url_form})")
    return unquote(host), port


def _db(text: str) -> int:
    if not text.isdigit():
        raise RedisConfigError(f"the Redis database must be a number 0 or more, not {text!r}")
    return int(text)


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """(username, password, the rest): `user:pass@`, `:pass@` and `user@` forms."""
    if "@" not in netloc:
        return None, None, netloc
    info, _, rest = netloc.rpartition("@")
    user, sep, password = info.partition(":")
    return (unquote(user) or None), (unquote(password) if sep and password else None), rest


def parse_redis_url(url: str, tls: TlsOptions | None = None) -> RedisSettings:
    """The settings for `url` (forms in the module docstring) and the TLS options; no I/O.

    Raises `RedisConfigError` for a malformed or unsupported URL, and for TLS options given with a
    form that has no TLS (a plaintext URL with a CA file is far more likely a mistake than a wish)."""
    tls = tls or TlsOptions()
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        shown = f"'{scheme}://'" if sep else "no scheme"
        raise RedisConfigError(
            f"unsupported Redis URL ({shown}); use redis://, rediss://, unix://, redis+sentinel:// "
            "or rediss+sentinel://"
        )
    form = f"{scheme}://..."
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise RedisConfigError(f"malformed Redis URL ({form}): {exc}") from None
    if parts.fragment:
        raise RedisConfigError(f"the Redis URL must not have a '#' part ({form})")
    unknown = sorted(set(query) - _QUERY_KEYS[scheme])
    if unknown:
        allowed = ", ".join(sorted(_QUERY_KEYS[scheme]))
        raise RedisConfigError(f"unsupported Redis URL parameter {unknown[0]!r} for {scheme}:// (allowed: {allowed})")
    params = {key: values[-1] for key, values in query.items()}
    username, password, hosts = _userinfo(parts.netloc)
    username = params.get("username") or username
    password = params.get("password") or password
    path = unquote(parts.path)
    use_tls = scheme.startswith("rediss")
    if tls.given and not use_tls:
        raise RedisConfigError(
            f"Redis TLS options are set but the URL is {scheme}://; use rediss:// (or rediss+sentinel://) "
            "for TLS, or drop the --redis-tls-* options"
        )
    if tls.key_file and not tls.cert_file:
        raise RedisConfigError("--redis-tls-key-file needs --redis-tls-cert-file (the client certificate)")
    tls_options = tls if use_tls else None

    if scheme == "unix":
        if hosts:
            raise RedisConfigError(f"a unix:// Redis URL has no host: unix:///path/to/redis.sock, not {hosts!r}")
        if not path or path == "/":
            raise RedisConfigError("the unix:// Redis URL has no socket path (unix:///path/to/redis.sock)")
        return RedisSettings("unix", path=path, db=_db(params.get("db", "0")), username=username, password=password)

    if scheme.endswith("+sentinel"):
        if not hosts:
            raise RedisConfigError(f"the Redis URL names no sentinel ({scheme}://host1:26379,host2:26379/master)")
        sentinels = tuple(_host_port(h, DEFAULT_SENTINEL_PORT, form) for h in hosts.split(","))
        segments = [s for s in path.split("/")]
        if len(segments) < 2 or not segments[1]:
            raise RedisConfigError(f"the Sentinel URL names no master: {scheme}://host:26379/<master-name>[/<db>]")
        if len(segments) > 3 or (len(segments) == 3 and not segments[2]):
            raise RedisConfigError(f"the Sentinel URL path must be /<master-name>[/<db>], not {path!r}")
        master = segments[1]
        if not _MASTER_NAME.match(master):
            raise RedisConfigError(f"invalid Sentinel master name {master!r}")
        db = _db(segments[2]) if len(segments) == 3 else 0
        if "db" in params:
            db = _db(params["db"])
        return RedisSettings(
            "sentinel", tls=tls_options, sentinels=sentinels, master_name=master, db=db,
            username=username, password=password,
            sentinel_username=params.get("sentinel_username") or None,
            sentinel_password=params.get("sentinel_password") or None,
        )

    if "," in hosts:
        raise RedisConfigError(
            f"several hosts in a {scheme}:// URL; for Sentinel use redis+sentinel://h1:26379,h2:26379/<master>, "
            "for a Redis Cluster give any one node"
        )
    address = _host_port(hosts, DEFAULT_PORT, form)
    if path not in ("", "/"):
        if path.count("/") > 1:
            raise RedisConfigError(f"the Redis URL path must be /<db>, not {path!r}")
        db = _db(path[1:])
    else:
        db = 0
    if "db" in params:
        db = _db(params["db"])
    return RedisSettings("tcp", tls=tls_options, address=address, db=db, username=username, password=password)


def _check_readable(tls: TlsOptions) -> None:
    for flag, path in (("--redis-tls-ca-file", tls.ca_file), ("--redis-tls-cert-file", tls.cert_file),
                       ("--redis-tls-key-file", tls.key_file)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise RedisConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


class _WaitingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (it asks the sentinels for the master on each new connection) with the waiting
    behaviour of `BlockingConnectionPool`, like the single-server pool."""


class _SharedTls:
    """A redis-py TLS connection that uses the connector's TLS context instead of building its own.

    redis-py builds an `SSLContext` for every new connection, and `ssl.create_default_context()`
    loads the system's CA store each time: about 47 ms of CPU on the event loop on the test machine.
    A burst of new connections (a pool filling up under load, or refilling after a failover) then
    stalls every socket of the node for as long, and pushes the connects queued behind it past their
    timeout. One context, built at start-up, serves every connection."""

    def __init__(self, *args: Any, herald_tls: RedisSSLContext, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ssl_context = herald_tls


class _SSLConnection(_SharedTls, SSLConnection):
    pass


class _SentinelSSLConnection(_SharedTls, SentinelManagedSSLConnection):
    pass


class RedisConnector:
    """Builds the command client and the subscriber connections from one `RedisSettings`."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._ssl_kwargs = self._make_ssl_kwargs()
        # redis-py's own context builder, built once: commands and subscribers verify alike, and no
        # connection builds a context of its own (`_SharedTls`).
        self._tls: RedisSSLContext | None = None
        if settings.tls is not None:
            _check_readable(settings.tls)
            try:
                self._tls = RedisSSLContext(**{k[4:]: v for k, v in self._ssl_kwargs.items()})
                self._tls.get()  # built (and checked) now; `get` keeps it
            except (OSError, ssl.SSLError, RedisError) as exc:
                raise RedisConfigError(f"unusable Redis TLS files: {exc}") from None
            if settings.tls.insecure:
                log.warning("Redis TLS certificate verification is OFF (--redis-tls-insecure): "
                            "anyone on the network path can impersonate Redis")
        self._sentinel: Sentinel | None = None
        if settings.kind == "sentinel":
            self._sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs=self._sentinel_kwargs())

    # -- redis-py keyword arguments ------------------------------------------------------------

    def _make_ssl_kwargs(self) -> dict[str, Any]:
        tls = self.settings.tls
        if tls is None:
            return {}
        return {
            "ssl_ca_certs": tls.ca_file,
            "ssl_certfile": tls.cert_file,
            "ssl_keyfile": tls.key_file,
            "ssl_cert_reqs": "none" if tls.insecure else "required",
            "ssl_check_hostname": not tls.insecure,
        }

    @property
    def _ssl_context(self) -> ssl.SSLContext | None:
        return self._tls.get() if self._tls is not None else None

    def _shared_tls(self, connection_class: type[_SharedTls]) -> dict[str, Any]:
        """With TLS, the redis-py connection class that uses the connector's one context (`_SharedTls`)."""
        return {"connection_class": connection_class, "herald_tls": self._tls} if self._tls is not None else {}

    def _credentials(self) -> dict[str, Any]:
        s = self.settings
        return {"username": s.username, "password": s.password}

    def _timeouts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
        if self.settings.kind != "unix":
            opts["socket_keepalive"] = True  # TCP only: notices a server that vanished without a word
        return opts

    def _sentinel_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {**self._timeouts(), "username": s.sentinel_username,
                                  "password": s.sentinel_password}
        if s.tls is not None:
            kwargs |= {"ssl": True, **self._ssl_kwargs}
        return kwargs

    # -- commands --------------------------------------------------------------------------------

    def is_cluster(self) -> bool:
        """Ask the server whether it runs in cluster mode (so one URL form serves both). A server that
        can't be reached now counts as a single server, with a warning naming the reason."""
        s = self.settings
        if s.kind != "tcp":
            return False  # Sentinel-managed masters and unix sockets are single servers
        import redis

        assert s.address is not None
        with redis.Redis(host=s.address[0], port=s.address[1], **self._credentials(), **self._timeouts(),
                         ssl=s.tls is not None, **self._ssl_kwargs) as probe:
            try:
                return _mode(probe) == "cluster"
            except redis.RedisError as exc:
                log.warning("could not ask Redis at %s whether it runs as a cluster (%s); assuming a "
                            "single server", s.describe(), exc)
                return False

    def command_client(self, cluster: bool) -> Any:
        """A redis-py asyncio client: `Redis` on a waiting pool, `RedisCluster`, or a Sentinel master client."""
        s = self.settings
        common: dict[str, Any] = {**self._credentials(), **self._timeouts()}
        if cluster:
            if s.kind != "tcp":
                raise RedisConfigError("Redis Cluster needs a redis:// or rediss:// URL naming one node")
            if s.db:
                raise RedisConfigError("Redis Cluster has only database 0; remove the /db from the URL")
            assert s.address is not None
            client = RedisCluster(host=s.address[0], port=s.address[1], max_connections=CLUSTER_POOL_CONNECTIONS,
                                  ssl=s.tls is not None, **self._ssl_kwargs, **common)
            if self._tls is not None:
                # RedisCluster takes no connection class: hand ours to the nodes it knows and to the
                # arguments it makes new nodes with (as redis-py itself amends them for its own options).
                client.nodes_manager.connection_kwargs.update(self._shared_tls(_SSLConnection))
                for node in client.nodes_manager.startup_nodes.values():
                    node.connection_class = _SSLConnection
                    node.connection_kwargs["herald_tls"] = self._tls
            return client
        # A waiting pool: bursts (a reconnect storm, many concurrent API requests) queue for a
        # connection instead of failing with "Too many connections" as redis-py's default pool does.
        pool_opts = {"max_connections": POOL_CONNECTIONS, "timeout": POOL_WAIT_S, "db": s.db, **common}
        if s.kind == "sentinel":
            assert self._sentinel is not None and s.master_name is not None
            return self._sentinel.master_for(
                s.master_name, connection_pool_class=_WaitingSentinelPool, ssl=s.tls is not None,
                **self._ssl_kwargs, **self._shared_tls(_SentinelSSLConnection), **pool_opts,
            )
        if s.kind == "unix":
            pool = BlockingConnectionPool(connection_class=UnixDomainSocketConnection, path=s.path, **pool_opts)
        else:
            assert s.address is not None
            connections: dict[str, Any] = {"connection_class": Connection, **self._shared_tls(_SSLConnection)}
            pool = BlockingConnectionPool(host=s.address[0], port=s.address[1], **connections, **self._ssl_kwargs,
                                          **pool_opts)
        return Redis.from_pool(pool)

    # -- subscribers -------------------------------------------------------------------------------

    @property
    def auth(self) -> tuple[str | None, str | None]:
        """(username, password) for the subscriber's AUTH."""
        return self.settings.username, self.settings.password

    async def server_address(self) -> Address | str:
        """Where the (master) server is now: asked from the sentinels each time under Sentinel."""
        s = self.settings
        if s.kind == "sentinel":
            assert self._sentinel is not None and s.master_name is not None
            host, port = await self._sentinel.discover_master(s.master_name)
            return str(host), int(port)
        if s.kind == "unix":
            assert s.path is not None
            return s.path
        assert s.address is not None
        return s.address

    async def open_subscriber(self, protocol_factory: Callable[[], P], node: Address | None = None) -> P:
        """A connection running `protocol_factory()`'s protocol, to `node` (a cluster node) or else to
        the server (`server_address`), with the same TLS context and timeouts as the command client.
        Raises OSError / TimeoutError / RedisError (Sentinel) when it can't connect."""
        loop = asyncio.get_running_loop()
        target = node if node is not None else await self.server_address()
        async with asyncio.timeout(CONNECT_TIMEOUT_S + (TLS_HANDSHAKE_TIMEOUT_S if self._ssl_context else 0)):
            if isinstance(target, str):
                _, protocol = await loop.create_unix_connection(protocol_factory, target)
                return protocol
            host, port = target
            tls: dict[str, Any] = {}
            if self._ssl_context is not None:
                tls = {"ssl": self._ssl_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_S,
                       "server_hostname": host if self._ssl_context.check_hostname else ""}
            transport, protocol = await loop.create_connection(protocol_factory, host, port, **tls)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Notices a vanished server on an idle subscriber even between the bus's pings.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return protocol

    def describe_target(self, node: Address | None) -> str:
        return _format_address(node) if node is not None else self.settings.describe()

    async def aclose(self) -> None:
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _mode(probe: Any) -> str:
    """The server's mode ("standalone", "cluster" or "sentinel"): HELLO, or INFO on servers before 6.0."""
    from redis.exceptions import ResponseError

    try:
        hello = probe.execute_command("HELLO", "2")
    except ResponseError as exc:
        if "unknown command" not in str(exc).lower():
            raise
        info = probe.info("cluster")
        return "cluster" if info.get("cluster_enabled") else "standalone"
    if isinstance(hello, list):
        hello = dict(zip(hello[::2], hello[1::2], strict=True))
    mode = hello.get(b"mode", hello.get("mode", b"standalone"))
    return mode.decode() if isinstance(mode, bytes) else str(mode)
