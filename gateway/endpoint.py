"""The `/app/{key}` WebSocket endpoint: handshake checks, then the read loop feeding the handler."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from gateway.admission import NodeAdmission
from gateway.connection import Connection
from gateway.handler import ProtocolHandler
from gateway.outbound import RAW_SEND_SCOPE_KEY, FlushScheduler, QueueSink, Sink, TransportSink, transport_of
from shared import metrics
from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry, AppsUnavailable
from shared.protocol import codes, messages
from shared.protocol.socket_ids import new_socket_id

log = logging.getLogger("herald.gateway")

# Where check_handshake leaves the app it found, so the connection doesn't look it up again.
APP_SCOPE_KEY = "herald.app"


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
        self.scheduler = FlushScheduler()
        self.accepting = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Raw ASGI so the read loop stays lean (no per-message Starlette objects)."""
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        refusal = await self.check_handshake(scope)
        if refusal is not None:
            _, code, message = refusal
            metrics.CONNECTIONS_REFUSED.labels(str(code)).inc()
            await send({"type": "websocket.send", "text": messages.error(message, code).decode()})
            await send({"type": "websocket.close", "code": code, "reason": message})
            return
        app: AppConfig = scope[APP_SCOPE_KEY]
        socket_id = new_socket_id()
        while socket_id in self.connections:
            socket_id = new_socket_id()
        if not await self.admit(app, socket_id, send):
            return
        sink = self.make_sink(send, scope.get(RAW_SEND_SCOPE_KEY))
        conn = Connection(socket_id, app, sink, self.handler.clock())
        self.connections[socket_id] = conn
        metrics.CONNECTIONS.inc()
        metrics.CONNECTIONS_TOTAL.inc()
        try:
            conn.send(messages.connection_established(socket_id, self.activity_timeout_s))
            await self.read_loop(conn, receive)
        finally:
            del self.connections[socket_id]
            metrics.CONNECTIONS.dec()
            if isinstance(sink, QueueSink):
                sink.cancel()
            await self.handler.handle_close(conn)
            try:
                await self.handler.backend.connections.close(app.id, socket_id)
            except Exception:
                log.warning("connection quota release failed for %s", app.id, exc_info=True)

    async def read_loop(self, conn: Connection, receive: Receive) -> None:
        handler = self.handler
        while True:
            msg = await receive()
            kind = msg["type"]
            if kind == "websocket.receive":
                text = msg.get("text")
                if text is not None:
                    await handler.handle_text(conn, text)
                else:
                    handler.handle_binary(conn)
            elif kind == "websocket.disconnect":
                return

    async def check_handshake(self, scope: Scope) -> tuple[AppConfig | None, int, str] | None:
        if not self.accepting:
            # 4100, not 4200: pusher-js retries 4200 at once, so drained clients would hammer this
            # node until it exits; 4100 makes them back off and land on another node.
            return None, codes.OVER_CAPACITY, "Server is shutting down; reconnect to another node"
        busy = self.admission.refuse(len(self.connections))
        if busy is not None:
            return None, codes.OVER_CAPACITY, busy
        try:
            app = await self.registry.by_key(scope["path_params"]["key"])
        except AppsUnavailable:
            return None, codes.OVER_CAPACITY, "Application lookup unavailable; reconnect later"
        if app is None:
            return None, codes.APP_NOT_FOUND, "Application does not exist"
        if not app.enabled:
            return app, codes.APP_DISABLED, "Application disabled"
        if not app.allowed_origins.allow_any and not app.allowed_origins.allows(header(scope, b"origin")):
            # 4009: pusher-js does not reconnect, so a page on a foreign origin can't hammer the node.
            return app, codes.UNAUTHORIZED, "Origin not allowed"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        versions = query.get("protocol")
        if not versions:
            return app, codes.NO_PROTOCOL, "No protocol version supplied"
        try:
            version = int(versions[0])
        except ValueError:
            return app, codes.UNSUPPORTED_PROTOCOL, "Unsupported protocol version"
        if not codes.PROTOCOL_MIN <= version <= codes.PROTOCOL_MAX:
            return app, codes.UNSUPPORTED_PROTOCOL, "Unsupported protocol version"
        scope[APP_SCOPE_KEY] = app
        return None

    async def admit(self, app: AppConfig, socket_id: str, send: Send) -> bool:
        try:
            ok = await self.handler.backend.connections.open(app.id, socket_id, app.max_connections)
        except Exception:
            log.warning("connection quota check failed", exc_info=True)
            code, message = codes.OVER_CAPACITY, "Server cannot accept connections right now"
        else:
            if ok:
                return True
            code, message = codes.OVER_QUOTA, "Application is over connection quota"
        metrics.CONNECTIONS_REFUSED.labels(str(code)).inc()
        await send({"type": "websocket.send", "text": messages.error(message, code).decode()})
        await send({"type": "websocket.close", "code": code, "reason": message})
        return False

    def make_sink(self, send: Send, raw_send: Send | None = None) -> Sink:
        transport = transport_of(raw_send or send)
        if transport is not None:
            return TransportSink(transport, send, self.scheduler)
        return QueueSink(send)

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


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
