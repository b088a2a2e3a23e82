"""The WebSocket endpoint without a network: handshake checks (docs/protocol.md), the liveness sweep
(docs/protocol.md, "Liveness"), and the upgrade and socket driven over a recording transport."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

from gateway.admission import NodeAdmission
from gateway.endpoint import ADMISSIONS_PER_ITERATION, Gateway, Handshake
from shared.apps.config import AppConfig
from shared.apps.origins import OriginPolicy
from shared.apps.registry import AppRegistry, AppsUnavailable
from shared.protocol import codes
from tests.unit.fakes import Harness, ListSink, ManualClock, decode, make_app, make_connection, wait_until

APP = make_app(id="app-1", key="key-1", secret="secret-1")
OFF = make_app(id="app-off", key="key-off", secret="secret-off", enabled=False)
SMALL = make_app(id="app-small", key="key-small", secret="secret-small", max_connections=1)


def scope(key: str, query: bytes | None = b"protocol=7&client=js&version=8.4.0&flash=false") -> Handshake:
    """What the gateway's handshake check sees for `/app/{key}?{query}`."""
    return Handshake(key, (query or b"").decode("latin-1"), [(b"host", b"127.0.0.1")])


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


def with_origin(s: Handshake, origin: str | None) -> Handshake:
    s.headers = [(b"host", b"ws.example.com")] + ([(b"origin", origin.encode())] if origin else [])
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


# -- the upgrade and the socket, over a recording transport ------------------------------------

UPGRADE_HEADERS = [(b"host", b"127.0.0.1"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                   (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13")]


class Peer:
    """A client socket as the gateway sees it: a transport recording what Herald writes."""

    def __init__(self, gateway: Gateway, key: str, query: str) -> None:
        self.written = bytearray()
        self.protocol: Any = None
        self.closing = False
        problem = gateway.upgrade(self, "GET", f"/app/{key}", query, UPGRADE_HEADERS, b"")
        assert problem is None, problem

    # the transport interface the socket uses
    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    # what the test does and reads
    def client_says(self, message: dict[str, Any] | bytes, opcode: int = 0x1) -> None:
        payload = message if isinstance(message, bytes) else orjson.dumps(message)
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.protocol.data_received(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def frames(self) -> list[tuple[int, bytes]]:
        if not self.written:
            return []
        head, sep, rest = bytes(self.written).partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 101 "), head
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's example
        out = []
        while rest:
            n = rest[1]
            start = 2 if n < 126 else 4
            n = n if n < 126 else int.from_bytes(rest[2:4], "big")
            out.append((rest[0] & 0x0F, rest[start:start + n]))
            rest = rest[start + n:]
        return out

    def texts(self) -> list[dict[str, Any]]:
        return [orjson.loads(p) for op, p in self.frames() if op == 0x1]

    def close_frame(self) -> tuple[int, str] | None:
        for op, p in self.frames():
            if op == 0x8:
                return int.from_bytes(p[:2], "big"), p[2:].decode()
        return None


async def refused(gateway: Gateway, s: Handshake) -> Peer:
    peer = Peer(gateway, s.key, s.query)
    await wait_until(lambda: peer.close_frame() is not None)
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
    assert [op for op, _ in peer.frames()] == [0x1, 0x8]
    error = peer.texts()[0]
    assert error["event"] == "pusher:error"
    assert error["data"]["code"] == code
    assert peer.close_frame() == (code, error["data"]["message"])
    assert gateway.connections == {}


async def test_over_connection_quota_closes_4004(harness: Harness) -> None:
    gateway = make_gateway(harness)
    assert await harness.backend.connections.open(SMALL.id, "9.9", SMALL.max_connections)
    peer = await refused(gateway, scope("key-small"))
    assert peer.close_frame() == (4004, "Application is over connection quota")
    assert peer.texts()[0]["data"]["code"] == 4004
    assert await harness.backend.connections.count(SMALL.id) == 1


async def test_connection_lifecycle(harness: Harness) -> None:
    gateway = make_gateway(harness, activity_timeout_s=90)
    peer = Peer(gateway, "key-small", "protocol=7")
    await wait_until(lambda: len(peer.texts()) == 1)
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
    peer.client_says(b"\x00\x01", opcode=0x2)
    await wait_until(lambda: len(peer.texts()) == 4)
    assert peer.texts()[3]["data"]["code"] == 4200
    assert await harness.backend.occupancy.counts(SMALL.id, ["news"]) == [1]
    # A WebSocket ping is answered with a pong carrying its payload.
    peer.client_says(b"are you there", opcode=0x9)
    await wait_until(lambda: (0xA, b"are you there") in peer.frames())

    peer.close()  # the client goes away
    await wait_until(lambda: harness.hub.topics() == [])
    assert gateway.connections == {}
    await wait_until(lambda: not gateway.tasks)
    assert await harness.backend.connections.count(SMALL.id) == 0  # the quota slot is released
    assert await harness.backend.occupancy.counts(SMALL.id, ["news"]) == [0]


async def test_an_app_not_held_by_the_process_is_looked_up_on_upgrade(harness: Harness) -> None:
    """A key the registry doesn't hold (an apps database) is looked up in a task; a lookup that fails
    refuses with 4100, not 4001, so pusher-js retries."""

    class Lookup(AppRegistry):
        async def _missing_key(self, key: str) -> AppConfig | None:
            await asyncio.sleep(0)  # a database round trip
            if key == "key-db":
                return make_app(id="app-db", key="key-db", secret="s")
            raise AppsUnavailable("database down")

    gateway = Gateway(Lookup([]), harness.handler)
    found = Peer(gateway, "key-db", "protocol=7")
    await wait_until(lambda: len(found.texts()) == 1)
    assert found.texts()[0]["event"] == "pusher:connection_established"
    down = Peer(gateway, "key-other", "protocol=7")
    await wait_until(lambda: down.close_frame() is not None)
    assert down.close_frame() == (4100, "Application lookup unavailable; reconnect later")


async def test_an_app_without_a_quota_opens_without_counting(harness: Harness) -> None:
    """No connection limit, nothing to count: the socket opens in the admission batch, no store call."""
    gateway = make_gateway(harness)
    peer = Peer(gateway, "key-1", "protocol=7")
    await wait_until(lambda: len(peer.texts()) == 1)
    assert peer.texts()[0]["event"] == "pusher:connection_established"
    assert await harness.backend.connections.count(APP.id) == 0
    peer.close()
    await wait_until(lambda: not gateway.connections and not gateway.tasks)
    assert await harness.backend.connections.count(APP.id) == 0


async def test_a_connect_storm_is_admitted_in_bounded_batches_per_loop_iteration(harness: Harness) -> None:
    """Upgrades queue up; each event-loop iteration answers at most ADMISSIONS_PER_ITERATION of them, so
    the loop serves everything else (deliveries to open sockets) between batches."""
    gateway = make_gateway(harness)
    peers = [Peer(gateway, "key-1", "protocol=7") for _ in range(2 * ADMISSIONS_PER_ITERATION + 5)]
    assert not any(p.written for p in peers)  # nothing is answered inside upgrade() itself
    answered = []
    for _ in range(3):
        await asyncio.sleep(0)  # one loop iteration
        answered.append(sum(1 for p in peers if p.written))
    assert answered == [ADMISSIONS_PER_ITERATION, 2 * ADMISSIONS_PER_ITERATION, len(peers)]
    assert all(p.texts()[0]["event"] == "pusher:connection_established" for p in peers)


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
