"""Positions on the wire and `herald:recover` (gateway/recovery.py), on the protocol handler with the
in-memory backend: a `Harness` is one gateway node; two harnesses on one backend are two nodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import recovery
from gateway.replay_cache import ReplayCache
from shared.apps.config import AppConfig
from shared.backend import Backend, memory_backend
from shared.bus.base import Envelope
from shared.history.base import offset_of, parse_position
from shared.history.memory_impl import MemoryHistoryStore
from shared.history.publish import publish_channel_events
from shared.state.base import StoreUnavailable
from tests.unit.fakes import Client, FailingCall, Gate, Harness, decode, make_app, settle

APP = make_app(id="h-app", key="h-key", secret="h-secret", history_size=50, history_channel_prefixes=("room-",))
PLAIN = make_app(id="p-app", key="p-key", secret="p-secret")


async def publish(backend: Backend, channel: str, count: int, app: AppConfig = APP, exclude: str | None = None,
                  start: int = 0) -> list[Envelope]:
    sent = []
    for i in range(start, start + count):
        envelope = Envelope(app.id, channel, "msg", f'{{"n":{i}}}', exclude=exclude)
        await publish_channel_events(backend, app, [envelope])
        sent.append(envelope)
    await settle()
    return sent


async def subscribed(harness: Harness, channel: str, app: AppConfig = APP) -> tuple[Client, dict[str, Any]]:
    client = harness.connect(app)
    await client.subscribe(channel)
    [success] = client.sink.of("pusher_internal:subscription_succeeded")
    client.sink.take()
    return client, success


async def recover(client: Client, channel: str, position: str | None, **extra: Any) -> list[dict[str, Any]]:
    await client.send({"event": "herald:recover", "channel": channel, "data": {"position": position, **extra}})
    await settle()
    return client.sink.take()


def count_reads(backend: Backend) -> list[tuple[Any, ...]]:
    """Record the history store's reads from now on."""
    store = backend.history
    assert isinstance(store, MemoryHistoryStore)
    read = store.read
    calls: list[tuple[Any, ...]] = []

    async def counted(*args: Any) -> Any:
        calls.append(args)
        return await read(*args)

    store.read = counted  # type: ignore[method-assign]
    return calls


def answer(frames: list[dict[str, Any]]) -> dict[str, Any]:
    answers = [f for f in frames if f["event"] == "pusher_internal:herald_recovered"]
    assert len(answers) == 1, frames
    data: dict[str, Any] = decode(answers[0]["data"])
    return data


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [decode(f["data"])["n"] for f in frames if f["event"] == "msg"]


def offsets(frames: list[dict[str, Any]]) -> list[int]:
    return [offset_of(f["position"]) for f in frames if f["event"] == "msg"]


# -- positions on the wire ---------------------------------------------------------------------------


async def test_subscription_succeeded_says_where_the_subscription_starts(harness: Harness) -> None:
    _, first = await subscribed(harness, "room-1")
    epoch, offset = parse_position(first["position"]) or ("", -1)
    assert offset == 0
    sent = await publish(harness.backend, "room-1", 2)
    _, later = await subscribed(harness, "room-1")
    assert later["position"] == sent[-1].position == f"{epoch}-2"
    # Channels and apps without history: the frame is Pusher's, unchanged.
    _, other = await subscribed(harness, "news")
    _, plain = await subscribed(harness, "room-1", PLAIN)
    assert "position" not in other and "position" not in plain


async def test_live_events_carry_positions_and_the_excluded_socket_gets_a_marker(harness: Harness) -> None:
    a, _ = await subscribed(harness, "room-1")
    b, _ = await subscribed(harness, "room-1")
    [e1] = await publish(harness.backend, "room-1", 1)
    [e2] = await publish(harness.backend, "room-1", 1, exclude=a.socket_id)
    assert [(f["event"], f.get("position")) for f in a.sink.take()] == [
        ("msg", e1.position), ("pusher_internal:herald_skipped", e2.position)]
    assert [(f["event"], f["position"]) for f in b.sink.take()] == [("msg", e1.position), ("msg", e2.position)]
    await publish(harness.backend, "room-1", 1, PLAIN)
    c, _ = await subscribed(harness, "room-1", PLAIN)
    await publish(harness.backend, "room-1", 1, PLAIN, exclude="9.9")
    [plain] = c.sink.take()
    assert "position" not in plain


# -- recovering --------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["same node (replay cache)", "another node (history store)"])
async def test_missed_events_are_replayed_in_order_then_answered(harness: Harness, node: str) -> None:
    client, _ = await subscribed(harness, "room-1")
    await subscribed(harness, "room-1")  # another socket keeps the node in the channel
    seen = await publish(harness.backend, "room-1", 3)
    assert offsets(client.sink.take()) == [1, 2, 3]
    await client.close()  # the connection drops; events go on
    missed = await publish(harness.backend, "room-1", 4, start=3)

    other = Harness(backend=harness.backend) if node.startswith("another") else harness
    again, success = await subscribed(other, "room-1")
    assert success["position"] == missed[-1].position
    reads = count_reads(harness.backend)
    frames = await recover(again, "room-1", seen[-1].position)
    # The node that delivered the events live replays its own frames; another node reads the store.
    assert len(reads) == (0 if other is harness else 1)
    assert numbers(frames) == [3, 4, 5, 6]
    assert [f.get("position") for f in frames[:4]] == [e.position for e in missed]
    assert frames[-1]["event"] == "pusher_internal:herald_recovered"
    assert answer(frames) == {"recovered": True, "count": 4, "position": missed[-1].position}
    # Live delivery goes on after it.
    await publish(harness.backend, "room-1", 1, start=7)
    assert offsets(again.sink.take()) == [8]


async def test_nothing_missed_is_an_empty_recovery(harness: Harness) -> None:
    client, success = await subscribed(harness, "room-1")
    assert answer(await recover(client, "room-1", success["position"])) == {
        "recovered": True, "count": 0, "position": success["position"]}


async def test_live_events_racing_the_read_are_neither_lost_nor_doubled() -> None:
    backend = memory_backend()
    node = Harness(backend=backend)
    client, _ = await subscribed(node, "room-1")
    [seen] = await publish(backend, "room-1", 1)
    client.sink.take()
    await publish(backend, "room-1", 3, start=1)  # missed while "away"
    # A fresh node (no cache) whose history read waits until more events were published.
    other = Harness(backend=backend)
    again, _ = await subscribed(other, "room-1")
    gate = Gate()
    store = backend.history
    assert isinstance(store, MemoryHistoryStore)
    read = store.read

    async def slow_read(*args: Any) -> Any:
        await gate.wait()
        return await read(*args)

    store.read = slow_read  # type: ignore[method-assign]
    task = asyncio.create_task(recover(again, "room-1", seen.position))
    await gate.entered.wait()
    await publish(backend, "room-1", 2, start=4)  # held for the socket, and in the history too
    assert again.sink.frames == []
    gate.open()
    frames = await task
    assert numbers(frames) == [1, 2, 3, 4, 5]
    assert answer(frames)["count"] == 5
    assert offsets(frames) == [2, 3, 4, 5, 6]


async def test_a_position_no_longer_in_history_recovers_nothing(harness: Harness) -> None:
    client, _ = await subscribed(harness, "room-1")
    sent = await publish(harness.backend, "room-1", 60)  # history_size 50 keeps 11..60
    client.sink.take()
    other = Harness(backend=harness.backend)  # no cache on this node
    again, _ = await subscribed(other, "room-1")
    frames = await recover(again, "room-1", sent[5].position)
    assert numbers(frames) == []
    assert answer(frames) == {"recovered": False, "count": 0, "position": sent[-1].position,
                              "reason": "history_lost"}
    epoch = (parse_position(sent[0].position) or ("", 0))[0]
    for stale in (f"{int(epoch) % 1000 + 1}-10", f"{epoch}-61"):
        assert answer(await recover(again, "room-1", stale))["reason"] == "history_lost"


async def test_refusals(harness: Harness) -> None:
    client, success = await subscribed(harness, "news")
    assert answer(await recover(client, "news", "1-1")) == {
        "recovered": False, "count": 0, "position": None, "reason": "no_history"}
    room, success = await subscribed(harness, "room-1")
    assert answer(await recover(room, "room-1", None)) == {
        "recovered": False, "count": 0, "position": success["position"], "reason": "no_position"}
    # Malformed requests are protocol errors.
    for data, fragment in [({"position": "nope"}, "position"), ({"position": "1-1"}, "not subscribed")]:
        channel = "room-1" if "nope" in str(data) else "room-2"
        [error] = await recover(room, channel, **data)
        assert error["event"] == "pusher:error" and fragment in error["data"]["message"], error
    await room.send({"event": "herald:recover", "data": {}})
    assert room.sink.take()[0]["event"] == "pusher:error"


async def test_too_many_missed_events_recover_nothing(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "MAX_REPLAY_EVENTS", 3)
    client, success = await subscribed(harness, "room-1")
    await publish(harness.backend, "room-1", 4)
    client.sink.take()
    for node in (harness, Harness(backend=harness.backend)):  # from the cache and from the store
        again, _ = await subscribed(node, "room-1")
        assert answer(await recover(again, "room-1", success["position"]))["reason"] == "too_many"


async def test_requests_are_rate_limited_per_socket(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    client, success = await subscribed(harness, "room-1")
    allowed = recovery.BUDGET_EVENTS // recovery.REQUEST_COST
    for _ in range(allowed):
        assert answer(await recover(client, "room-1", success["position"]))["recovered"] is True
    assert answer(await recover(client, "room-1", success["position"]))["reason"] == "rate_limited"
    harness.clock.advance(1.0)  # the budget refills
    assert answer(await recover(client, "room-1", success["position"]))["recovered"] is True
    other, _ = await subscribed(harness, "room-1")  # budgets are per socket
    assert answer(await recover(other, "room-1", success["position"]))["recovered"] is True


async def test_events_excluded_for_the_client_are_not_replayed(harness: Harness) -> None:
    client, success = await subscribed(harness, "room-1")
    old_socket = client.socket_id
    await client.close()
    await publish(harness.backend, "room-1", 1)
    await publish(harness.backend, "room-1", 1, exclude=old_socket, start=1)  # its own message
    await publish(harness.backend, "room-1", 1, exclude="77.77", start=2)  # someone else's
    again, _ = await subscribed(harness, "room-1")
    frames = await recover(again, "room-1", success["position"], socket_ids=[old_socket, "junk"])
    assert numbers(frames) == [0, 2]
    assert answer(frames)["count"] == 2 and offset_of(answer(frames)["position"]) == 3
    # Without naming the old socket it gets everything.
    third, _ = await subscribed(harness, "room-1")
    assert numbers(await recover(third, "room-1", success["position"])) == [0, 1, 2]


async def test_a_second_recovery_of_the_same_channel_while_one_runs_is_busy() -> None:
    backend = memory_backend()
    node = Harness(backend=backend)
    _, success = await subscribed(node, "room-1")
    await publish(backend, "room-1", 2)
    fresh = Harness(backend=backend)
    again, _ = await subscribed(fresh, "room-1")
    gate = Gate()
    store = backend.history
    assert isinstance(store, MemoryHistoryStore)
    read = store.read

    async def slow_read(*args: Any) -> Any:
        await gate.wait()
        return await read(*args)

    store.read = slow_read  # type: ignore[method-assign]
    first = asyncio.create_task(recover(again, "room-1", success["position"]))
    await gate.entered.wait()
    await again.send({"event": "herald:recover", "channel": "room-1", "data": {"position": success["position"]}})
    assert decode(again.sink.take()[0]["data"])["reason"] == "busy"
    gate.open()
    assert answer(await first)["count"] == 2


async def test_unsubscribing_during_a_recovery_sends_nothing_more() -> None:
    backend = memory_backend()
    _, success = await subscribed(Harness(backend=backend), "room-1")
    await publish(backend, "room-1", 2)
    fresh = Harness(backend=backend)
    again, _ = await subscribed(fresh, "room-1")
    gate = Gate()
    store = backend.history
    assert isinstance(store, MemoryHistoryStore)
    read = store.read

    async def slow_read(*args: Any) -> Any:
        await gate.wait()
        return await read(*args)

    store.read = slow_read  # type: ignore[method-assign]
    task = asyncio.create_task(recover(again, "room-1", success["position"]))
    await gate.entered.wait()
    await again.unsubscribe("room-1")
    gate.open()
    assert await task == []
    assert fresh.hub.topics() == []


# -- the replay cache --------------------------------------------------------------------------------


def frame(n: int) -> tuple[bytes, bytes, str | None]:
    return (b"p%d" % n, b"w%d" % n, None)


def test_replay_cache_keeps_a_contiguous_run_and_restarts_it_on_a_gap() -> None:
    cache = ReplayCache(per_channel=4)
    topic = ("a", "c")
    for n in range(1, 4):
        cache.add(topic, f"9-{n}", frame(n))
    assert cache.after(topic, "9", 0) == [frame(1), frame(2), frame(3)]
    assert cache.after(topic, "9", 3) == []
    assert cache.after(topic, "9", 4) is None and cache.after(topic, "8", 1) is None
    cache.add(topic, "9-2", frame(2))  # an old one: ignored
    cache.add(topic, "9-6", frame(6))  # 4 and 5 never arrived: the run starts again
    assert cache.after(topic, "9", 3) is None and cache.after(topic, "9", 5) == [frame(6)]
    for n in range(7, 12):
        cache.add(topic, f"9-{n}", frame(n))
    assert cache.newest(topic) == ("9", 11) and cache.after(topic, "9", 6) is None  # trimmed to 4
    cache.add(topic, "5-1", frame(1))  # a new epoch
    assert cache.after(topic, "9", 10) is None and cache.after(topic, "5", 0) == [frame(1)]


def test_replay_cache_merges_reads_and_evicts_by_bytes() -> None:
    cache = ReplayCache(per_channel=100, max_bytes=20)
    topic = ("a", "c")
    cache.add(topic, "9-5", frame(5))
    cache.fill(topic, "9", 2, [frame(2), frame(3), frame(4), frame(5)])
    assert cache.after(topic, "9", 1) == [frame(2), frame(3), frame(4), frame(5)]
    cache.fill(topic, "9", 5, [frame(5), frame(6)])
    assert cache.newest(topic) == ("9", 6)
    cache.fill(topic, "9", 20, [frame(20)])  # later and apart: replaces
    assert cache.after(topic, "9", 1) is None and cache.after(topic, "9", 19) == [frame(20)]
    for i, other in enumerate(("x", "y", "z", "w", "v")):
        cache.add(("a", other), "1-1", frame(i))
    assert cache.size_bytes <= 20
    assert cache.after(topic, "9", 19) is None  # least recently used went first
    cache.drop(("a", "v"))
    assert cache.after(("a", "v"), "1", 0) is None


async def test_sockets_recovering_the_same_channel_at_once_share_one_store_read() -> None:
    backend = memory_backend()
    _, success = await subscribed(Harness(backend=backend), "room-1")
    await publish(backend, "room-1", 5)
    fresh = Harness(backend=backend)  # nothing cached on this node
    clients = [(await subscribed(fresh, "room-1"))[0] for _ in range(3)]
    reads = count_reads(backend)
    gate = Gate()
    store = backend.history
    assert isinstance(store, MemoryHistoryStore)
    counted = store.read

    async def slow_read(*args: Any) -> Any:
        await gate.wait()
        return await counted(*args)

    store.read = slow_read  # type: ignore[method-assign]
    tasks = [asyncio.create_task(recover(c, "room-1", success["position"])) for c in clients]
    await gate.entered.wait()
    await settle()
    gate.open()
    for task in tasks:
        frames = await task
        assert numbers(frames) == [0, 1, 2, 3, 4] and answer(frames)["count"] == 5
    assert len(reads) == 1


async def test_a_subscription_succeeds_with_a_null_position_while_the_history_is_unreachable() -> None:
    backend = memory_backend()
    backend.history = FailingCall(backend.history, "head", StoreUnavailable("down"))  # type: ignore[assignment]
    harness = Harness(backend=backend)
    _, success = await subscribed(harness, "room-1")
    assert "position" in success and success["position"] is None
    _, plain = await subscribed(harness, "news")
    assert "position" not in plain
