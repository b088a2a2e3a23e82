"""The debug console's HTTP side (docs/console.md), mounted by the trigger API with `--console`:

    GET  /console                the page (self-contained HTML, no build step)
    GET  /console/api/snapshot   connections, channels with occupancy, presence rosters (cluster-wide)
    GET  /console/api/stream     live records as server-sent events: API and client events, member
                                 changes, webhook requests
    POST /console/api/events     publish a test event ({"name", "channel", "data"}, as POST /events)

Every /console/api request carries the app's key and secret or the console token (access.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from shared.apps.config import AppConfig
from shared.apps.registry import AppsUnavailable
from shared.bus.base import BusUnavailable
from shared.protocol.channels import channel_type
from shared.ratelimit.base import EVENTS
from trigger_api import validation as v
from trigger_api.console.access import ConsoleAccess
from trigger_api.console.feeds import ConsoleFeeds
from trigger_api.errors import ApiError, error_response, json_response
from trigger_api.handlers import TriggerApi, read_body
from trigger_api.limits import check_rate

log = logging.getLogger("herald.console")

# The snapshot's bounds, so a page on a big app stays cheap for Redis and the browser.
MAX_CHANNELS = 500
MAX_ROSTERS = 25
MAX_MEMBERS_SHOWN = 100
# How long a new stream waits for its announcement to come back through the bus before saying live.
LIVE_TIMEOUT_S = 5.0
# A comment line this often keeps proxies from closing a quiet stream and finds closed pages.
KEEPALIVE_S = 15.0

PAGE = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
_SCRIPT = re.search(r"<script>(.*?)</script>", PAGE, re.S)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256((_SCRIPT.group(1) if _SCRIPT else "").encode()).digest()).decode()
PAGE_HEADERS = {
    # Only the page's own inline script runs, it talks only to this origin, and nobody can frame it.
    "Content-Security-Policy": f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; "
                               "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Console:
    def __init__(self, api: TriggerApi, token: str | None) -> None:
        self.api = api
        self.backend = api.backend
        self.access = ConsoleAccess(api.registry, token)
        self.feeds = ConsoleFeeds(api.backend)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/console", self.page, methods=["GET"]),
            Route("/console/api/snapshot", self.snapshot, methods=["GET"]),
            Route("/console/api/stream", self.stream, methods=["GET"]),
            Route("/console/api/events", self.trigger, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        return Response(PAGE, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def snapshot(self, request: Request) -> Response:
        try:
            app = await self.access.app_for(request)
            return json_response(await self.read_state(app), 200)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except (BusUnavailable, AppsUnavailable):
            return error_response(503, "Channel state is unavailable, try again later")

    async def read_state(self, app: AppConfig) -> dict[str, Any]:
        backend = self.backend
        # With a connection quota the store counts every connection; without one (no store call per
        # handshake) the gateways report their counts while the app is watched.
        reported = self.feeds.connections(app.id)
        connections = reported if reported is not None and app.max_connections < 0 else \
            await backend.connections.count(app.id)
        occupied = await backend.occupancy.channels(app.id)
        names = sorted((c for c in occupied if not c.startswith("#")), key=lambda c: (-occupied[c], c))
        shown = names[:MAX_CHANNELS]
        presence = [c for c in shown if channel_type(c).is_presence][:MAX_ROSTERS]
        rosters = {}
        for channel in presence:
            members = await backend.presence.members(app.id, channel)
            rosters[channel] = ([{"id": m.user_id, "info": m.user_info} for m in members[:MAX_MEMBERS_SHOWN]],
                                len(members))
        channels = []
        for name in shown:
            entry: dict[str, Any] = {"name": name, "type": channel_type(name).kind.value,
                                     "subscriptions": occupied[name]}
            if name in rosters:
                entry["members"], entry["user_count"] = rosters[name]
            channels.append(entry)
        return {"app_id": app.id, "connections": connections, "channels": channels,
                "channels_total": len(names)}

    async def stream(self, request: Request) -> Response:
        try:
            app = await self.access.app_for(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except AppsUnavailable:
            return error_response(503, "Apps are unavailable, try again later")

        async def lines() -> AsyncIterator[bytes]:
            # The feed opens inside the body, so whatever ends the response also closes it.
            yield sse({"kind": "hello", "app_id": app.id})
            try:
                feed = await self.feeds.open(app.id)
            except BusUnavailable:
                yield sse({"kind": "error", "message": "The event bus is unavailable; reload to retry"})
                return
            try:
                try:
                    await asyncio.wait_for(asyncio.shield(feed.live), LIVE_TIMEOUT_S)
                    yield sse({"kind": "live"})
                except TimeoutError:
                    yield sse({"kind": "not_live"})  # records may still come; the page says so
                while True:
                    try:
                        item = await asyncio.wait_for(feed.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    if feed.dropped:
                        yield sse({"kind": "dropped", "count": feed.dropped})
                        feed.dropped = 0
                    yield sse(item)
            finally:
                await self.feeds.close(feed)

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def trigger(self, request: Request) -> Response:
        try:
            app = await self.access.app_for(request)
            event = v.parse_event(v.parse_json_object(await read_body(request)), app)
            # A test event counts against the app's event rate like any other.
            await check_rate(self.backend.limits, app, EVENTS, len(event.channels), {})
            await self.api.publish(app, [event])
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except (BusUnavailable, AppsUnavailable):
            return error_response(503, "Channel state is unavailable, try again later")
        return json_response({"published": len(event.channels)})


def sse(item: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(item) + b"\n\n"
