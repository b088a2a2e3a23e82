"""Herald's HTTP/1.1 connection protocol, plugged into uvicorn as its `http=` protocol class.

uvicorn still runs the process (sockets, signals, lifespan, shutdown); this class replaces its
per-connection HTTP protocol so that the three paths that carry load skip the layers they don't need:

* WebSocket upgrades to `/app/{key}` go straight to the gateway (gateway/endpoint.py), which answers
  the handshake itself: no ASGI scope, no Starlette routing, no `websockets` protocol objects;
* the hot HTTP API endpoints (`POST /apps/{id}/events` and `/batch_events`) call the trigger API's
  handler directly with the parsed request and write its answer (a status, headers and a body, so any
  status, 429 included, can be answered from there);
* everything else (health, readiness, metrics, the query endpoints) runs the ASGI app (Starlette)
  through a small ASGI adapter below.

Parsing is httptools (llhttp, C). Every request is bounded before any authentication: at most
`max_header_bytes` of request line and headers (431 past it), headers complete within
`header_timeout_s` of the first byte (408), the body within `body_timeout_s` of the headers (408),
at most `max_body_bytes` of body (413), and an idle keep-alive connection is closed after
`keep_alive_s`. One timer serves every connection's deadline (`Deadlines`), not one per connection.

The uvicorn interface used here is small and pinned (pyproject.toml): the protocol factory is called
with `config`, `server_state` and `app_state`; protocols register in `server_state.connections`,
tasks in `server_state.tasks`, and `shutdown()` is called on each at exit. tests/unit/test_uvicorn_contract.py
fails if that changes.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import time
import types
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import httptools
import orjson

from herald.backlog import Backlog

log = logging.getLogger("herald.http")

# Request line plus headers of one request; far above what any Pusher client or SDK sends.
MAX_HEADER_BYTES = 16 * 1024
# From the first byte of a request (or the connection's opening) to the end of its headers.
HEADER_TIMEOUT_S = 10.0
# From the end of the headers to the end of the body.
BODY_TIMEOUT_S = 30.0
# An idle keep-alive connection is closed after this long without a new request.
KEEP_ALIVE_S = 5.0
# Bodies of routes that take none (health, metrics, the gateway-only node) are cut off here.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# After an error answer (400, 408, 413, 431), input is read and dropped this long before the close.
LINGER_S = 2.0
# How often expired deadlines are looked for, at most (and never less than a quarter of a timeout).
DEADLINE_SWEEP_S = 0.5

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = MAX_HEADER_BYTES
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    keep_alive_s: float = KEEP_ALIVE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(slots=True)
class Request:
    """One complete request. `path` is percent-decoded, `raw_path` as sent; header names lowercased."""

    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: Headers
    body: bytes
    http_version: str


FastHandler = Callable[[Request], Awaitable[Answer]]
# (method, decoded path) -> the handler of a hot endpoint, or None for the ASGI app.
FastRoutes = Callable[[str, str], FastHandler | None]
# (transport, method, path, query, headers, bytes after the head) -> None if taken over, else why not.
Upgrade = Callable[[Any, str, str, str, Headers, bytes], str | None]


class Deadlines:
    """Connection deadlines checked by one repeating timer, instead of one timer handle per connection."""

    def __init__(self, granularity_s: float) -> None:
        self.granularity_s = granularity_s
        self._due: dict[HttpConnection, float] = {}
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, conn: HttpConnection, at: float) -> None:
        self._due[conn] = at
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.granularity_s, self._tick)

    def disarm(self, conn: HttpConnection) -> None:
        self._due.pop(conn, None)

    def _tick(self) -> None:
        now = time.monotonic()
        expired = [conn for conn, at in self._due.items() if at <= now]
        for conn in expired:
            del self._due[conn]
            conn.deadline_passed()
        self._handle = (asyncio.get_running_loop().call_later(self.granularity_s, self._tick)
                        if self._due else None)


class Site:
    """What one server answers: built once, shared by every connection's protocol object."""

    def __init__(self, app: Any, limits: HttpLimits, fast: FastRoutes | None = None,
                 upgrade: Upgrade | None = None, upgrade_prefix: str = "/app/", eager: bool = False) -> None:
        """`eager`: the fast handlers never wait on I/O (every store in memory), so they may run inside
        the callback that completed the request instead of in a task."""
        self.app = app
        self.limits = limits
        self.fast = fast
        self.eager = eager
        self.upgrade = upgrade
        self.upgrade_prefix = upgrade_prefix
        shortest = min(limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_s)
        self.deadlines = Deadlines(max(0.01, min(DEADLINE_SWEEP_S, shortest / 4)))
        self.backlog = Backlog()
        self._another: Callable[[], HttpConnection] | None = None
        self._default_src: object = None
        self._default_bytes = b""

    def protocol_factory(self) -> Callable[..., HttpConnection]:
        """The `http=` argument of uvicorn.Config."""
        return functools.partial(HttpConnection, site=self)

    def upgraded(self, conn: HttpConnection) -> None:
        """A WebSocket upgrade was handed over: the backlog takes whatever else waits, with the same
        protocol."""
        if self._another is None:
            self._another = functools.partial(HttpConnection, None, conn.server_state, conn.app_state, site=self)
        self.backlog.accepted(self._another)

    def default_headers(self, server_state: Any) -> bytes:
        """uvicorn's `date`/`server` headers, re-encoded only when uvicorn refreshes them (once a second)."""
        src = server_state.default_headers
        if src is not self._default_src:
            self._default_src = src
            self._default_bytes = b"".join(n + b": " + v + b"\r\n" for n, v in src)
        return self._default_bytes


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]

# _LINGER: answered with an error; reading (and discarding) on for LINGER_S so the client gets the answer
# before the close (closing with unread input would send a reset that can destroy it).
_HEAD, _BODY, _IDLE, _UPGRADE, _LINGER, _DEAD = range(6)


class _Stop(Exception):
    """Raised from a parser callback after the connection was answered and closed."""


class HttpConnection(asyncio.Protocol):
    __slots__ = ("app_state", "body", "body_size", "busy", "close_after", "disconnected", "head_budget", "headers",
                 "keep_alive", "limits", "parser", "phase", "pipeline", "server_state", "site", "transport", "url")

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, site: Site) -> None:
        self.site = site
        self.server_state = server_state
        self.app_state = app_state
        self.limits = site.limits
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.phase = _HEAD
        self.head_budget = site.limits.max_header_bytes
        self.url = b""
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.keep_alive = True
        self.busy = False
        self.close_after = False
        self.pipeline: deque[Request] | None = None
        self.disconnected: asyncio.Future[None] | None = None

    # -- transport events --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server_state.connections.add(self)
        self.site.deadlines.arm(self, time.monotonic() + self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.site.deadlines.disarm(self)
        self.phase = _DEAD
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.phase >= _UPGRADE:
            return
        if self.phase != _BODY:
            # Head bytes are counted before httptools sees them: it would buffer a long header line
            # whole before calling back.
            if self.phase == _IDLE:
                self.phase = _HEAD
                self.site.deadlines.arm(self, time.monotonic() + self.limits.header_timeout_s)
            budget = self.head_budget
            if len(data) > budget:
                self._feed(data[:budget])
                if self.phase == _HEAD:
                    self.refuse(431, "Request header fields too large")
                    return
                data = data[budget:]
            else:
                self.head_budget = budget - len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self.phase >= _UPGRADE or not data:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.phase == _UPGRADE:
                self._upgrade(data[upgrade.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                log.error("HTTP parser callback failed", exc_info=exc.__context__)
                self.refuse(500, "Internal server error")
        except httptools.HttpParserError:
            self.refuse(400, "Invalid HTTP request")

    def deadline_passed(self) -> None:
        if self.phase in (_IDLE, _LINGER) or self.busy:
            self.transport.close()
        elif self.phase == _HEAD:
            self.refuse(408, "Request headers not received in time")
        elif self.phase == _BODY:
            self.refuse(408, "Request body not received in time")

    def shutdown(self) -> None:
        """uvicorn's shutdown: finish the request in progress, then close."""
        if self.busy:
            self.close_after = True
        else:
            self.transport.close()

    # -- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.body_size = 0
        if self.phase == _IDLE:
            self.phase = _HEAD
            self.site.deadlines.arm(self, time.monotonic() + self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.keep_alive = parser.should_keep_alive()
        if parser.should_upgrade() and self.site.upgrade is not None:
            for name, value in self.headers:
                if name == b"upgrade" and value.lower() == b"websocket":
                    self.phase = _UPGRADE
                    self.site.deadlines.disarm(self)
                    return
        length = -1
        expect = False
        for name, value in self.headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if length > self.limits.max_body_bytes:
            self._too_large()
        if expect and not self.busy:  # curl waits for this before sending a body over 1 KiB
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.phase = _BODY
        self.site.deadlines.arm(self, time.monotonic() + self.limits.body_timeout_s)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body_bytes:
            self._too_large()
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.phase == _UPGRADE:
            return  # httptools raises HttpParserUpgrade next
        self.site.deadlines.disarm(self)
        self.phase = _IDLE
        self.head_budget = self.limits.max_header_bytes
        parsed = httptools.parse_url(self.url)
        raw_path: bytes = parsed.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        body = self.body
        request = Request(
            self.parser.get_method().decode("latin-1"), path, raw_path, parsed.query or b"", self.headers,
            body[0] if len(body) == 1 else b"".join(body), self.parser.get_http_version(),
        )
        if self.busy:  # pipelined: answered in order
            if self.pipeline is None:
                self.pipeline = deque()
            self.pipeline.append(request)
            self.transport.pause_reading()
            return
        self._dispatch(request)

    def _too_large(self) -> None:
        self.refuse(413, f"Request body is larger than {self.limits.max_body_bytes} bytes")
        raise _Stop

    # -- requests ----------------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        self.busy = True
        fast = self.site.fast(request.method, request.path) if self.site.fast is not None else None
        if fast is None:
            self._spawn(self._run_asgi(request))
        elif self.site.eager:
            # Everything in memory: the handler never waits, so it runs (and answers) right here,
            # without a task and a loop iteration; should it wait after all, a task carries it on.
            coro = self._run_fast(fast, request)
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return
            self._spawn(_carry_on(coro, waiting_on))
        else:
            self._spawn(self._run_fast(fast, request))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run_fast(self, handler: FastHandler, request: Request) -> None:
        try:
            status, headers, body = await handler(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            status, headers, body = 500, JSON_HEADERS, orjson.dumps({"error": "Internal server error",
                                                                     "code": 500})
        if self.phase < _LINGER:
            self.transport.write(self._head(status, headers, len(body)) + body)
        self._finished()

    def _head(self, status: int, headers: Sequence[tuple[bytes, bytes]], length: int | None,
              chunked: bool = False) -> bytes:
        parts = [STATUS_LINES.get(status) or _status_line(status), self.site.default_headers(self.server_state)]
        parts.extend(n + b": " + v + b"\r\n" for n, v in headers)
        if length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        elif chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive or self.close_after:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _finished(self) -> None:
        self.busy = False
        self.server_state.total_requests += 1
        if self.phase >= _LINGER:
            return
        if not self.keep_alive or self.close_after:
            self.transport.close()
            self.phase = _DEAD
            return
        if self.pipeline:
            request = self.pipeline.popleft()
            if not self.pipeline:
                self.transport.resume_reading()
            self._dispatch(request)
        elif self.phase == _IDLE:
            self.site.deadlines.arm(self, time.monotonic() + self.limits.keep_alive_s)

    def refuse(self, status: int, message: str) -> None:
        """Answer with a JSON error and close (limits, bad requests)."""
        if self.phase >= _LINGER:
            return
        self.keep_alive = False
        if self.busy:  # a response in progress can't be interleaved with another
            self.site.deadlines.disarm(self)
            self.phase = _DEAD
            self.transport.close()
            return
        body = orjson.dumps({"error": message, "code": status})
        self.transport.write(self._head(status, JSON_HEADERS, len(body)) + body)
        self.phase = _LINGER
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.site.deadlines.arm(self, time.monotonic() + LINGER_S)

    def _upgrade(self, rest: bytes) -> None:
        site = self.site
        parsed = httptools.parse_url(self.url)
        path = parsed.path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        method = self.parser.get_method().decode("latin-1")
        if site.upgrade is None or not path.startswith(site.upgrade_prefix):
            self.refuse(404, f"No WebSocket endpoint at {path[:100]}")
            return
        problem = site.upgrade(self.transport, method, path, (parsed.query or b"").decode("latin-1"),
                               self.headers, rest)
        if problem is not None:
            self.refuse(400, problem)
            return
        # The gateway owns the transport now (and registers the socket with the server).
        self.server_state.connections.discard(self)
        self.phase = _DEAD
        # A WebSocket arrived: more may be waiting in the listen backlog (a reconnect storm). Plain
        # HTTP requests don't look: a new connection per request would pay an extra accept call.
        site.upgraded(self)

    # -- the ASGI app, for everything that is not a hot path ---------------------------------------

    async def _run_asgi(self, request: Request) -> None:
        transport = self.transport
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "server": _address(transport.get_extra_info("sockname")),
            "client": _address(transport.get_extra_info("peername")),
            "scheme": "http",
            "method": request.method,
            "root_path": "",
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query,
            "headers": request.headers,
            "state": self.app_state.copy(),
        }
        head_only = request.method == "HEAD"
        body_read = False
        status = 0
        headers: Headers = []
        started = done = chunked = False

        async def receive() -> dict[str, Any]:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            if self.disconnected is None:
                self.disconnected = asyncio.get_running_loop().create_future()
                if self.phase >= _LINGER:
                    self.disconnected.set_result(None)
            await self.disconnected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers, started, done, chunked
            if self.phase >= _LINGER:
                return
            kind = message["type"]
            if kind == "http.response.start" and not started:
                status = message["status"]
                headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
                return
            if kind != "http.response.body" or done:
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not started:
                started = True
                known = any(n == b"content-length" for n, _ in headers)
                if known or not more:
                    length = None if known else len(body)
                    self.transport.write(self._head(status, headers, length) + (b"" if head_only else body))
                else:
                    chunked = True
                    self.transport.write(self._head(status, headers, None, chunked=True))
                    if body and not head_only:
                        self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            elif not head_only and body:
                self.transport.write(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
            if not more:
                done = True
                if chunked and not head_only:
                    self.transport.write(b"0\r\n\r\n")

        try:
            await self.site.app(scope, receive, send)
        except Exception:
            log.exception("ASGI app failed on %s %s", request.method, request.path)
            if not started and self.phase < _LINGER:
                body = b"Internal Server Error"
                self.keep_alive = False
                self.transport.write(self._head(500, [(b"content-type", b"text/plain")], len(body)) + body)
        else:
            if not started and self.phase < _LINGER:
                log.error("ASGI app returned without a response on %s %s", request.method, request.path)
                self.keep_alive = False
                self.transport.write(self._head(500, [], 0))
            elif not done:
                self.keep_alive = False  # an unfinished body: the connection can't be reused
        self._finished()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Drive a coroutine that already ran up to its first suspension, as `yield from` would: hand what
    it waits on to the task, pass results and exceptions (cancellation) back in."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coro.send(sent)
        except StopIteration:
            return


async def _carry_on(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    await _resume(coro, waiting_on)


def _address(addr: Any) -> tuple[str, int] | None:
    return (str(addr[0]), int(addr[1])) if isinstance(addr, tuple) and len(addr) >= 2 else None
