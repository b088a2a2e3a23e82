"""Behaviour of the bus and the state stores, written once against the interfaces in shared/bus.py and
shared/state.py and run for every implementation in conftest.BACKEND_FACTORIES.

Nothing here relies on delivery being synchronous: bus tests wait for what they expect, and prove that
something was *not* delivered by waiting for a later sentinel on a subscribed topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shared.backend import Backend
from shared.bus.base import Envelope
from shared.protocol.users import user_key
from shared.state.base import Member
from tests.unit.fakes import wait_until

# -- bus ---------------------------------------------------------------------------------------


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


# -- connection quota --------------------------------------------------------------------------


async def test_connections_unlimited(backend: Backend, app_id: str) -> None:
    store = backend.connections
    for i in range(30):
        assert await store.open(app_id, f"{i}.1", -1)
    assert await store.count(app_id) == 30


async def test_connections_limit_refuses_the_next_and_frees_on_close(backend: Backend, app_id: str) -> None:
    store = backend.connections
    assert [await store.open(app_id, f"{i}.1", 3) for i in range(3)] == [True, True, True]
    assert await store.open(app_id, "3.1", 3) is False
    assert await store.count(app_id) == 3  # the refused one is not counted
    await store.close(app_id, "1.1")
    assert await store.count(app_id) == 2
    assert await store.open(app_id, "4.1", 3) is True
    assert await store.open(app_id, "5.1", 3) is False
    assert await store.count(app_id) == 3


async def test_connections_limit_zero_refuses_all(backend: Backend, app_id: str) -> None:
    assert await backend.connections.open(app_id, "1.1", 0) is False
    assert await backend.connections.count(app_id) == 0


async def test_connections_are_counted_per_app(backend: Backend, app_id: str) -> None:
    store = backend.connections
    other = f"{app_id}-other"
    assert await store.open(app_id, "1.1", 1)
    assert await store.open(other, "2.2", 1)
    assert await store.open(app_id, "3.3", 1) is False
    assert await store.count(app_id) == 1
    assert await store.count(other) == 1


async def test_connections_close_unknown_and_count_unknown_app(backend: Backend, app_id: str) -> None:
    await backend.connections.close(app_id, "9.9")
    assert await backend.connections.count(app_id) == 0
    assert await backend.connections.open(app_id, "1.1", 1)


# -- occupancy ---------------------------------------------------------------------------------


async def test_occupancy_transitions(backend: Backend, app_id: str) -> None:
    occ = backend.occupancy
    assert await occ.add(app_id, "my-channel", "1.1") == 1  # became occupied
    assert await occ.add(app_id, "my-channel", "2.2") == 2
    assert await occ.counts(app_id, ["my-channel"]) == [2]
    assert await occ.remove(app_id, "my-channel", "1.1") == 1
    assert await occ.remove(app_id, "my-channel", "2.2") == 0  # vacated
    assert await occ.counts(app_id, ["my-channel"]) == [0]
    assert await occ.channels(app_id) == {}
    assert await occ.add(app_id, "my-channel", "3.3") == 1  # occupied again


async def test_occupancy_counts_unknown_channels_as_zero(backend: Backend, app_id: str) -> None:
    occ = backend.occupancy
    await occ.add(app_id, "b", "1.1")
    assert await occ.counts(app_id, ["a", "b", "c", "b"]) == [0, 1, 0, 1]
    assert await occ.counts(app_id, []) == []
    assert await occ.counts(f"{app_id}-unknown", ["b"]) == [0]


async def test_occupancy_channels_by_prefix(backend: Backend, app_id: str) -> None:
    occ = backend.occupancy
    await occ.add(app_id, "presence-a", "1.1")
    await occ.add(app_id, "presence-a", "2.2")
    await occ.add(app_id, "presence-b", "1.1")
    await occ.add(app_id, "private-a", "1.1")
    await occ.add(app_id, "public", "1.1")
    await occ.add(app_id, "gone", "1.1")
    await occ.remove(app_id, "gone", "1.1")
    assert await occ.channels(app_id) == {"presence-a": 2, "presence-b": 1, "private-a": 1, "public": 1}
    assert await occ.channels(app_id, "presence-") == {"presence-a": 2, "presence-b": 1}
    assert await occ.channels(app_id, "private-") == {"private-a": 1}
    assert await occ.channels(app_id, "nothing-") == {}


async def test_occupancy_is_per_app_and_keeps_odd_names(backend: Backend, app_id: str) -> None:
    occ = backend.occupancy
    other = f"{app_id}-other"
    odd = "private-a;b=c@d,e.f_g-h"
    assert await occ.add(app_id, odd, "1.1") == 1
    assert await occ.add(other, odd, "1.1") == 1
    assert await occ.channels(app_id) == {odd: 1}
    assert await occ.channels(app_id, "private-a;b=") == {odd: 1}
    assert await occ.remove(other, odd, "1.1") == 0
    assert await occ.counts(app_id, [odd]) == [1]


# -- presence ----------------------------------------------------------------------------------


def member(user_id: Any, name: str | None = None) -> Member:
    return Member(user_id, {"name": name or f"user {user_id}"})


async def test_presence_added_only_for_a_users_first_connection(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    alice = member("alice")
    first = await pres.join(app_id, "presence-r", "1.1", alice, 100)
    assert (first.accepted, first.added) == (True, True)
    assert list(first.members) == [alice]
    second = await pres.join(app_id, "presence-r", "2.2", alice, 100)
    assert (second.accepted, second.added) == (True, False)
    assert list(second.members) == [alice]
    assert await pres.user_counts(app_id, ["presence-r"]) == [1]


async def test_presence_removed_only_for_a_users_last_connection(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    alice, bob = member("alice"), member("bob")
    await pres.join(app_id, "presence-r", "1.1", alice, 100)
    await pres.join(app_id, "presence-r", "2.2", alice, 100)
    await pres.join(app_id, "presence-r", "3.3", bob, 100)
    assert await pres.leave(app_id, "presence-r", "1.1", alice) is False
    assert await pres.members(app_id, "presence-r") == [alice, bob]
    assert await pres.leave(app_id, "presence-r", "2.2", alice) is True
    assert await pres.members(app_id, "presence-r") == [bob]
    assert await pres.leave(app_id, "presence-r", "3.3", bob) is True
    assert await pres.members(app_id, "presence-r") == []
    assert await pres.user_counts(app_id, ["presence-r"]) == [0]


async def test_presence_user_ids_compare_by_string_form(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    assert user_key(10) == user_key("10") == "10"
    number = await pres.join(app_id, "presence-r", "1.1", Member(10, {"n": 1}), 100)
    text = await pres.join(app_id, "presence-r", "2.2", Member("10", {"n": 2}), 100)
    assert number.added and not text.added
    assert await pres.user_counts(app_id, ["presence-r"]) == [1]
    assert await pres.leave(app_id, "presence-r", "1.1", Member(10, {"n": 1})) is False
    assert await pres.leave(app_id, "presence-r", "2.2", Member("10", {"n": 2})) is True


async def test_presence_keeps_user_id_and_info_as_sent(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    info = {"name": "Mr. Channels", "tags": ["a", "ü"], "n": 1.5, "none": None}
    await pres.join(app_id, "presence-r", "1.1", Member(10, info), 100)
    await pres.join(app_id, "presence-r", "2.2", Member("abc", None), 100)
    got = {m.key: m for m in await pres.members(app_id, "presence-r")}
    assert got == {"10": Member(10, info), "abc": Member("abc", None)}
    assert isinstance(got["10"].user_id, int)  # the number is kept, not turned into "10"


def by_key(members: Sequence[Member]) -> list[Member]:
    return sorted(members, key=lambda m: m.key)


async def test_presence_roster_lists_each_user_once(backend: Backend, app_id: str) -> None:
    """Roster order is not part of the protocol (pusher-js keys members by id), so only content counts."""
    pres = backend.presence
    # Realistic user_info (avatar URLs and the like): bigger than Redis's 64-byte listpack values.
    users = [
        Member(u, {"name": f"User {u}", "avatar": f"https://cdn.example.com/avatars/{u}/large.png?v=1234567"})
        for u in ("u3", "u1", "u20", "u2", "u10")
    ]
    for i, m in enumerate(users):
        result = await pres.join(app_id, "presence-r", f"{i}.0", m, 100)
        assert by_key(result.members) == by_key(users[: i + 1])  # the roster after the join has the joiner
    # Another connection of an existing user adds nobody.
    again = await pres.join(app_id, "presence-r", "9.9", users[0], 100)
    assert by_key(again.members) == by_key(users)
    assert by_key(await pres.members(app_id, "presence-r")) == by_key(users)
    # A user leaving removes only that user.
    assert await pres.leave(app_id, "presence-r", "3.0", users[3])
    assert by_key(await pres.members(app_id, "presence-r")) == by_key([users[0], users[1], users[2], users[4]])


async def test_presence_max_members(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    a, b, c = member("a"), member("b"), member("c")
    assert (await pres.join(app_id, "presence-r", "1.1", a, 2)).accepted
    assert (await pres.join(app_id, "presence-r", "2.2", b, 2)).accepted
    refused = await pres.join(app_id, "presence-r", "3.3", c, 2)
    assert (refused.accepted, refused.added) == (False, False)
    assert await pres.members(app_id, "presence-r") == [a, b]
    # Another connection of a user already in the channel is not a new member: accepted.
    again = await pres.join(app_id, "presence-r", "4.4", a, 2)
    assert (again.accepted, again.added) == (True, False)
    assert await pres.user_counts(app_id, ["presence-r"]) == [2]
    # Room again once a user has left.
    assert await pres.leave(app_id, "presence-r", "2.2", b)
    later = await pres.join(app_id, "presence-r", "3.3", c, 2)
    assert (later.accepted, later.added) == (True, True)
    assert await pres.members(app_id, "presence-r") == [a, c]


async def test_presence_full_refusal_of_an_empty_channel(backend: Backend, app_id: str) -> None:
    refused = await backend.presence.join(app_id, "presence-r", "1.1", member("a"), 0)
    assert not refused.accepted
    assert await backend.presence.members(app_id, "presence-r") == []
    assert await backend.presence.user_counts(app_id, ["presence-r"]) == [0]


async def test_presence_leave_of_unknown_user_or_channel(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    assert await pres.leave(app_id, "presence-nobody", "1.1", member("a")) is False
    await pres.join(app_id, "presence-r", "1.1", member("a"), 100)
    assert await pres.leave(app_id, "presence-r", "2.2", member("b")) is False
    assert await pres.members(app_id, "presence-r") == [member("a")]


async def test_presence_user_counts_and_isolation(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    other = f"{app_id}-other"
    await pres.join(app_id, "presence-a", "1.1", member(1), 100)
    await pres.join(app_id, "presence-a", "2.2", member(2), 100)
    await pres.join(app_id, "presence-a", "3.3", member(2), 100)
    await pres.join(app_id, "presence-b", "1.1", member(1), 100)
    await pres.join(other, "presence-a", "1.1", member(9), 100)
    assert await pres.user_counts(app_id, ["presence-a", "presence-b", "presence-none"]) == [2, 1, 0]
    assert await pres.user_counts(app_id, []) == []
    assert await pres.user_counts(other, ["presence-a", "presence-b"]) == [1, 0]
    assert await pres.members(app_id, "presence-unknown") == []


async def test_presence_concurrent_joins_see_each_transition_once(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    concurrency = 20
    alice = member("alice")
    joins = await asyncio.gather(
        *(pres.join(app_id, "presence-r", f"{i}.1", alice, 100) for i in range(concurrency))
    )
    assert sum(j.added for j in joins) == 1
    leaves = await asyncio.gather(
        *(pres.leave(app_id, "presence-r", f"{i}.1", alice) for i in range(concurrency))
    )
    assert sum(leaves) == 1
    assert await pres.members(app_id, "presence-r") == []


async def test_occupancy_concurrent_adds_see_each_transition_once(backend: Backend, app_id: str) -> None:
    occ = backend.occupancy
    adds = await asyncio.gather(*(occ.add(app_id, "c", f"{i}.1") for i in range(20)))
    assert sorted(adds) == list(range(1, 21))
    removes = await asyncio.gather(*(occ.remove(app_id, "c", f"{i}.1") for i in range(20)))
    assert sorted(removes) == list(range(20))


async def test_connections_concurrent_opens_respect_the_limit(backend: Backend, app_id: str) -> None:
    opened = await asyncio.gather(*(backend.connections.open(app_id, f"{i}.1", 5) for i in range(20)))
    assert sum(opened) == 5
    assert await backend.connections.count(app_id) == 5
