"""Behaviour of the bus, written once against the `Bus` interface (shared/bus/base.py) and run for
every implementation in tests/unit/conftest.py BACKEND_FACTORIES.

Nothing here relies on delivery being synchronous: tests wait for what they expect, and prove that
something was *not* delivered by waiting for a later sentinel on a subscribed topic.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.backend import Backend
from shared.bus.base import Envelope
from tests.unit.fakes import wait_until


class Recorder:
    def __init__(self, backend: Backend) -> None:
        self.envelopes: list[Envelope] = []
        backend.bus.set_receiver(self.envelopes.append)

    def on(self, app_id: str, channel: str) -> list[Envelope]:
        return [e for e in self.envelopes if (e.app_id, e.channel) == (app_id, channel)]

    async def wait_for(self, app_id: str, channel: str, count: int) -> list[Envelope]:
        await wait_until(lambda: len(self.on(app_id, channel)) >= count)
        return self.on(app_id, channel)


def env(app_id: str, channel: str, event: str = "ev", data: Any = "{}", **kw: Any) -> Envelope:
    return Envelope(app_id, channel, event, data, **kw)


async def sentinel(backend: Backend, rec: Recorder, app_id: str) -> None:
    """Publish on a subscribed topic and wait for it: anything published earlier has arrived by now."""
    channel = "sentinel"
    before = len(rec.on(app_id, channel))
    await backend.bus.subscribe(app_id, channel)
    await backend.bus.publish(env(app_id, channel, "done"))
    await rec.wait_for(app_id, channel, before + 1)
    await backend.bus.unsubscribe(app_id, channel)


async def test_bus_delivers_in_publish_order(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.subscribe(app_id, "orders")
    sent = [env(app_id, "orders", f"ev-{i}", f'{{"n":{i}}}') for i in range(50)]
    for e in sent:
        await backend.bus.publish(e)
    got = await rec.wait_for(app_id, "orders", 50)
    assert [e.event for e in got] == [f"ev-{i}" for i in range(50)]
    assert [e.data for e in got] == [f'{{"n":{i}}}' for i in range(50)]


async def test_bus_keeps_envelope_fields(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.subscribe(app_id, "presence-room")
    samples = [
        # The HTTP API's data string, byte for byte (odd spacing and unicode included).
        env(app_id, "presence-room", "my-event", '{ "hello" :"wörld" }', exclude="1.2", origin="node-a", ts=12.5),
        # A client event: object data and the sender's numeric presence user id.
        env(app_id, "presence-room", "client-typing", {"a": [1, 2, None]}, exclude="3.4", user_id=10),
        env(app_id, "presence-room", "client-x", "plain text", user_id="u-1"),
    ]
    for e in samples:
        await backend.bus.publish(e)
    got = await rec.wait_for(app_id, "presence-room", 3)
    assert got == samples
    assert isinstance(got[1].user_id, int)


async def test_bus_unsubscribed_topic_gets_nothing(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.subscribe(app_id, "wanted")
    await backend.bus.publish(env(app_id, "never-subscribed"))
    await backend.bus.publish(env(app_id, "wanted"))
    await rec.wait_for(app_id, "wanted", 1)
    await sentinel(backend, rec, app_id)
    assert rec.on(app_id, "never-subscribed") == []


async def test_bus_topics_are_per_app(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    other_app = f"{app_id}-other"
    await backend.bus.subscribe(app_id, "shared-name")
    await backend.bus.publish(env(other_app, "shared-name", "other"))
    await backend.bus.publish(env(app_id, "shared-name", "mine"))
    await rec.wait_for(app_id, "shared-name", 1)
    await sentinel(backend, rec, app_id)
    assert rec.on(other_app, "shared-name") == []
    assert [e.event for e in rec.on(app_id, "shared-name")] == ["mine"]


async def test_bus_after_unsubscribe_nothing_arrives(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.subscribe(app_id, "c")
    await backend.bus.publish(env(app_id, "c", "before"))
    await rec.wait_for(app_id, "c", 1)
    await backend.bus.unsubscribe(app_id, "c")
    await backend.bus.publish(env(app_id, "c", "after"))
    await sentinel(backend, rec, app_id)
    assert [e.event for e in rec.on(app_id, "c")] == ["before"]


async def test_bus_subscriptions_are_refcounted(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.subscribe(app_id, "c")
    await backend.bus.subscribe(app_id, "c")
    await backend.bus.unsubscribe(app_id, "c")
    # One subscription left: still delivered, and exactly once.
    await backend.bus.publish(env(app_id, "c", "still"))
    await rec.wait_for(app_id, "c", 1)
    await backend.bus.unsubscribe(app_id, "c")
    await backend.bus.publish(env(app_id, "c", "gone"))
    await sentinel(backend, rec, app_id)
    assert [e.event for e in rec.on(app_id, "c")] == ["still"]


async def test_bus_unsubscribe_without_subscribe_is_harmless(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.unsubscribe(app_id, "c")
    await backend.bus.subscribe(app_id, "c")
    await backend.bus.publish(env(app_id, "c", "x"))
    assert [e.event for e in await rec.wait_for(app_id, "c", 1)] == ["x"]


async def test_bus_resubscribe_after_full_unsubscribe(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    for _ in range(2):
        await backend.bus.subscribe(app_id, "c")
        await backend.bus.unsubscribe(app_id, "c")
    await backend.bus.subscribe(app_id, "c")
    await backend.bus.publish(env(app_id, "c", "back"))
    assert [e.event for e in await rec.wait_for(app_id, "c", 1)] == ["back"]


async def test_bus_orders_interleaved_channels_per_channel(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await asyncio.gather(backend.bus.subscribe(app_id, "a"), backend.bus.subscribe(app_id, "b"))
    for i in range(20):
        await backend.bus.publish(env(app_id, "a" if i % 2 else "b", str(i)))
    a = await rec.wait_for(app_id, "a", 10)
    b = await rec.wait_for(app_id, "b", 10)
    assert [e.event for e in a] == [str(i) for i in range(1, 20, 2)]
    assert [e.event for e in b] == [str(i) for i in range(0, 20, 2)]


def test_envelope_pack_roundtrip() -> None:
    e = Envelope("app", "presence-x", "client-y", {"k": "v"}, exclude="1.1", user_id=10, origin="n", ts=1.5)
    assert Envelope.unpack(e.pack()) == e
    assert Envelope.unpack(Envelope("a", "c", "e", '{"raw":1}').pack()).data == '{"raw":1}'


