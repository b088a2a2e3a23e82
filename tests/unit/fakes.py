"""Test doubles for network-free protocol tests: a recording sink, a manual clock, and a small
harness that wires a real backend and hub to a `ProtocolHandler` and feeds it client messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.connection import Connection
from gateway.frames import text_frame
from gateway.handler import ProtocolHandler
from gateway.hub import Hub
from shared.apps.config import AppConfig
from shared.backend import Backend, memory_backend
from shared.state.base import Occupancy

# Credentials and socket of the published signature test vectors (private, presence, sign-in).
VECTOR_KEY = "278d425bdf160c739803"
VECTOR_SECRET = "7ad3773142a6692b25b8"
VECTOR_SOCKET = "1234.1234"


class ListSink:
    """A `gateway.outbound.Sink` that records every frame as parsed JSON and every close.

    Like the real sinks it drops sends after `close()` (they are kept in `dropped` for inspection).
    When a caller hands over a pre-built `wire` frame it must be exactly the framed `payload`.
    """

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.closes: list[tuple[int, str]] = []

    def send(self, payload: bytes, wire: bytes | None = None) -> None:
        if wire is not None:
            assert wire == text_frame(payload), "wire frame does not match its payload"
        frame = orjson.loads(payload)
        assert isinstance(frame, dict), f"server frame is not a JSON object: {payload!r}"
        (self.dropped if self.closes else self.frames).append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    @property
    def closed(self) -> bool:
        return bool(self.closes)

    @property
    def close_args(self) -> tuple[int, str] | None:
        """The first close's (code, reason), or None while open."""
        return self.closes[0] if self.closes else None

    def events(self) -> list[str]:
        return [f["event"] for f in self.frames]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["event"] == event]

    def take(self) -> list[dict[str, Any]]:
        """Frames received since the last take, clearing them."""
        frames, self.frames = self.frames, []
        return frames


class ManualClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_app(**overrides: Any) -> AppConfig:
    values: dict[str, Any] = {"id": "app-1", "key": "key-1", "secret": "secret-1"}
    values.update(overrides)
    return AppConfig(**values)


def vector_app(**overrides: Any) -> AppConfig:
    """An app with the test vectors' key and secret."""
    return make_app(id="vector-app", key=VECTOR_KEY, secret=VECTOR_SECRET, **overrides)


def make_connection(app: AppConfig, socket_id: str, clock: ManualClock) -> tuple[Connection, ListSink]:
    sink = ListSink()
    return Connection(socket_id, app, sink, clock()), sink


def decode(data: Any) -> Any:
    """A server frame's `data` decoded the way pusher-js does (strings are tried as JSON)."""
    if isinstance(data, str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
    return data


@dataclass
class Client:
    """One connection fed by a test: what a pusher-js client would send, as text."""

    handler: ProtocolHandler
    conn: Connection
    sink: ListSink

    @property
    def socket_id(self) -> str:
        return self.conn.socket_id

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        text = message if isinstance(message, str | bytes) else orjson.dumps(message).decode()
        await self.handler.handle_text(self.conn, text)

    async def subscribe(
        self, channel: str, auth: str | None = "", channel_data: str | None = None
    ) -> None:
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send({"event": "pusher:subscribe", "data": data})

    async def unsubscribe(self, channel: str) -> None:
        await self.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    async def trigger(self, event: str, channel: str, data: Any = None) -> None:
        await self.send({"event": event, "channel": channel, "data": {} if data is None else data})

    async def close(self) -> None:
        await self.handler.handle_close(self.conn)


@dataclass
class Harness:
    """A real backend and hub behind one `ProtocolHandler`, with a manual clock."""

    backend: Backend = field(default_factory=memory_backend)
    clock: ManualClock = field(default_factory=ManualClock)
    hub: Hub = field(init=False)
    handler: ProtocolHandler = field(init=False)
    _next_socket: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        self.hub = Hub(self.backend.bus)
        self.handler = ProtocolHandler(self.backend, self.hub, self.clock)

    def connect(self, app: AppConfig, socket_id: str | None = None) -> Client:
        if socket_id is None:
            socket_id = f"{self._next_socket}.{self._next_socket}"
            self._next_socket += 1
        conn, sink = make_connection(app, socket_id, self.clock)
        return Client(self.handler, conn, sink)


class Gate:
    """Makes an awaited store call block until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def wait(self) -> None:
        self.entered.set()
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


class GatedOccupancy:
    """Wraps an OccupancyStore so that `add` waits on a gate: a subscription stays pending."""

    def __init__(self, inner: Any, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    async def add(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        await self.gate.wait()
        result: Occupancy = await self.inner.add(app_id, channel, socket_id)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FailingCall:
    """Wraps a store or bus so that one named coroutine method raises `exc`."""

    def __init__(self, inner: Any, method: str, exc: BaseException) -> None:
        self.inner = inner
        self.method = method
        self.exc = exc

    def __getattr__(self, name: str) -> Any:
        if name == self.method:
            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise self.exc

            return fail
        return getattr(self.inner, name)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> None:
    """Poll until `predicate()` holds (for asynchronous implementations such as a Redis bus)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def settle() -> None:
    """Let already-scheduled callbacks and tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)
