"""Pusher's HTTP API as Starlette routes (docs/http-api.md), mounted by the process assembly
(`herald.server.Node`) for `herald trigger-api` and `herald serve`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, request_response
from starlette.types import Receive, Scope, Send

from shared.apps.registry import AppRegistry
from shared.backend import Backend
from shared.clock import Clock
from trigger_api.errors import error_response, json_response
from trigger_api.handlers import Endpoint, TriggerApi
from trigger_api.openapi import openapi_document

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class ConsoleSettings:
    """The debug console (docs/console.md): served only when enabled; `token` (optional) opens any app."""

    enabled: bool = False
    token: str | None = None


def build_routes(registry: AppRegistry, backend: Backend, *, clock: Clock = time.time,
                 api: TriggerApi | None = None, console: ConsoleSettings = ConsoleSettings()) -> list[BaseRoute]:
    """The HTTP API routes; `clock` (Unix seconds) is injectable for signature-timestamp tests. Pass
    `api` to share it with the hot-path handlers (`TriggerApi.fast_route`)."""
    api = api or TriggerApi(registry, backend, clock)
    extra: list[BaseRoute] = []
    if console.enabled:
        from trigger_api.console.routes import Console

        extra = Console(api, console.token).routes()

    def route(path: str, name: str, endpoint: Endpoint) -> Route:
        # Every method reaches the endpoint so a wrong one gets a JSON 405, not Starlette's plain text.
        return Route(path, endpoint, methods=ALL_METHODS, name=f"pusher_{name}")

    document = json_response(openapi_document())

    async def openapi(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, f"Method {request.method} not allowed here; use GET")
            response.headers["Allow"] = "GET"
            return response
        return document

    return [
        Route("/openapi.json", openapi, methods=ALL_METHODS, name="openapi"),
        *extra,
        route("/apps/{app_id}/events", "events", api.endpoint("events", {"POST": api.trigger})),
        route("/apps/{app_id}/batch_events", "batch_events",
              api.endpoint("batch_events", {"POST": api.trigger_batch})),
        route("/apps/{app_id}/channels", "channels", api.endpoint("channels", {"GET": api.channels})),
        route("/apps/{app_id}/channels/{channel_name}", "channel",
              api.endpoint("channel", {"GET": api.channel})),
        route("/apps/{app_id}/channels/{channel_name}/users", "users",
              api.endpoint("users", {"GET": api.users})),
        route("/apps/{app_id}/channels/{channel_name}/history", "history",
              api.endpoint("history", {"GET": api.history})),
        route("/apps/{app_id}/users/{user_id}/terminate_connections", "terminate_connections",
              api.endpoint("terminate_connections", {"POST": api.terminate_connections})),
        # pusher-http-python posts here without the /apps/{id} prefix; the app is found by auth_key.
        route("/users/{user_id}/terminate_connections", "terminate_connections_by_key",
              api.endpoint("terminate_connections", {"POST": api.terminate_connections}, app_in_path=False)),
        # Last: every other path (e.g. `/users//terminate_connections`) gets a JSON 404 too.
        AnyPath(api.not_found),
    ]


class AnyPath(BaseRoute):
    """Matches every HTTP request: a path pattern (`/{rest:path}`) misses paths with an encoded newline
    inside, which would then get Starlette's plain-text 404."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.app = request_response(endpoint)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return (Match.FULL, {}) if scope["type"] == "http" else (Match.NONE, {})

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
