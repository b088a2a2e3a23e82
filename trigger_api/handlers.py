"""The HTTP API endpoints (docs/http-api.md).

Each endpoint is a handler `(ApiCall) -> JSON-able body`; `TriggerApi.endpoint` wraps it with method
dispatch, the body size cap, signature verification, error bodies and metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry, AppsUnavailable
from shared.backend import Backend
from shared.bus.base import BusUnavailable, Envelope, GuardFailed
from shared.clock import Clock
from shared.history.base import history_policy
from shared.history.publish import publish_channel_events
from shared.protocol.channels import channel_type
from shared.protocol.users import user_key
from shared.ratelimit.base import EVENTS, READS
from shared.state.base import ClusterResyncing
from trigger_api import validation as v
from trigger_api.auth import authenticate, parse_query, query_dict
from trigger_api.errors import ApiError, bad_request, error_body, error_response
from trigger_api.limits import check_rate
from trigger_api.metrics import count_published, count_request

log = logging.getLogger("herald.trigger_api")

# Far above any valid request (100 channels x 200 chars, or 10 events x 10 KiB of data).
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiCall:
    """A verified request: the app it acts on, its raw body, its query by lowercased name, path params,
    and the headers its response gets (the rate-limit headers of limited apps)."""

    app: AppConfig
    body: bytes
    query: Mapping[str, str]
    path: Mapping[str, str]
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[ApiCall], Awaitable[Any]]
Endpoint = Callable[[Request], Awaitable[Response]]
# (status, headers, body): what the HTTP layer writes.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
JSON_HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]


class HttpRequest(Protocol):
    """What the hot endpoints read of a request (herald/http.py's Request has these)."""

    method: str
    path: str
    raw_path: bytes
    query: bytes
    body: bytes


class TriggerApi:
    def __init__(self, registry: AppRegistry, backend: Backend, clock: Clock = time.time) -> None:
        self.registry = registry
        self.backend = backend
        self.clock = clock
        self._events_handlers: Mapping[str, Handler] = {"POST": self.trigger}
        self._batch_handlers: Mapping[str, Handler] = {"POST": self.trigger_batch}

    # -- plumbing ---------------------------------------------------------------------------------

    async def handle(self, name: str, handlers: Mapping[str, Handler], method: str, app_id: str | None,
                     paths: Sequence[str], query: str, path_params: Mapping[str, str], body: bytes) -> Answer:
        """One request whose body is read: method dispatch, signature, rate limits, handler, error bodies,
        metrics. Framework-free, so the hot endpoints run it straight from the HTTP layer (herald/http.py)."""
        started = time.perf_counter()
        headers: dict[str, str] | None = None
        try:
            handler = handlers.get(method)
            if handler is None:
                raise ApiError(405, f"Method {method} not allowed here; use {', '.join(handlers)}")
            params = parse_query(query)
            app = await authenticate(self.registry, app_id, method, paths, params, body, self.clock())
            call = ApiCall(app, body, query_dict(params), path_params)
            if method == "GET" and app.max_read_req_per_sec >= 0:
                await check_rate(self.backend.limits, app, READS, 1, call.headers)
            status, payload, headers = 200, orjson.dumps(await handler(call)), call.headers
        except ApiError as exc:
            status, payload, headers = exc.status, error_body(exc.status, exc.message), exc.headers
            if status == 405:
                headers = {**(headers or {}), "Allow": ", ".join(handlers)}
        except AppsUnavailable as exc:
            log.warning("HTTP API %s: %s", name, exc)
            status, payload = 503, error_body(503, "App configuration is unavailable, try again later")
        except ClusterResyncing as exc:  # after a Redis restart: no warning per request
            status, payload = 503, error_body(503, str(exc))
        except BusUnavailable as exc:  # StoreUnavailable too: the state stores are unreachable
            log.warning("HTTP API %s: backend unavailable: %s", name, exc)
            status, payload = 503, error_body(503, "Channel state is unavailable, try again later")
        except Exception:
            log.exception("HTTP API %s failed", name)
            status, payload = 500, error_body(500, "Internal server error")
        count_request(name, status, time.perf_counter() - started)
        if headers:
            return status, JSON_HEADERS + [(k.lower().encode(), v.encode()) for k, v in headers.items()], payload
        return status, JSON_HEADERS, payload

    def endpoint(self, name: str, handlers: Mapping[str, Handler], *, app_in_path: bool = True) -> Endpoint:
        """The Starlette endpoint for the routes that are not on the hot path."""

        async def run(request: Request) -> Response:
            try:
                body = await read_body(request)
            except ApiError as exc:
                count_request(name, exc.status)
                return error_response(exc.status, exc.message, exc.headers)
            status, headers, payload = await self.handle(
                name, handlers, request.method, request.path_params["app_id"] if app_in_path else None,
                request_paths(request), request.url.query, request.path_params, body,
            )
            return Response(payload, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

        return run

    def fast_route(self, method: str, path: str) -> Callable[[HttpRequest], Awaitable[Answer]] | None:
        """The handler of `POST /apps/{app_id}/events` or `/batch_events`, called by the HTTP layer
        without Starlette's routing and request objects; None for every other request."""
        if method != "POST" or not path.startswith("/apps/"):
            return None
        app_id, sep, tail = path[6:].partition("/")
        if not sep or not app_id:
            return None
        if tail == "events":
            return self._fast_events
        if tail == "batch_events":
            return self._fast_batch
        return None

    async def _fast_events(self, request: HttpRequest) -> Answer:
        return await self._fast("events", self._events_handlers, request)

    async def _fast_batch(self, request: HttpRequest) -> Answer:
        return await self._fast("batch_events", self._batch_handlers, request)

    async def _fast(self, name: str, handlers: Mapping[str, Handler], request: HttpRequest) -> Answer:
        app_id = request.path[6:].partition("/")[0]
        raw = request.raw_path.decode("latin-1")
        paths = (raw, request.path) if raw != request.path else (raw,)
        return await self.handle(name, handlers, request.method, app_id, paths, request.query.decode("latin-1"),
                                 {"app_id": app_id}, request.body)

    async def not_found(self, request: Request) -> Response:
        count_request("unknown", 404)
        return error_response(404, f"Unknown API endpoint: {request.method} {request.url.path}")

    async def publish(self, app: AppConfig, events: Sequence[v.EventSpec]) -> None:
        """Publish, or raise 503. The rule (docs/cluster.md, "Redis restarts"): an event
        acknowledged with 200 reaches every socket subscribed to its channel when it was accepted, so
        after a Redis restart nothing is acknowledged until the cluster has re-synced, and the publish
        is checked against Redis's boot in the same step (`NodeLease.publish_guard`)."""
        try:
            guard = self.backend.node.publish_guard()
        except ClusterResyncing as exc:
            raise ClusterResyncing(f"{exc} (nothing was published)") from None
        app_id = app.id
        now = time.time()
        envelopes = []
        for event in events:
            for channel in event.channels:
                if channel_type(channel).cache:
                    # Stored before publishing, so a client subscribing meanwhile gets it.
                    await self.backend.cache.put(app_id, channel, event.name, event.data, app.cache_ttl_s)
                envelopes.append(Envelope(app_id, channel, event.name, event.data, exclude=event.socket_id,
                                          origin=self.backend.node_id, ts=now))
        try:
            # One round trip for all channels of the request (up to 100, or a batch of 10).
            await publish_channel_events(self.backend, app, envelopes, guard)
        except GuardFailed:
            self.backend.node.boot_changed()
            raise ClusterResyncing("Redis restarted; the cluster is re-syncing, try again shortly "
                                   "(nothing was published)") from None
        except BusUnavailable as exc:
            log.warning("HTTP API publish failed for app %s: %s", app_id, exc)
            done = "an unknown number" if exc.sent is None else str(exc.sent)
            raise ApiError(
                503,
                f"The event bus is unavailable, try again later ({done} of {len(envelopes)} channel "
                f"deliveries were published before the failure)",
            ) from None
        count_published(app_id, len(envelopes))

    async def channel_attributes(
        self, app_id: str, queries: Sequence[tuple[Sequence[str], Sequence[str]]]
    ) -> list[dict[str, dict[str, int]]]:
        """For each (channels, attributes) query, `{channel: {attribute: n}}`; one store call per kind.

        user_count is computed for presence channels only and the others get no such key (docs/http-api.md,
        "Info attributes"); validation has already refused user_count where no channel of the query is a
        presence channel.
        """
        want_users = {c for chans, attrs in queries if v.USER_COUNT in attrs for c in chans
                      if channel_type(c).is_presence}
        want_subs = {c for chans, attrs in queries if v.SUBSCRIPTION_COUNT in attrs for c in chans}
        users: dict[str, int] = {}
        subs: dict[str, int] = {}
        if want_users:
            names = sorted(want_users)
            users = dict(zip(names, await self.backend.presence.user_counts(app_id, names), strict=True))
        if want_subs:
            names = sorted(want_subs)
            subs = dict(zip(names, await self.backend.occupancy.counts(app_id, names), strict=True))
        results = []
        for chans, attrs in queries:
            out: dict[str, dict[str, int]] = {}
            for c in chans:
                entry: dict[str, int] = {}
                if v.USER_COUNT in attrs and c in users:
                    entry[v.USER_COUNT] = users[c]
                if v.SUBSCRIPTION_COUNT in attrs:
                    entry[v.SUBSCRIPTION_COUNT] = subs[c]
                out[c] = entry
            results.append(out)
        return results

    # -- endpoints --------------------------------------------------------------------------------

    async def trigger(self, call: ApiCall) -> Any:
        app = call.app
        event = v.parse_event(v.parse_json_object(call.body), app)
        if app.max_backend_events_per_sec >= 0:  # unlimited apps (the default) skip the limiter
            await check_rate(self.backend.limits, app, EVENTS, len(event.channels), call.headers)
        # Attributes are read before publishing, so a failing store never leaves a published event
        # behind an error response the caller might retry.
        info = None
        if event.info:
            [info] = await self.channel_attributes(app.id, [(event.channels, event.info)])
        await self.publish(app, [event])
        return {"channels": info} if info is not None else {}

    async def trigger_batch(self, call: ApiCall) -> Any:
        app = call.app
        events = v.parse_batch(v.parse_json_object(call.body), app)
        if app.max_backend_events_per_sec >= 0:
            await check_rate(self.backend.limits, app, EVENTS, sum(len(e.channels) for e in events), call.headers)
        infos = None
        if any(e.info for e in events):
            per_item = await self.channel_attributes(app.id, [(e.channels, e.info) for e in events])
            infos = [item[e.channels[0]] if e.info else {} for e, item in zip(events, per_item, strict=True)]
        await self.publish(app, events)
        return {"batch": infos} if infos is not None else {}

    async def channels(self, call: ApiCall) -> Any:
        app = call.app
        prefix = call.query.get("filter_by_prefix", "")
        info = v.parse_info(call.query.get("info"), v.CHANNELS_INFO)
        if v.USER_COUNT in info and not prefix.startswith("presence-"):
            raise bad_request("info=user_count requires filter_by_prefix to start with 'presence-'")
        occupied = await self.backend.occupancy.channels(app.id, prefix)
        # Server-to-user channels are an implementation detail of user events, not app channels.
        names = sorted(c for c in occupied if not c.startswith("#"))
        if not info:
            await self.backend.node.confirm_synced()
            return {"channels": {c: {} for c in names}}
        [attrs] = await self.channel_attributes(app.id, [(names, info)])
        await self.backend.node.confirm_synced()
        return {"channels": attrs}

    async def channel(self, call: ApiCall) -> Any:
        app = call.app
        name = v.check_channel_name(call.path["channel_name"], app, "channel name")
        info = v.parse_info(call.query.get("info"), v.CHANNEL_INFO)
        kind = channel_type(name)
        if v.USER_COUNT in info:
            v.require_presence(name, "user_count")
        if v.CACHE in info and not kind.cache:
            raise bad_request(f"cache is only available for cache channels, not '{name}'")
        [subscriptions] = await self.backend.occupancy.counts(app.id, [name])
        out: dict[str, Any] = {"occupied": subscriptions > 0}
        if v.USER_COUNT in info:
            [out[v.USER_COUNT]] = await self.backend.presence.user_counts(app.id, [name])
        if v.SUBSCRIPTION_COUNT in info:
            out[v.SUBSCRIPTION_COUNT] = subscriptions
        if v.CACHE in info:
            cached = await self.backend.cache.get(app.id, name)
            out[v.CACHE] = None if cached is None else {"event": cached.event, "data": cached.data,
                                                        "ttl": cached.ttl_s}
        await self.backend.node.confirm_synced()
        return out

    async def users(self, call: ApiCall) -> Any:
        app = call.app
        name = v.check_channel_name(call.path["channel_name"], app, "channel name")
        v.require_presence(name, "the users list")
        members = await self.backend.presence.members(app.id, name)
        await self.backend.node.confirm_synced()
        return {"users": [{"id": user_key(m.user_id)} for m in members]}

    async def history(self, call: ApiCall) -> Any:
        """Herald extension (docs/history.md): a channel's kept events, after `since` or the latest."""
        app = call.app
        name = v.check_channel_name(call.path["channel_name"], app, "channel name")
        if history_policy(app, name) is None:
            raise ApiError(404, f"Channel '{name}' keeps no history (app settings history_size and "
                                "history_channel_prefixes; cache channels never do)")
        limit = v.parse_history_limit(call.query.get("limit"))
        since = v.parse_history_since(call.query.get("since"))
        if since is None:
            read = await self.backend.history.latest(app.id, name, limit)
            await self.backend.node.confirm_synced()
        else:
            read = await self.backend.history.read(app.id, name, since, limit)
            await self.backend.node.confirm_synced()
            if not read.continuous:
                raise ApiError(410, f"Position {since} is no longer in the history of '{name}' (trimmed, "
                                    f"or the history started over); the channel is now at {read.head or 'no history'}")
        return {
            "events": [{"event": e.event, "data": e.data, "position": e.position} for e in read.events],
            "position": read.head,
            "more": since is not None and not read.complete,
        }

    async def terminate_connections(self, call: ApiCall) -> Any:
        # The body carries no parameters (node sends `{}`, php a JSON string), so it is not parsed.
        app = call.app
        user_id = v.check_user_id(call.path["user_id"])
        # Every gateway holding a socket signed in as this user closes it with 4009.
        await self.backend.terminate_user(app.id, user_id)
        return {}


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def request_paths(request: Request) -> tuple[str, ...]:
    """The path as sent (raw, still percent-encoded) and, as an alternative, its decoded form."""
    raw = request.scope.get("raw_path")
    decoded: str = request.scope["path"]
    if isinstance(raw, bytes):
        return (raw.decode("latin-1"), decoded)
    return (decoded,)
