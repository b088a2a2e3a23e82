"""Assembling each role (gateway, HTTP API or both) and running it under uvicorn with a graceful drain.

uvicorn runs the process; Herald's own HTTP protocol (herald/http.py) serves its connections: the
WebSocket upgrade goes to the gateway, the hot HTTP API endpoints to the trigger API's handler, and
the rest to the Starlette app below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admission import NodeAdmission
from gateway.app_changes import apply_app_changes
from gateway.endpoint import PATH_PREFIX, Gateway
from gateway.handler import ProtocolHandler
from gateway.hub import Hub
from herald.http import BODY_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES, HEADER_TIMEOUT_S, HttpLimits, Site
from herald.observability import ProcessMetrics
from shared import metrics
from shared.apps.config import ConfigError
from shared.apps.database import DatabaseAppRegistry
from shared.apps.registry import AppChanges, AppRegistry
from shared.backend import Backend
from shared.bus.memory_impl import MemoryBus
from shared.protocol import codes
from trigger_api.app import ConsoleSettings, build_routes
from trigger_api.handlers import MAX_BODY_BYTES, TriggerApi

log = logging.getLogger("herald")

SWEEP_INTERVAL_S = 1.0


DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 6001
# Time over which sockets are closed with 4200 on shutdown, so clients don't reconnect at once.
DEFAULT_DRAIN_S = 3.0


@dataclass
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    activity_timeout_s: int = codes.ACTIVITY_TIMEOUT_S
    pong_timeout_s: float = codes.PONG_TIMEOUT_S
    drain_s: float = DEFAULT_DRAIN_S
    log_level: str = "info"
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    # Node-level admission (gateway.admission); 0 = no limit.
    max_node_connections: int = 0
    max_node_connection_rate: int = 0
    # GET /metrics on this port (same host) instead of the public one; None: on the public port.
    metrics_port: int | None = None
    # The debug console on the HTTP API (docs/console.md), and the operator token that opens any app.
    console: bool = False
    console_token: str | None = None


class Node:
    """One process: the roles it serves (gateway, HTTP API or both) over one backend."""

    def __init__(
        self, registry: AppRegistry, backend: Backend, settings: Settings, gateway: bool, http_api: bool
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.settings = settings
        self.ready = False
        self.gateway: Gateway | None = None
        self.api: TriggerApi | None = None
        self.process_metrics = ProcessMetrics(backend, settings.host, settings.metrics_port)
        routes: list[BaseRoute] = [
            Route("/", self.health),
            Route("/ready", self.readiness),
        ]
        if settings.metrics_port is None:
            routes.append(Route("/metrics", self.metrics))
        if gateway:
            hub = Hub(backend.bus)
            handler = ProtocolHandler(backend, hub)
            admission = NodeAdmission(settings.max_node_connections, settings.max_node_connection_rate)
            self.gateway = Gateway(registry, handler, settings.activity_timeout_s, admission)
            counts = self.gateway.app_connections
            backend.tap.local_connections = lambda app_id: counts.get(app_id, 0)
            registry.add_listener(self.apps_changed)
        if http_api:
            self.api = TriggerApi(registry, backend)
            console = ConsoleSettings(settings.console, settings.console_token)
            routes.extend(build_routes(registry, backend, api=self.api, console=console))
        self.app = Starlette(routes=routes, lifespan=self.lifespan)

    def site(self, server_state: Any) -> Site:
        """What Herald's HTTP protocol serves for this node; the gateway's sockets and tasks join
        uvicorn's own sets so its shutdown waits for them."""
        limits = HttpLimits(
            header_timeout_s=self.settings.header_timeout_s, body_timeout_s=self.settings.body_timeout_s,
            max_body_bytes=MAX_BODY_BYTES if self.api else DEFAULT_MAX_BODY_BYTES,
        )
        upgrade = None
        if self.gateway is not None:
            self.gateway.sockets = server_state.connections
            self.gateway.tasks = server_state.tasks
            upgrade = self.gateway.upgrade
        # In memory (herald serve without Redis, apps not from a database) a trigger never waits.
        # (The bus under the console's tap: tap.bus.)
        eager = isinstance(self.backend.tap.bus, MemoryBus) and not isinstance(self.registry, DatabaseAppRegistry)
        return Site(self.app, limits, fast=self.api.fast_route if self.api else None, upgrade=upgrade,
                    upgrade_prefix=PATH_PREFIX, eager=eager)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readiness(self, request: Request) -> Response:
        """Ready once started and until draining, and while Redis is reachable or was lost only recently
        (the policy and why: shared/redis/health.py). Liveness (`health`) never looks at Redis."""
        redis = self.backend.node.redis_health
        ready = self.ready and (redis is None or redis.ready())
        body: dict[str, object] = {"ready": ready}
        if redis is not None:
            body["redis"] = redis.facts()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def apps_changed(self, changes: AppChanges) -> None:
        if self.gateway is not None:
            closed = apply_app_changes(self.gateway.connections.values(), changes)
            if closed:
                log.info("closed %d connections of disabled or removed apps", closed)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.registry.start()
        except ConfigError as exc:
            log.error("configuration error: %s", exc)
            raise
        await self.process_metrics.start()
        await self.backend.start()
        sweeper = asyncio.create_task(self.sweep_forever()) if self.gateway else None
        hangup = self._on_sighup()
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if sweeper:
                sweeper.cancel()
            await self.backend.close()
            await self.registry.close()
            await self.process_metrics.stop()

    def _on_sighup(self) -> bool:
        """SIGHUP re-reads the apps (the file, or the database now); False where signals can't be set
        (not the main thread, as under a test client)."""
        tasks: set[asyncio.Task[None]] = set()

        def reload() -> None:
            log.info("SIGHUP: reloading apps")
            task = asyncio.ensure_future(self.registry.reload())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    async def sweep_forever(self) -> None:
        assert self.gateway is not None
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.gateway.sweep(time.monotonic(), self.settings.pong_timeout_s)

    async def drain(self) -> None:
        """Readiness off, stop accepting, then close sockets with 4200 in jittered batches."""
        self.ready = False
        gw = self.gateway
        if gw is None:
            return
        metrics.DRAINING.set(1)
        gw.accepting = False  # before the early return too: no new socket may slip in during shutdown
        if not gw.connections:
            return
        conns = list(gw.connections.values())
        random.shuffle(conns)
        batches = max(1, min(len(conns), int(self.settings.drain_s * 10)))
        per_batch = -(-len(conns) // batches)
        pause = self.settings.drain_s / batches
        log.info("draining %d connections over %.1fs", len(conns), self.settings.drain_s)
        metrics.DRAIN_PENDING.set(len(conns))
        for i in range(0, len(conns), per_batch):
            for conn in conns[i : i + per_batch]:
                conn.sink.close(codes.RECONNECT, "Server is shutting down; please reconnect")
            metrics.DRAIN_PENDING.set(max(0, len(conns) - i - per_batch))
            await asyncio.sleep(pause)


class DrainingServer(uvicorn.Server):
    """Runs Herald's drain before uvicorn's own shutdown (which would close sockets with 1012)."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node
        self._draining: asyncio.Task[None] | None = None
        # Herald's HTTP protocol for this server; its backlog reads the listening sockets.
        self.site = node.site(self.server_state)
        config.http = self.site.protocol_factory()  # type: ignore[assignment]

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for listening in self.servers:
            self.site.backlog.listen_on(listening.sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.site.backlog.close()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is None and sig in (signal.SIGTERM, signal.SIGINT):
            self._draining = asyncio.get_event_loop().create_task(self._drain_then_exit(sig, frame))
            return
        super().handle_exit(sig, frame)

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            await self.node.drain()
        finally:
            super().handle_exit(sig, frame)


def run(node: Node, settings: Settings) -> None:
    config = uvicorn.Config(
        node.app,
        host=settings.host,
        port=settings.port,
        # Herald's protocol does HTTP and the WebSocket upgrade itself (herald/http.py); uvicorn's own
        # WebSocket support is not loaded.
        ws="none",
        log_level=settings.log_level,
        access_log=False,
        loop="uvloop",
        timeout_graceful_shutdown=max(5, int(settings.drain_s) + 5),
    )
    # uvicorn calls any `http=` factory with (config=, server_state=, app_state=), and keeps its
    # listening servers in `servers`: pinned and tested in tests/unit/test_uvicorn_contract.py.
    DrainingServer(config, node).run()
