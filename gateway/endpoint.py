"""The `/app/{key}` WebSocket endpoint: the upgrade, the handshake check, admission, and the node's
open connections.

A connect storm (thousands of pusher-js clients coming back after a deploy) must not starve the
sockets already connected: upgrades are queued and admitted at most `ADMISSIONS_PER_ITERATION` per
event-loop iteration, so deliveries (and everything else the loop does) run between batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from gateway.admission import NODE_FULL, NODE_RATE, NodeAdmission
from gateway.connection import Connection
from gateway.frames import frame_size
from gateway.handler import ProtocolHandler
from gateway.outbound import FlushScheduler
from gateway.wsprotocol import WebSocket, accept_response, handshake_error
from shared import metrics
from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry, AppsUnavailable
from shared.protocol import codes, messages
from shared.protocol.socket_ids import new_socket_id

log = logging.getLogger("herald.gateway")

PATH_PREFIX = "/app/"
# Upgrades answered per event-loop iteration during a connect storm (each costs ~20-40 us of CPU, so
# a batch stays around a millisecond or two before the loop serves I/O again).
ADMISSIONS_PER_ITERATION = 48

Refusal = tuple[AppConfig | None, int, str]
APPS_UNAVAILABLE = "Application lookup unavailable; reconnect later"
DRAINING = "Server is shutting down; reconnect to another node"
QUOTA_UNAVAILABLE = "Server cannot accept connections right now"

# The `reason` label of herald_connections_refused_total: 4100 has several causes, told by message.
_REFUSED_BY_MESSAGE = {DRAINING: "draining", NODE_FULL: "node_full", NODE_RATE: "node_rate",
                       APPS_UNAVAILABLE: "apps_unavailable", QUOTA_UNAVAILABLE: "quota_unavailable"}
_REFUSED_BY_CODE = {codes.APP_NOT_FOUND: "app_not_found", codes.APP_DISABLED: "app_disabled",
                    codes.UNAUTHORIZED: "origin_not_allowed", codes.NO_PROTOCOL: "no_protocol",
                    codes.UNSUPPORTED_PROTOCOL: "unsupported_protocol", codes.OVER_QUOTA: "over_quota"}


_BYTES_OUT = metrics.BYTES_OUT.values


def refusal_reason(code: int, message: str) -> str:
    return _REFUSED_BY_MESSAGE.get(message) or _REFUSED_BY_CODE.get(code, "other")


@dataclass(slots=True)
class Handshake:
    """What the handshake check sees: the app key from the path, the query string and the request
    headers (names lowercased, e.g. `origin`); `app` once the check passed."""

    key: str
    query: str
    headers: Sequence[tuple[bytes, bytes]]
    app: AppConfig | None = None

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class Gateway:
    """Holds the node's open connections; one per process."""

    def __init__(
        self,
        registry: AppRegistry,
        handler: ProtocolHandler,
        activity_timeout_s: int = codes.ACTIVITY_TIMEOUT_S,
        admission: NodeAdmission | None = None,
    ) -> None:
        self.registry = registry
        self.handler = handler
        self.activity_timeout_s = activity_timeout_s
        self.admission = admission or NodeAdmission()
        self.connections: dict[str, Connection] = {}
        self.app_connections: dict[str, int] = {}  # open connections by app (the console's live count)
        self.scheduler = FlushScheduler()
        self.accepting = True
        # Open sockets and running tasks; the server assembly points these at uvicorn's own sets so
        # its shutdown sees them (herald/http.py).
        self.sockets: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._admissions: deque[tuple[WebSocket, Handshake, bytes]] = deque()
        self._admitting = False
        # Sockets counted in their app's connection quota, released on close (an app's limit may
        # change while they are open).
        self._counted: set[str] = set()

    # -- upgrade and admission -----------------------------------------------------------------

    def upgrade(self, transport: Any, method: str, path: str, query: str,
                headers: Sequence[tuple[bytes, bytes]], rest: bytes) -> str | None:
        """Take over `transport` for a WebSocket, or return why the request is not a valid upgrade
        (the HTTP layer answers 400)."""
        problem, key = handshake_error(method, headers)
        if key is None:
            return problem
        ws = WebSocket(self, transport)
        transport.set_protocol(ws)
        self.sockets.add(ws)
        if rest:
            ws.data_received(rest)
        self._admissions.append((ws, Handshake(path[len(PATH_PREFIX):], query, headers), key))
        if not self._admitting:
            self._admitting = True
            asyncio.get_running_loop().call_soon(self._admit_batch)
        return None

    def _admit_batch(self) -> None:
        queue = self._admissions
        for _ in range(min(len(queue), ADMISSIONS_PER_ITERATION)):
            ws, request, key = queue.popleft()
            if not ws.closed:  # the client may have left while queued
                self._admit(ws, request, key)
        if queue:
            asyncio.get_running_loop().call_soon(self._admit_batch)
        else:
            self._admitting = False

    def _admit(self, ws: WebSocket, request: Handshake, key: bytes) -> None:
        # Held, not flushed: it goes out in one write with connection_established (or the refusal).
        ws.hold(accept_response(key))
        refusal = self._node_check()
        if refusal is not None:
            self.refuse(ws, refusal[1], refusal[2])
            return
        app = self.registry.cached_key(request.key)
        if app is None:  # not held by this process: ask the registry (an apps database), in a task
            self.spawn(self._look_up(ws, request))
            return
        self._checked(ws, request, app)

    async def _look_up(self, ws: WebSocket, request: Handshake) -> None:
        try:
            app = await self.registry.by_key(request.key)
        except AppsUnavailable:
            self.refuse(ws, codes.OVER_CAPACITY, APPS_UNAVAILABLE)
            return
        if not ws.closed:
            self._checked(ws, request, app)

    def _checked(self, ws: WebSocket, request: Handshake, app: AppConfig | None) -> None:
        refusal = self._app_check(request, app)
        if refusal is not None:
            self.refuse(ws, refusal[1], refusal[2])
            return
        assert app is not None
        socket_id = new_socket_id()
        while socket_id in self.connections:
            socket_id = new_socket_id()
        if app.max_connections < 0:
            # No quota to count against: no store call (in a cluster, a Redis script per handshake)
            # and no task; the socket opens within this batch.
            self._opened(ws, app, socket_id)
        else:
            self.spawn(self._open(ws, app, socket_id))

    async def check_handshake(self, request: Handshake) -> Refusal | None:
        """The one handshake check: the node (draining, its connection cap and rate), the app (known,
        enabled, the Origin allowed), the protocol version; `request.app` is set when it passes. The
        upgrade path runs the same steps, without a task when the app is cached."""
        refusal = self._node_check()
        if refusal is not None:
            return refusal
        try:
            app = await self.registry.by_key(request.key)
        except AppsUnavailable:
            return None, codes.OVER_CAPACITY, APPS_UNAVAILABLE
        refusal = self._app_check(request, app)
        if refusal is None:
            request.app = app
        return refusal

    def _node_check(self) -> Refusal | None:
        if not self.accepting:
            # 4100, not 4200: pusher-js retries 4200 at once, so drained clients would hammer this
            # node until it exits; 4100 makes them back off and land on another node.
            return None, codes.OVER_CAPACITY, DRAINING
        busy = self.admission.refuse(len(self.connections))  # every handshake counts towards the rate
        if busy is not None:
            return None, codes.OVER_CAPACITY, busy
        return None

    @staticmethod
    def _app_check(request: Handshake, app: AppConfig | None) -> Refusal | None:
        if app is None:
            return None, codes.APP_NOT_FOUND, "Application does not exist"
        if not app.enabled:
            return app, codes.APP_DISABLED, "Application disabled"
        if not app.allowed_origins.allow_any:
            origin = request.header(b"origin")
            if not app.allowed_origins.allows(origin.decode("latin-1") if origin is not None else None):
                # 4009: pusher-js does not reconnect, so a page on a foreign origin can't hammer the node.
                return app, codes.UNAUTHORIZED, "Origin not allowed"
        versions = parse_qs(request.query).get("protocol")
        if not versions:
            return app, codes.NO_PROTOCOL, "No protocol version supplied"
        try:
            version = int(versions[0])
        except ValueError:
            return app, codes.UNSUPPORTED_PROTOCOL, "Unsupported protocol version"
        if not codes.PROTOCOL_MIN <= version <= codes.PROTOCOL_MAX:
            return app, codes.UNSUPPORTED_PROTOCOL, "Unsupported protocol version"
        return None

    @staticmethod
    def refuse(ws: WebSocket, code: int, message: str) -> None:
        metrics.CONNECTIONS_REFUSED.labels(refusal_reason(code, message)).inc()
        payload = messages.error(message, code)
        _BYTES_OUT[()] += frame_size(len(payload))
        ws.send(payload)
        ws.close(code, message)

    async def _open(self, ws: WebSocket, app: AppConfig, socket_id: str) -> None:
        connections = self.handler.backend.connections
        try:
            ok = await connections.open(app.id, socket_id, app.max_connections)
        except Exception:
            log.warning("connection quota check failed", exc_info=True)
            self.refuse(ws, codes.OVER_CAPACITY, QUOTA_UNAVAILABLE)
            return
        if not ok:
            self.refuse(ws, codes.OVER_QUOTA, "Application is over connection quota")
            return
        if ws.closed:  # the client left while the quota was checked
            await self._release_quota(app, socket_id)
            return
        self._counted.add(socket_id)
        self._opened(ws, app, socket_id)

    def _opened(self, ws: WebSocket, app: AppConfig, socket_id: str) -> None:
        conn = Connection(socket_id, app, ws, self.handler.clock())
        ws.conn = conn
        self.connections[socket_id] = conn
        self.app_connections[app.id] = self.app_connections.get(app.id, 0) + 1
        metrics.CONNECTIONS.labels(app.id).inc()
        metrics.CONNECTIONS_OPENED.labels(app.id).inc()
        conn.send(messages.connection_established(socket_id, self.activity_timeout_s))
        ws.flush()
        ws.start()

    # -- close ---------------------------------------------------------------------------------

    def lost(self, ws: WebSocket, release: bool) -> None:
        """The socket's transport is gone; `release` unless a message handler still runs (it releases
        the connection when it finishes, so handle_close comes after the last message)."""
        self.sockets.discard(ws)
        conn = ws.conn
        if conn is None:
            return
        del self.connections[conn.socket_id]
        self.app_connections[conn.app.id] -= 1
        metrics.CONNECTIONS.labels(conn.app.id).dec()
        if release:
            self.spawn(self.release(conn))

    async def release(self, conn: Connection) -> None:
        await self.handler.handle_close(conn)
        if conn.socket_id in self._counted:
            self._counted.discard(conn.socket_id)
            await self._release_quota(conn.app, conn.socket_id)

    async def _release_quota(self, app: AppConfig, socket_id: str) -> None:
        try:
            await self.handler.backend.connections.close(app.id, socket_id)
        except Exception:
            log.warning("connection quota release failed for %s", app.id, exc_info=True)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def sweep(self, now: float, pong_timeout_s: float) -> None:
        """Ping silent sockets, close those that ignored the ping (docs/protocol.md, "Liveness")."""
        idle_limit = self.activity_timeout_s
        for conn in self.connections.values():  # no awaits: the dict can't change meanwhile
            if conn.sink.closed:
                continue  # already closing: nothing to ping or report again
            app = conn.app
            if (app.enable_user_authentication and not conn.authorized
                    and now - conn.opened_at >= app.user_authentication_timeout_s):
                # docs/protocol.md, "Authorized connections": sign in or join a private channel in time.
                message = "Connection not authorized within timeout."
                conn.send(messages.error(message, codes.UNAUTHORIZED))
                conn.sink.close(codes.UNAUTHORIZED, message)
                continue
            if conn.ping_sent_at is None:
                if now - conn.last_seen >= idle_limit:
                    conn.ping_sent_at = now
                    conn.send(messages.PING)
            elif now - conn.ping_sent_at >= pong_timeout_s:
                conn.send(messages.error("Pong reply not received", codes.PONG_NOT_RECEIVED))
                conn.sink.close(codes.PONG_NOT_RECEIVED, "Pong reply not received")
