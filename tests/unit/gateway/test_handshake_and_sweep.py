"""The WebSocket endpoint without a network: handshake checks (docs/protocol.md), the liveness
sweep (docs/protocol.md, "Liveness"), and the ASGI entry point driven by in-process receive/send callables."""

from __future__ import annotations

import asyncio
import re
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest

from gateway.admission import NodeAdmission
from gateway.endpoint import Gateway
from shared.apps.config import AppConfig
from shared.apps.origins import OriginPolicy
from shared.apps.registry import AppRegistry, AppsUnavailable
from shared.protocol import codes
from tests.unit.fakes import Harness, ListSink, ManualClock, decode, make_app, make_connection, wait_until

APP = make_app(id="app-1", key="key-1", secret="secret-1")
OFF = make_app(id="app-off", key="key-off", secret="secret-off", enabled=False)
SMALL = make_app(id="app-small", key="key-small", secret="secret-small", max_connections=1)


def scope(key: str, query: bytes | None = b"protocol=7&client=js&version=8.4.0&flash=false") -> dict[str, Any]:
    """What Starlette's router hands the endpoint for `/app/{key}?{query}`."""
    s: dict[str, Any] = {"type": "websocket", "path": f"/app/{key}", "path_params": {"key": key}}
    if query is not None:
        s["query_string"] = query
    return s


def make_gateway(harness: Harness, activity_timeout_s: int = 120) -> Gateway:
    return Gateway(AppRegistry([APP, OFF, SMALL]), harness.handler, activity_timeout_s=activity_timeout_s)


# -- handshake checks --------------------------------------------------------------------------


async def test_handshake_ok(harness: Harness) -> None:
    assert await make_gateway(harness).check_handshake(scope("key-1")) is None


@pytest.mark.parametrize("version", [b"4", b"5", b"6", b"7"])
async def test_supported_protocol_versions(harness: Harness, version: bytes) -> None:
    assert await make_gateway(harness).check_handshake(scope("key-1", b"protocol=" + version)) is None


async def test_unknown_query_parameters_are_ignored(harness: Harness) -> None:
    query = b"flash=false&protocol=7&client=some-sdk&version=0.0.1&whatever=1"
    assert await make_gateway(harness).check_handshake(scope("key-1", query)) is None


async def test_unknown_key(harness: Harness) -> None:
    assert await make_gateway(harness).check_handshake(scope("no-such-key")) == (
        None, 4001, "Application does not exist"
    )


async def test_disabled_app(harness: Harness) -> None:
    refusal = await make_gateway(harness).check_handshake(scope("key-off"))
    assert refusal is not None
    assert refusal[:2] == (OFF, 4003)
    assert refusal[2] == "Application disabled"


@pytest.mark.parametrize("version", [b"3", b"8", b"1", b"0", b"-7", b"abc", b"7.0", b"%37x"])
async def test_unsupported_protocol(harness: Harness, version: bytes) -> None:
    refusal = await make_gateway(harness).check_handshake(scope("key-1", b"protocol=" + version))
    assert refusal is not None
    assert refusal[1:] == (4007, "Unsupported protocol version")


@pytest.mark.parametrize("query", [None, b"", b"client=js&version=8.4.0", b"protocol="])
async def test_missing_protocol(harness: Harness, query: bytes | None) -> None:
    refusal = await make_gateway(harness).check_handshake(scope("key-1", query))
    assert refusal is not None
    assert refusal[1:] == (4008, "No protocol version supplied")


async def test_app_is_checked_before_protocol(harness: Harness) -> None:
    gateway = make_gateway(harness)
    unknown = await gateway.check_handshake(scope("no-such-key", b"protocol=3"))
    disabled = await gateway.check_handshake(scope("key-off", b"protocol=3"))
    assert unknown is not None and unknown[1] == 4001
    assert disabled is not None and disabled[1] == 4003


async def test_refuses_with_4100_while_shutting_down(harness: Harness) -> None:
    """4100 makes pusher-js back off (and land elsewhere) instead of retrying this node at once."""
    gateway = make_gateway(harness)
    gateway.accepting = False
    refusal = await gateway.check_handshake(scope("key-1"))
    assert refusal is not None and refusal[1] == 4100


def with_origin(s: dict[str, Any], origin: str | None) -> dict[str, Any]:
    s["headers"] = [(b"host", b"ws.example.com")] + ([(b"origin", origin.encode())] if origin else [])
    return s


@pytest.mark.parametrize(
    ("origin", "code"),
    [("https://app.example.com", None), ("https://eu.shop.example.org", None), ("https://evil.example", 4009),
     ("http://app.example.com", 4009), (None, 4009)],
)
async def test_origin_allow_list(harness: Harness, origin: str | None, code: int | None) -> None:
    guarded = make_app(id="guarded", key="key-guarded", allowed_origins=OriginPolicy(
        ["https://app.example.com", "https://*.example.org"]))
    gateway = Gateway(AppRegistry([guarded]), harness.handler)
    refusal = await gateway.check_handshake(with_origin(scope("key-guarded"), origin))
    assert (refusal[1:] if refusal else None) == ((code, "Origin not allowed") if code else None)


async def test_any_origin_without_an_allow_list(harness: Harness) -> None:
    assert await make_gateway(harness).check_handshake(with_origin(scope("key-1"), "https://x.example")) is None
    assert await make_gateway(harness).check_handshake(with_origin(scope("key-1"), None)) is None


async def test_node_connection_cap_refuses_with_4100(harness: Harness) -> None:
    gateway = Gateway(AppRegistry([APP]), harness.handler, admission=NodeAdmission(max_connections=2))
    assert await gateway.check_handshake(scope("key-1")) is None
    for socket_id in ("1.1", "1.2"):
        gateway.connections[socket_id] = make_connection(APP, socket_id, harness.clock)[0]
    refusal = await gateway.check_handshake(scope("key-1"))
    assert refusal is not None and refusal[1] == 4100 and "maximum of connections" in refusal[2]


async def test_node_connection_rate_refuses_with_4100(harness: Harness, clock: ManualClock) -> None:
    gateway = Gateway(AppRegistry([APP]), harness.handler, admission=NodeAdmission(max_rate=3, clock=clock))
    assert [await gateway.check_handshake(scope("key-1")) for _ in range(3)] == [None] * 3
    refusal = await gateway.check_handshake(scope("key-1"))
    assert refusal is not None and refusal[1] == 4100 and "too many new connections" in refusal[2]
    clock.advance(1 / 3)
    assert await gateway.check_handshake(scope("key-1")) is None


async def test_app_lookup_failure_refuses_with_4100(harness: Harness) -> None:
    """An apps database that can't answer must not look like an unknown key (4001: pusher-js gives up)."""

    class Unreachable(AppRegistry):
        async def _missing_key(self, key: str) -> AppConfig | None:
            raise AppsUnavailable("database down")

    refusal = await Gateway(Unreachable(), harness.handler).check_handshake(scope("key-1"))
    assert refusal is not None and refusal[1] == 4100


# -- the ASGI entry point ----------------------------------------------------------------------


class Peer:
    """The ASGI server side of one WebSocket: scripted receive(), recorded send()."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[MutableMapping[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    def client_says(self, message: dict[str, Any] | None = None, *, disconnect: bool = False) -> None:
        if disconnect:
            self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        else:
            self.incoming.put_nowait({"type": "websocket.receive", "text": orjson.dumps(message).decode()})

    def texts(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]


async def refused(gateway: Gateway, s: dict[str, Any]) -> Peer:
    peer = Peer()
    peer.incoming.put_nowait({"type": "websocket.connect"})
    await gateway(s, peer.receive, peer.send)
    return peer


@pytest.mark.parametrize(
    ("key", "query", "code"),
    [("no-such-key", b"protocol=7", 4001), ("key-off", b"protocol=7", 4003),
     ("key-1", b"protocol=8", 4007), ("key-1", b"", 4008)],
)
async def test_refusal_accepts_then_sends_error_then_closes(
    harness: Harness, key: str, query: bytes, code: int
) -> None:
    gateway = make_gateway(harness)
    peer = await refused(gateway, scope(key, query))
    assert [m["type"] for m in peer.sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    error = orjson.loads(peer.sent[1]["text"])
    assert error["event"] == "pusher:error"
    assert error["data"]["code"] == code
    assert peer.sent[2]["code"] == code
    assert peer.sent[2]["reason"] == error["data"]["message"]
    assert gateway.connections == {}


async def test_over_connection_quota_closes_4004(harness: Harness) -> None:
    gateway = make_gateway(harness)
    assert await harness.backend.connections.open(SMALL.id, "9.9", SMALL.max_connections)
    peer = await refused(gateway, scope("key-small"))
    assert peer.sent[-1]["type"] == "websocket.close"
    assert peer.sent[-1]["code"] == 4004
    assert peer.texts()[0]["data"]["code"] == 4004
    assert await harness.backend.connections.count(SMALL.id) == 1


async def test_connection_lifecycle(harness: Harness) -> None:
    gateway = make_gateway(harness, activity_timeout_s=90)
    peer = Peer()
    peer.incoming.put_nowait({"type": "websocket.connect"})
    task = asyncio.create_task(gateway(scope("key-small"), peer.receive, peer.send))
    await wait_until(lambda: len(peer.texts()) == 1)
    assert peer.sent[0] == {"type": "websocket.accept"}
    established = peer.texts()[0]
    assert established["event"] == "pusher:connection_established"
    assert "channel" not in established
    assert isinstance(established["data"], str)
    info = decode(established["data"])
    assert re.fullmatch(r"\d+\.\d+", info["socket_id"])
    assert info["activity_timeout"] == 90
    assert list(gateway.connections) == [info["socket_id"]]
    assert await harness.backend.connections.count(SMALL.id) == 1

    peer.client_says({"event": "pusher:ping", "data": {}})
    peer.client_says({"event": "pusher:subscribe", "data": {"channel": "news", "auth": ""}})
    await wait_until(lambda: len(peer.texts()) == 3)
    assert [t["event"] for t in peer.texts()[1:]] == ["pusher:pong", "pusher_internal:subscription_succeeded"]
    peer.incoming.put_nowait({"type": "websocket.receive", "bytes": b"\x00\x01"})
    await wait_until(lambda: len(peer.texts()) == 4)
    assert peer.texts()[3]["data"]["code"] == 4200
    assert await harness.backend.occupancy.counts(SMALL.id, ["news"]) == [1]

    peer.client_says(disconnect=True)
    await asyncio.wait_for(task, 5)
    assert gateway.connections == {}
    assert await harness.backend.connections.count(SMALL.id) == 0  # the quota slot is released
    assert await harness.backend.occupancy.counts(SMALL.id, ["news"]) == [0]
    assert harness.hub.topics() == []


# -- liveness sweep ----------------------------------------------------------------------------


PING = {"event": "pusher:ping", "data": "{}"}


def watched(harness: Harness, gateway: Gateway, socket_id: str, app: AppConfig = APP) -> ListSink:
    conn, sink = make_connection(app, socket_id, harness.clock)
    gateway.connections[socket_id] = conn
    return sink


async def test_silent_connection_is_pinged_then_closed(harness: Harness, clock: ManualClock) -> None:
    gateway = make_gateway(harness, activity_timeout_s=120)
    sink = watched(harness, gateway, "1.1")
    start = clock()
    gateway.sweep(start + 119.9, 30)
    assert sink.frames == []
    gateway.sweep(start + 120, 30)
    assert sink.take() == [PING]
    # Only one ping while waiting for the reply.
    gateway.sweep(start + 130, 30)
    gateway.sweep(start + 149.9, 30)
    assert sink.frames == [] and not sink.closed
    gateway.sweep(start + 150, 30)
    frames = sink.take()
    assert len(frames) == 1
    assert frames[0]["event"] == "pusher:error"
    assert frames[0]["data"]["code"] == 4201
    assert sink.close_args == (4201, "Pong reply not received")


async def test_any_message_after_the_ping_resets_liveness(harness: Harness, clock: ManualClock) -> None:
    gateway = make_gateway(harness, activity_timeout_s=120)
    sink = watched(harness, gateway, "1.1")
    conn = gateway.connections["1.1"]
    start = clock()
    gateway.sweep(start + 120, 30)
    assert sink.take() == [PING]
    clock.advance(125)
    await harness.handler.handle_text(conn, '{"event":"pusher:pong","data":{}}')
    gateway.sweep(start + 150, 30)
    gateway.sweep(start + 244, 30)
    assert sink.frames == [] and not sink.closed
    # The next ping comes a full activity timeout after that message.
    gateway.sweep(start + 245, 30)
    assert sink.take() == [PING]
    clock.advance(130)  # now start + 255
    await harness.handler.handle_text(conn, '{"event":"pusher:subscribe","data":{"channel":"x"}}')
    gateway.sweep(start + 280, 30)
    assert sink.events() == ["pusher_internal:subscription_succeeded"]
    assert not sink.closed


async def test_sweep_only_touches_silent_connections(harness: Harness, clock: ManualClock) -> None:
    gateway = make_gateway(harness, activity_timeout_s=60)
    quiet = watched(harness, gateway, "1.1")
    chatty = watched(harness, gateway, "2.2")
    start = clock()
    for step in range(1, 8):
        clock.now = start + step * 20
        await harness.handler.handle_text(gateway.connections["2.2"], '{"event":"pusher:ping","data":{}}')
        gateway.sweep(clock(), 30)
    assert chatty.events() == ["pusher:pong"] * 7 and not chatty.closed
    assert quiet.events() == ["pusher:ping", "pusher:error"]
    assert quiet.close_args == (codes.PONG_NOT_RECEIVED, "Pong reply not received")


async def test_pong_timeout_is_a_parameter(harness: Harness, clock: ManualClock) -> None:
    gateway = make_gateway(harness, activity_timeout_s=10)
    sink = watched(harness, gateway, "1.1")
    start = clock()
    gateway.sweep(start + 10, 2)
    gateway.sweep(start + 11.9, 2)
    assert sink.events() == ["pusher:ping"] and not sink.closed
    gateway.sweep(start + 12, 2)
    assert sink.close_args is not None and sink.close_args[0] == 4201
