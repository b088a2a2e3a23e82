"""`herald serve | gateway | trigger-api`: flags, with HERALD_* environment variables as defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from herald import __version__
from herald.http import BODY_TIMEOUT_S, HEADER_TIMEOUT_S
from herald.server import DEFAULT_DRAIN_S, DEFAULT_HOST, DEFAULT_PORT, Node, Settings, run
from shared.apps.config import DEFAULT_APP_KEY, DEFAULT_APP_SECRET, AppConfig, ConfigError, default_app_from_env
from shared.apps.database import DEFAULT_TABLE, REFRESH_S, DatabaseAppRegistry, source_for
from shared.apps.file import POLL_INTERVAL_S, FileAppRegistry
from shared.apps.registry import AppRegistry
from shared.backend import Backend, memory_backend
from shared.protocol.codes import ACTIVITY_TIMEOUT_S, PONG_TIMEOUT_S
from shared.redis.backend import DEFAULT_PREFIX, redis_backend
from shared.redis.connection import RedisConfigError, TlsOptions
from shared.redis.health import DEFAULT_UNREADY_AFTER_S
from shared.state.redis_node import NODE_LEASE_S, REAPER_INTERVAL_S
from shared.webhooks.queue import DEFAULT_WORKERS

log = logging.getLogger("herald")

ROLES = {
    "serve": (True, True, "all-in-one: WebSocket gateway and HTTP API on one port"),
    "gateway": (True, False, "WebSocket gateway node only"),
    "trigger-api": (False, True, "HTTP API service only"),
}

T = TypeVar("T")


class EnvError(Exception):
    """A HERALD_* variable holds a value its flag cannot take (reported in one line, exit 2)."""


_KINDS: dict[Callable[[str], Any], str] = {int: "an integer", float: "a number"}


def env_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: T,
    help: str,
    parse: Callable[[str], T] = str,  # type: ignore[assignment]
    choices: Sequence[T] | None = None,
) -> None:
    """Add `flag` whose default comes from HERALD_<env> when set (and not empty), else `default`.

    The environment value is parsed and checked here, so a bad one stops start-up with a message
    naming the variable instead of a traceback; the help text names the variable and the default."""
    name = f"HERALD_{env}"
    value: T = default
    raw = os.environ.get(name, "")
    if raw:
        try:
            value = parse(raw)
        except ValueError:
            raise EnvError(f"{name}={raw!r} is not {_KINDS.get(parse, 'valid')} (used for {flag})") from None
        if choices is not None and value not in choices:
            raise EnvError(f"{name}={raw!r} must be one of {', '.join(map(str, choices))} (used for {flag})")
    shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else default
    where = f"{name}={raw}, built-in default {shown}" if raw else f"{name}, default {shown}"
    parser.add_argument(flag, type=parse, default=value, choices=choices, help=f"{help} [{where}]")


def env_switch(parser: argparse.ArgumentParser, flag: str, env: str, help: str) -> None:
    """An on/off flag, on when given or when HERALD_<env> is 1/true/yes/on (0/false/no/off: off)."""
    name = f"HERALD_{env}"
    raw = os.environ.get(name, "")
    try:
        value = _truthy(raw) if raw else False
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not on or off (1/true/yes/on, 0/false/no/off; used for {flag})") from None
    parser.add_argument(flag, action="store_true", default=value, help=f"{help} [{name}, default off]")


# -- Redis connection flags (README, "Redis") -------------------------------------------------------


def _truthy(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(raw)
    return value in ("1", "true", "yes", "on")


def add_redis_flags(p: argparse.ArgumentParser) -> None:
    env_flag(p, "--redis-tls-ca-file", "REDIS_TLS_CA_FILE", None,
             "PEM CA bundle that verifies the Redis server with rediss:// (default: the system's CAs)")
    env_flag(p, "--redis-tls-cert-file", "REDIS_TLS_CERT_FILE", None,
             "PEM client certificate for Redis servers that require one")
    env_flag(p, "--redis-tls-key-file", "REDIS_TLS_KEY_FILE", None, "PEM private key of that certificate")
    name = "HERALD_REDIS_TLS_INSECURE"
    raw = os.environ.get(name, "")
    try:
        insecure = _truthy(raw) if raw else False
    except ValueError:
        raise EnvError(f"{name}={raw!r} is not a boolean (used for --redis-tls-insecure)") from None
    where = f"{name}={raw}, built-in default off" if raw else f"{name}, default off"
    p.add_argument("--redis-tls-insecure", action="store_true", default=insecure,
                   help=f"do not verify the Redis server's certificate or host name; tests only [{where}]")
    env_flag(p, "--redis-unready-after", "REDIS_UNREADY_AFTER", DEFAULT_UNREADY_AFTER_S,
             "seconds without Redis before /ready answers 503; clients stay connected either way", float)


def redis_tls(args: argparse.Namespace) -> TlsOptions:
    return TlsOptions(ca_file=args.redis_tls_ca_file, cert_file=args.redis_tls_cert_file,
                      key_file=args.redis_tls_key_file, insecure=args.redis_tls_insecure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald", description="Pusher Channels protocol server",
        epilog="`herald COMMAND --help` lists every flag with its environment variable and default.",
    )
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, http_api, help_text) in ROLES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        env_flag(p, "--host", "HOST", DEFAULT_HOST, "listen address")
        env_flag(p, "--port", "PORT", DEFAULT_PORT, "listen port", int)
        env_flag(p, "--apps-file", "APPS_FILE", None, "YAML or JSON file {apps: [...]}, or a soketi config file; "
                 "re-read when it changes and on SIGHUP; without it and --apps-db one app comes from "
                 "HERALD_APP_ID/KEY/SECRET (defaults 1, app-key, app-secret)")
        env_flag(p, "--apps-file-poll", "APPS_FILE_POLL", POLL_INTERVAL_S,
                 "seconds between checks of the apps file for changes; 0 = only on SIGHUP", float)
        env_flag(p, "--apps-db", "APPS_DB", None, "apps from a soketi-layout table: "
                 "postgres://user:pass@host:5432/db or mysql://user:pass@host:3306/db")
        env_flag(p, "--apps-db-table", "APPS_DB_TABLE", DEFAULT_TABLE, "table (or schema.table) of --apps-db")
        env_flag(p, "--apps-db-refresh", "APPS_DB_REFRESH", REFRESH_S, "seconds between re-reads of the "
                 "cached apps; also how long an unknown key is remembered", float)
        env_flag(p, "--max-node-connections", "MAX_NODE_CONNECTIONS", 0,
                 "open connections on this node before new ones are refused with 4100; 0 = no limit", int)
        env_flag(p, "--max-node-connection-rate", "MAX_NODE_CONNECTION_RATE", 0,
                 "new connections per second on this node before they are refused with 4100; 0 = no limit", int)
        env_flag(p, "--redis-url", "REDIS_URL", None, "Redis URL for cluster mode; without it state is in memory")
        env_flag(p, "--redis-prefix", "REDIS_PREFIX", DEFAULT_PREFIX,
                 "key and topic prefix, so several deployments can share one Redis")
        add_redis_flags(p)
        env_flag(p, "--node-lease", "NODE_LEASE", NODE_LEASE_S,
                 "seconds without a heartbeat before a node counts as dead and is reaped", float)
        env_flag(p, "--reaper-interval", "REAPER_INTERVAL", REAPER_INTERVAL_S, "seconds between reaper runs", float)
        env_flag(p, "--activity-timeout", "ACTIVITY_TIMEOUT", ACTIVITY_TIMEOUT_S,
                 "seconds of client silence before a server ping", int)
        env_flag(p, "--pong-timeout", "PONG_TIMEOUT", float(PONG_TIMEOUT_S),
                 "seconds to wait for a reply to that ping before close 4201", float)
        env_flag(p, "--drain-seconds", "DRAIN_SECONDS", DEFAULT_DRAIN_S,
                 "on SIGTERM, spread 4200 closes over this many seconds", float)
        env_flag(p, "--header-timeout", "HEADER_TIMEOUT", HEADER_TIMEOUT_S,
                 "seconds a client has to send a request's headers before 408", float)
        env_flag(p, "--body-timeout", "BODY_TIMEOUT", BODY_TIMEOUT_S,
                 "seconds a client has to send a request's body after its headers before 408", float)
        env_flag(p, "--webhook-workers", "WEBHOOK_WORKERS", DEFAULT_WORKERS,
                 "concurrent webhook deliveries in this process; 0 turns delivery off here "
                 "(with Redis, other processes still deliver what this one queues)", int)
        env_flag(p, "--metrics-port", "METRICS_PORT", None,
                 "serve GET /metrics on this port (same host) instead of the public one", int)
        if http_api:
            env_switch(p, "--console", "CONSOLE", "serve the debug console at /console (docs/console.md)")
            env_flag(p, "--console-token", "CONSOLE_TOKEN", None,
                     "operator token that opens any app's console (otherwise: the app's key and secret)")
        env_flag(p, "--log-level", "LOG_LEVEL", "info", "log level",
                 choices=["critical", "error", "warning", "info", "debug"])
    return parser


def load_registry(args: argparse.Namespace) -> AppRegistry:
    """The apps: from a database, an apps file, or the environment's one app. A ConfigError here
    (or from the registry's start) stops start-up."""
    if args.apps_db and args.apps_file:
        raise ConfigError("--apps-db and --apps-file can't be used together")
    if args.apps_db:
        if args.apps_db_refresh <= 0:
            raise ConfigError("--apps-db-refresh must be more than 0")
        return DatabaseAppRegistry(source_for(args.apps_db, args.apps_db_table), refresh_s=args.apps_db_refresh)
    if args.apps_file:
        return FileAppRegistry(args.apps_file, poll_s=args.apps_file_poll)
    return AppRegistry([default_app()])


async def check_database(registry: DatabaseAppRegistry) -> None:
    """Read the apps table once before serving, so a wrong URL or table stops start-up with a message
    (the server's own loop connects again when it starts)."""
    try:
        await registry.start()
    finally:
        await registry.close()


def default_app() -> AppConfig:
    app = default_app_from_env()
    if app.key == DEFAULT_APP_KEY or app.secret == DEFAULT_APP_SECRET:
        log.warning(
            "Using the development app id=%s key=%s secret=%s. These credentials are public: "
            "set HERALD_APP_ID/HERALD_APP_KEY/HERALD_APP_SECRET or --apps-file before exposing Herald.",
            app.id, app.key, app.secret if app.secret == DEFAULT_APP_SECRET else "<from environment>",
        )
    else:
        log.info("Serving app id=%s key=%s", app.id, app.key)
    return app


def make_backend(args: argparse.Namespace, registry: AppRegistry) -> Backend:
    if not args.redis_url:
        return memory_backend(registry, webhook_workers=args.webhook_workers)
    return redis_backend(args.redis_url, prefix=args.redis_prefix, lease_s=args.node_lease,
                         reaper_interval_s=args.reaper_interval, apps=registry,
                         webhook_workers=args.webhook_workers, tls=redis_tls(args),
                         unready_after_s=args.redis_unready_after)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except EnvError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        registry = load_registry(args)
        if isinstance(registry, DatabaseAppRegistry):
            asyncio.run(check_database(registry))
    except ConfigError as exc:
        print(f"herald: configuration error: {exc}", file=sys.stderr)
        return 2
    for flag in ("webhook_workers", "max_node_connections", "max_node_connection_rate"):
        if getattr(args, flag) < 0:
            print(f"herald: --{flag.replace('_', '-')} must be 0 or more", file=sys.stderr)
            return 2
    if args.header_timeout <= 0 or args.body_timeout <= 0:
        print("herald: --header-timeout and --body-timeout must be positive", file=sys.stderr)
        return 2
    gateway, http_api, _ = ROLES[args.command]
    if not args.redis_url and args.command != "serve":
        log.warning("%s without --redis-url runs with an in-memory bus: it can't reach other processes",
                    args.command)
    settings = Settings(
        host=args.host, port=args.port, activity_timeout_s=args.activity_timeout,
        pong_timeout_s=args.pong_timeout, drain_s=args.drain_seconds, log_level=args.log_level,
        header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
        max_node_connections=args.max_node_connections, max_node_connection_rate=args.max_node_connection_rate,
        metrics_port=args.metrics_port, console=getattr(args, "console", False),
        console_token=getattr(args, "console_token", None),
    )
    try:
        backend = make_backend(args, registry)
    except RedisConfigError as exc:
        print(f"herald: Redis configuration error: {exc}", file=sys.stderr)
        return 2
    node = Node(registry, backend, settings, gateway=gateway, http_api=http_api)
    log.info("herald %s listening on %s:%d (%s)", args.command, args.host, args.port,
             "redis" if args.redis_url else "in-memory")
    run(node, settings)
    return 0
