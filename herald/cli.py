"""`herald serve | gateway | trigger-api`: flags, with HERALD_* environment variables as defaults."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from herald.server import Node, Settings, run
from shared.apps.config import (
    DEFAULT_APP_KEY,
    DEFAULT_APP_SECRET,
    AppConfig,
    ConfigError,
    default_app_from_env,
    load_apps_file,
)
from shared.apps.registry import AppRegistry
from shared.backend import Backend, memory_backend
from shared.webhooks.queue import DEFAULT_WORKERS

log = logging.getLogger("herald")

ROLES = {
    "serve": (True, True, "all-in-one: WebSocket gateway and HTTP API on one port"),
    "gateway": (True, False, "WebSocket gateway node only"),
    "trigger-api": (False, True, "HTTP API service only"),
}


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"HERALD_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description="Pusher Channels protocol server")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in ROLES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="listen address (HERALD_HOST)")
        p.add_argument("--port", type=int, default=int(_env("PORT", "6001") or 6001),
                       help="listen port (HERALD_PORT, default 6001)")
        p.add_argument("--apps-file", default=_env("APPS_FILE"),
                       help="YAML or JSON file {apps: [...]} (HERALD_APPS_FILE); "
                            "without it one app comes from HERALD_APP_ID/KEY/SECRET")
        p.add_argument("--redis-url", default=_env("REDIS_URL"),
                       help="Redis URL for cluster mode (HERALD_REDIS_URL); without it state is in memory")
        p.add_argument("--redis-prefix", default=_env("REDIS_PREFIX", "herald"),
                       help="key and topic prefix, so several deployments can share one Redis (HERALD_REDIS_PREFIX)")
        p.add_argument("--node-lease", type=float, default=float(_env("NODE_LEASE", "15") or 15),
                       help="seconds without a heartbeat before a node counts as dead and is reaped "
                            "(HERALD_NODE_LEASE)")
        p.add_argument("--reaper-interval", type=float, default=float(_env("REAPER_INTERVAL", "5") or 5),
                       help="seconds between reaper runs (HERALD_REAPER_INTERVAL)")
        p.add_argument("--activity-timeout", type=int,
                       default=int(_env("ACTIVITY_TIMEOUT", "120") or 120),
                       help="seconds of client silence before a server ping (HERALD_ACTIVITY_TIMEOUT)")
        p.add_argument("--pong-timeout", type=float, default=float(_env("PONG_TIMEOUT", "30") or 30),
                       help="seconds to wait for a reply to that ping before close 4201 (HERALD_PONG_TIMEOUT)")
        p.add_argument("--drain-seconds", type=float, default=float(_env("DRAIN_SECONDS", "3") or 3),
                       help="on SIGTERM, spread 4200 closes over this many seconds (HERALD_DRAIN_SECONDS)")
        p.add_argument("--webhook-workers", type=int,
                       default=int(_env("WEBHOOK_WORKERS", str(DEFAULT_WORKERS)) or DEFAULT_WORKERS),
                       help="concurrent webhook deliveries in this process; 0 turns delivery off here "
                            "(with Redis, other processes still deliver what this one queues) "
                            f"(HERALD_WEBHOOK_WORKERS, default {DEFAULT_WORKERS})")
        p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                       choices=["critical", "error", "warning", "info", "debug"])
    return parser


def load_apps(apps_file: str | None) -> list[AppConfig]:
    if apps_file:
        return load_apps_file(apps_file)
    app = default_app_from_env()
    if app.key == DEFAULT_APP_KEY or app.secret == DEFAULT_APP_SECRET:
        log.warning(
            "Using the development app id=%s key=%s secret=%s. These credentials are public: "
            "set HERALD_APP_ID/HERALD_APP_KEY/HERALD_APP_SECRET or --apps-file before exposing Herald.",
            app.id, app.key, app.secret if app.secret == DEFAULT_APP_SECRET else "<from environment>",
        )
    else:
        log.info("Serving app id=%s key=%s", app.id, app.key)
    return [app]


def make_backend(args: argparse.Namespace, registry: AppRegistry) -> Backend:
    if not args.redis_url:
        return memory_backend(registry, webhook_workers=args.webhook_workers)
    from shared.redis.backend import redis_backend

    return redis_backend(args.redis_url, prefix=args.redis_prefix, lease_s=args.node_lease,
                         reaper_interval_s=args.reaper_interval, apps=registry,
                         webhook_workers=args.webhook_workers)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        apps = load_apps(args.apps_file)
    except ConfigError as exc:
        print(f"herald: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.webhook_workers < 0:
        print("herald: --webhook-workers must be 0 or more", file=sys.stderr)
        return 2
    gateway, http_api, _ = ROLES[args.command]
    if not args.redis_url and args.command != "serve":
        log.warning("%s without --redis-url runs with an in-memory bus: it can't reach other processes",
                    args.command)
    settings = Settings(
        host=args.host, port=args.port, activity_timeout_s=args.activity_timeout,
        pong_timeout_s=args.pong_timeout, drain_s=args.drain_seconds, log_level=args.log_level,
    )
    registry = AppRegistry(apps)
    backend = make_backend(args, registry)
    node = Node(registry, backend, settings, gateway=gateway, http_api=http_api)
    log.info("herald %s listening on %s:%d (%s)", args.command, args.host, args.port,
             "redis" if args.redis_url else "in-memory")
    run(node, settings)
    return 0
