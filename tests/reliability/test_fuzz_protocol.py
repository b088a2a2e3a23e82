"""Property-based fuzzing of the WebSocket protocol (hypothesis).

1. The socket-free protocol handler (tests/unit/fakes.py) driven by a state machine: several
   connections of two apps send generated messages, valid (signed subscriptions, presence with odd user
   ids, sign-ins, client events) and not (any JSON value, broken JSON, wrong types, binary frames).
   After every step: no internal error, every frame an object with an event name, no socket closed for
   bad input, channel counts and presence members equal to what the connections hold, every
   connection's roster (replayed from its frames, as pusher-js keeps it) equal to the state, and
   nothing of one app visible to another; when everyone has left, nothing is left behind.
2. A real `herald serve` fed generated frames (text with any bytes, binary, fragments, control frames,
   close codes, reserved bits) and messages: it never stops serving, and a connection it keeps open
   still answers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from shared.protocol.signatures import sign_channel, sign_user
from tests.helpers import HeraldProcess, running_herald
from tests.reliability.chaos import replay_roster
from tests.reliability.harness import size
from tests.reliability.rawsocket import RawSocket
from tests.unit.fakes import Client, Harness, make_app

APPS = [make_app(id="fz-a", key="fz-a-key", secret="fz-a-secret", enable_client_messages=True,
                 enable_user_authentication=False, max_channels_per_connection=4),
        make_app(id="fz-b", key="fz-b-key", secret="fz-b-secret", enable_client_messages=True)]
CHANNELS = ["pub", "private-a", "presence-a", "presence-b", "cache-a", "private-encrypted-a", "presence-cache-c"]
PRESENCE = [c for c in CHANNELS if c.startswith("presence-")]
USER_IDS = st.one_of(
    st.sampled_from(["alice", "bob", "ü", "a\nb", "1", "", " "]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
EVENT_NAMES = st.sampled_from(["pusher:ping", "pusher:pong", "pusher:subscribe", "pusher:unsubscribe",
                               "pusher:signin", "client-x", "client-", "pusher:nope", "", "x"]) | st.text(max_size=10)


@st.composite
def messages(draw: st.DrawFn, client: Client) -> str | bytes:
    """A frame's text: mostly protocol messages, valid or subtly not, sometimes anything at all."""
    app = client.conn.app
    kind = draw(st.integers(0, 19))
    if kind <= 9:  # a subscribe, mostly signed correctly
        channel = draw(st.sampled_from(CHANNELS)) if kind else draw(st.text(max_size=12))
        data: dict[str, Any] = {"channel": channel}
        channel_data = None
        if channel.startswith("presence-") and draw(st.integers(0, 9)):
            # Mostly one user per connection (so members come and go), sometimes anything.
            member: Any = {"user_id": draw(st.sampled_from([f"user-{client.socket_id}", client.socket_id, 7])
                                           | USER_IDS)}
            if draw(st.booleans()):
                member["user_info"] = draw(JSON_VALUES)
            channel_data = json.dumps(member) if draw(st.integers(0, 5)) else draw(st.text(max_size=10))
            data["channel_data"] = channel_data
        if draw(st.integers(0, 4)):
            data["auth"] = sign_channel(app.key, app.secret, client.socket_id, channel, channel_data)
        else:
            data["auth"] = draw(st.text(max_size=20))
        return json.dumps({"event": "pusher:subscribe", "data": data})
    if kind <= 13:
        return json.dumps({"event": "pusher:unsubscribe", "data": {"channel": draw(st.sampled_from(CHANNELS))}})
    if kind == 14:
        return json.dumps({"event": "client-" + draw(st.text(max_size=6)), "channel": draw(st.sampled_from(CHANNELS)),
                           "data": draw(JSON_VALUES)})
    if kind <= 16:
        user = {"id": draw(st.sampled_from(["u1", "u2", "u\n"]) | st.text(max_size=6)),
                "watchlist": draw(st.lists(st.sampled_from(["u1", "u2"]), max_size=2))}
        user_data = json.dumps(user)
        auth = sign_user(app.key, app.secret, client.socket_id, user_data) if draw(st.integers(0, 3)) else "x:y"
        return json.dumps({"event": "pusher:signin", "data": {"user_data": user_data, "auth": auth}})
    if kind == 17:
        return json.dumps({"event": draw(EVENT_NAMES), "data": draw(JSON_VALUES), "channel": draw(JSON_VALUES)})
    if kind == 18:
        return json.dumps(draw(JSON_VALUES))
    return draw(st.text(max_size=30) | st.binary(max_size=30).map(lambda b: b.decode("latin-1")))


SEEN: collections.Counter[str] = collections.Counter()


class ProtocolMachine(RuleBasedStateMachine):
    """Connections of two apps on one node, sending generated messages."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.harness = Harness()
        self.clients: list[Client] = []
        self.gone: list[Client] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @rule(app=st.sampled_from(APPS))
    @precondition(lambda self: len(self.clients) < 5)
    def connect(self, app: Any) -> None:
        self.clients.append(self.harness.connect(app))

    @rule(data=st.data())
    @precondition(lambda self: self.clients)
    def send(self, data: st.DataObject) -> None:
        """A few frames from connections: text (a message) or, now and then, binary."""
        for _ in range(data.draw(st.integers(1, 6))):
            client = data.draw(st.sampled_from(self.clients))
            if data.draw(st.integers(0, 19)):
                self.run(client.send(data.draw(messages(client))))
            else:
                client.handler.handle_binary(client.conn)
            self.harness.clock.advance(0.01)

    @rule(data=st.data())
    @precondition(lambda self: len(self.clients) > 2)
    def close(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.clients))
        self.run(client.close())
        self.clients.remove(client)
        self.gone.append(client)

    @invariant()
    def frames_are_sane(self) -> None:
        for client in self.clients + self.gone:
            for frame in client.sink.frames:
                assert isinstance(frame.get("event"), str) and frame["event"], frame
                if frame["event"] == "pusher:error":
                    assert frame["data"]["message"] != "Internal server error", frame
            assert not client.sink.closes, "a socket was closed for its input"

    @invariant()
    def state_matches_connections(self) -> None:
        for app in APPS:
            mine = [c for c in self.clients if c.conn.app is app]
            for channel in CHANNELS:
                inside = [c for c in mine if channel in c.conn.channels]
                assert self.run(self.harness.backend.occupancy.counts(app.id, [channel])) == [len(inside)]
                assert self.harness.hub.local_count(app.id, channel) == len(inside)
                if channel in PRESENCE:
                    members = self.run(self.harness.backend.presence.members(app.id, channel))
                    keys = {m.key for m in members}
                    assert keys == {c.conn.channels[channel].key for c in inside}  # type: ignore[union-attr]
                    for c in inside:
                        roster, problems = replay_roster(_wire(c), channel)
                        assert roster == keys, (c.socket_id, channel, roster, keys)
                        assert problems == [], problems

    def teardown(self) -> None:
        SEEN.update(f["event"] for c in self.clients + self.gone for f in c.sink.frames)
        try:
            for client in list(self.clients):
                self.run(client.close())
            for app in APPS:
                assert self.run(self.harness.backend.occupancy.channels(app.id)) == {}
                assert self.run(self.harness.backend.presence.user_counts(app.id, PRESENCE)) == [0] * len(PRESENCE)
            assert self.harness.hub.topics() == []
        finally:
            self.loop.close()


def _wire(client: Client) -> list[dict[str, Any]]:
    """The client's frames with `data` as the wire string (what replay_roster reads)."""
    out = []
    for f in client.sink.frames:
        data = f.get("data")
        out.append({**f, "data": data if isinstance(data, str) else json.dumps(data)})
    return out


def test_the_protocol_state_machine_holds_its_invariants_under_generated_messages() -> None:
    SEEN.clear()
    run_state_machine_as_test(ProtocolMachine, settings=settings(
        max_examples=size(100, 2000), stateful_step_count=size(30, 80), deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print(f"protocol state machine: frames sent back by kind {dict(SEEN.most_common(8))}")
    # The generated traffic reached the interesting paths, not only the error ones.
    assert {"pusher_internal:member_added", "pusher_internal:member_removed", "pusher:signin_success",
            "pusher:subscription_error"} <= set(SEEN)


# -- frames against a real process ------------------------------------------------------------------

OPCODES = {"text": 0x1, "binary": 0x2, "close": 0x8, "ping": 0x9, "pong": 0xA, "continuation": 0x0,
           "reserved": 0x3}


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One masked client frame, well-formed or not."""
    kind = draw(st.sampled_from(list(OPCODES)))
    if kind == "text":
        payload = draw(st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=200),
                                 st.just(b'{"event":"pusher:ping","data":{}}')))
    elif kind == "close":
        payload = struct.pack("!H", draw(st.integers(0, 5000))) + draw(st.binary(max_size=20))
    elif kind in ("ping", "pong"):
        payload = draw(st.binary(max_size=125))
    else:
        payload = draw(st.binary(max_size=300))
    fin = 0x80 if draw(st.integers(0, 6)) else 0
    rsv = draw(st.sampled_from([0, 0, 0, 0x40, 0x10]))
    head = bytes([fin | rsv | OPCODES[kind]])
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[HeraldProcess]:
    app = {"id": "97", "key": "fz-key", "secret": "fz-secret", "enable_client_messages": True}
    with running_herald(tmp_path, apps=[app]) as server:
        yield server


def test_generated_frames_never_stop_the_server(herald: HeraldProcess) -> None:
    answered = {"kept": 0, "closed": 0}

    async def once(sequence: list[bytes]) -> None:
        sock = await RawSocket.open(herald.port, "fz-key")
        assert (await sock.read_frame())["event"] == "pusher:connection_established"
        for frame in sequence:
            sock.writer.write(frame)
        sock.send({"event": "pusher:ping", "data": {}})
        with contextlib.suppress(ConnectionError):
            await sock.drain()
        while True:
            reply = await sock.read_frame(timeout=5)
            if reply is None:
                answered["closed"] += 1  # the server closed it (protocol error, invalid UTF-8, ...)
                break
            if reply.get("event") == "pusher:pong":
                answered["kept"] += 1
                break
        sock.close()
        probe = await RawSocket.open(herald.port, "fz-key")
        assert (await probe.read_frame())["event"] == "pusher:connection_established"
        probe.send({"event": "pusher:ping", "data": {}})
        assert (await probe.read_frame())["event"] == "pusher:pong"
        probe.close()

    @given(st.lists(frames(), min_size=1, max_size=6))
    @settings(max_examples=size(60, 1000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(sequence: list[bytes]) -> None:
        asyncio.run(once(sequence))

    check()
    assert herald.proc.poll() is None
    # Bad frames (invalid UTF-8 among them) are the client's problem: no traceback in the log.
    assert "Traceback" not in herald.log(), herald.log()[-3000:]
    print(f"generated frame sequences: {answered['kept']} connections kept and still answering, "
          f"{answered['closed']} closed by the server; it kept serving throughout, no traceback logged")


def test_json_of_every_shape_never_closes_a_connection(herald: HeraldProcess) -> None:
    async def once(values: list[Any]) -> None:
        sock = await RawSocket.open(herald.port, "fz-key")
        assert (await sock.read_frame())["event"] == "pusher:connection_established"
        for value in values:
            sock.send(json.dumps(value).encode())
        sock.send({"event": "pusher:ping", "data": {}})
        await sock.drain()
        while True:
            reply = await sock.read_frame(timeout=5)
            assert reply is not None, "the server closed a connection for a well-formed frame"
            assert isinstance(reply.get("event"), str)
            if reply["event"] == "pusher:pong":
                break
        sock.close()

    @given(st.lists(JSON_VALUES | st.builds(lambda e, d, c: {"event": e, "data": d, "channel": c},
                                            EVENT_NAMES, JSON_VALUES, JSON_VALUES), min_size=1, max_size=8))
    @settings(max_examples=size(60, 1000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(values: list[Any]) -> None:
        asyncio.run(once(values))

    check()
    assert "Traceback" not in herald.log(), herald.log()[-3000:]


