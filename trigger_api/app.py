"""Pusher's HTTP API as Starlette routes, and the standalone trigger-API service.

`build_routes` is what the all-in-one server mounts next to its WebSocket route; `create_app` is the
standalone service (routes plus `GET /` and `GET /ready`, backend started and closed in the lifespan).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from shared.backend import Backend
from shared.config import AppRegistry
from trigger_api.errors import json_response
from trigger_api.handlers import Clock, Endpoint, TriggerApi

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def build_routes(registry: AppRegistry, backend: Backend, *, clock: Clock = time.time) -> list[BaseRoute]:
    """The HTTP API routes; `clock` (Unix seconds) is injectable for signature-timestamp tests."""
    api = TriggerApi(registry, backend, clock)

    def route(path: str, name: str, endpoint: Endpoint) -> Route:
        # Every method reaches the endpoint so a wrong one gets a JSON 405, not Starlette's plain text.
        return Route(path, endpoint, methods=ALL_METHODS, name=f"pusher_{name}")

    return [
        route("/apps/{app_id}/events", "events", api.endpoint("events", {"POST": api.trigger})),
        route("/apps/{app_id}/batch_events", "batch_events",
              api.endpoint("batch_events", {"POST": api.trigger_batch})),
        route("/apps/{app_id}/channels", "channels", api.endpoint("channels", {"GET": api.channels})),
        route("/apps/{app_id}/channels/{channel_name}", "channel",
              api.endpoint("channel", {"GET": api.channel})),
        route("/apps/{app_id}/channels/{channel_name}/users", "users",
              api.endpoint("users", {"GET": api.users})),
        route("/apps/{app_id}/users/{user_id}/terminate_connections", "terminate_connections",
              api.endpoint("terminate_connections", {"POST": api.terminate_connections})),
        # pusher-http-python posts here without the /apps/{id} prefix; the app is found by auth_key.
        route("/users/{user_id}/terminate_connections", "terminate_connections_by_key",
              api.endpoint("terminate_connections", {"POST": api.terminate_connections}, app_in_path=False)),
        Route("/apps/{rest:path}", api.not_found, methods=ALL_METHODS, name="pusher_unknown"),
    ]


def create_app(registry: AppRegistry, backend: Backend, *, clock: Clock = time.time) -> Starlette:
    """The standalone trigger-API service."""

    async def root(request: Request) -> Response:
        return json_response({"ok": True})

    async def ready(request: Request) -> Response:
        return json_response({"ready": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await backend.close()

    routes: list[BaseRoute] = [
        Route("/", root, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        *build_routes(registry, backend, clock=clock),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
