"""Behaviour of the state stores, written once against the interfaces in shared/state/base.py and run
for every implementation in tests/unit/conftest.py BACKEND_FACTORIES."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from shared.backend import Backend
from shared.protocol.users import user_key
from shared.state.base import Member

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
    first = await occ.add(app_id, "my-channel", "1.1")
    assert first.count == 1 and first.occupied("my-channel")  # became occupied
    second = await occ.add(app_id, "my-channel", "2.2")
    assert second.count == 2 and not second.stamp
    assert await occ.counts(app_id, ["my-channel"]) == [2]
    assert (await occ.remove(app_id, "my-channel", "1.1")).count == 1
    vacated = await occ.remove(app_id, "my-channel", "2.2")
    assert vacated.count == 0 and vacated.vacated("my-channel")
    assert await occ.counts(app_id, ["my-channel"]) == [0]
    assert await occ.channels(app_id) == {}
    again = await occ.add(app_id, "my-channel", "3.3")  # occupied again, right after the vacate
    assert again.count == 1 and again.after == vacated.stamp
    assert first.stamp < vacated.stamp < again.stamp


async def test_occupancy_remove_of_nothing_is_no_vacate(backend: Backend, app_id: str) -> None:
    gone = await backend.occupancy.remove(app_id, "never", "1.1")
    assert gone.count == 0 and gone.vacated("never") is None


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
    assert (await occ.add(app_id, odd, "1.1")).count == 1
    assert (await occ.add(other, odd, "1.1")).count == 1
    assert await occ.channels(app_id) == {odd: 1}
    assert await occ.channels(app_id, "private-a;b=") == {odd: 1}
    assert (await occ.remove(other, odd, "1.1")).count == 0
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
    assert await pres.leave(app_id, "presence-r", "1.1", alice) == 0
    assert await pres.members(app_id, "presence-r") == [alice, bob]
    assert await pres.leave(app_id, "presence-r", "2.2", alice) > 0
    assert await pres.members(app_id, "presence-r") == [bob]
    assert await pres.leave(app_id, "presence-r", "3.3", bob) > 0
    assert await pres.members(app_id, "presence-r") == []
    assert await pres.user_counts(app_id, ["presence-r"]) == [0]


async def test_presence_user_ids_compare_by_string_form(backend: Backend, app_id: str) -> None:
    pres = backend.presence
    assert user_key(10) == user_key("10") == "10"
    number = await pres.join(app_id, "presence-r", "1.1", Member(10, {"n": 1}), 100)
    text = await pres.join(app_id, "presence-r", "2.2", Member("10", {"n": 2}), 100)
    assert number.added and not text.added
    assert await pres.user_counts(app_id, ["presence-r"]) == [1]
    assert await pres.leave(app_id, "presence-r", "1.1", Member(10, {"n": 1})) == 0
    assert await pres.leave(app_id, "presence-r", "2.2", Member("10", {"n": 2})) > 0


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
    assert await pres.leave(app_id, "presence-nobody", "1.1", member("a")) == 0
    await pres.join(app_id, "presence-r", "1.1", member("a"), 100)
    assert await pres.leave(app_id, "presence-r", "2.2", member("b")) == 0
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


async def test_presence_local_members_count_users_per_channel_held_here(backend: Backend, app_id: str) -> None:
    presence = backend.presence
    other = f"{app_id}-other"
    assert presence.local_members().get(app_id, 0) == 0
    await presence.join(app_id, "presence-a", "1.1", Member("u1"), 100)
    await presence.join(app_id, "presence-a", "1.2", Member("u1"), 100)  # same user, second socket
    await presence.join(app_id, "presence-b", "1.1", Member("u1"), 100)
    await presence.join(app_id, "presence-b", "2.1", Member("u2"), 100)
    await presence.join(other, "presence-a", "3.1", Member("u3"), 100)
    counts = presence.local_members()
    assert counts[app_id] == 3 and counts[other] == 1
    await presence.leave(app_id, "presence-a", "1.1", Member("u1"))
    assert presence.local_members()[app_id] == 3  # u1 still has a socket in presence-a
    await presence.leave(app_id, "presence-a", "1.2", Member("u1"))
    await presence.leave(app_id, "presence-b", "2.1", Member("u2"))
    assert presence.local_members()[app_id] == 1


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
    assert sum(1 for stamp in leaves if stamp) == 1
    assert await pres.members(app_id, "presence-r") == []


async def test_occupancy_concurrent_adds_see_each_transition_once(backend: Backend, app_id: str) -> None:
    occ = backend.occupancy
    adds = await asyncio.gather(*(occ.add(app_id, "c", f"{i}.1") for i in range(20)))
    assert sorted(a.count for a in adds) == list(range(1, 21))
    assert sum(1 for a in adds if a.stamp) == 1
    removes = await asyncio.gather(*(occ.remove(app_id, "c", f"{i}.1") for i in range(20)))
    assert sorted(r.count for r in removes) == list(range(20))
    assert sum(1 for r in removes if r.stamp) == 1


async def test_presence_transitions_are_stamped_in_order(backend: Backend, app_id: str) -> None:
    """One clock per app orders every presence transition and roster, whichever node makes them; an
    addition names the recent removal it follows (which pairs their webhooks)."""
    pres = backend.presence
    alice, bob = member("alice"), member("bob")
    joined = await pres.join(app_id, "presence-r", "1.1", alice, 100)
    again = await pres.join(app_id, "presence-r", "2.2", alice, 100)
    bob_joined = await pres.join(app_id, "presence-r", "3.3", bob, 100)
    assert joined.after == 0  # no recent removal
    assert 0 < joined.stamp < again.stamp < bob_joined.stamp
    removed = await pres.leave(app_id, "presence-r", "1.1", alice)
    assert removed == 0
    removed = await pres.leave(app_id, "presence-r", "2.2", alice)
    assert removed > bob_joined.stamp
    roster = await pres.roster(app_id, "presence-r")
    assert roster.members == [bob] and roster.stamp > removed
    back = await pres.join(app_id, "presence-r", "4.4", alice, 100)
    assert back.added and back.after == removed and back.stamp > roster.stamp
    # Other users and channels have their own removal records.
    assert (await pres.join(app_id, "presence-other", "5.5", alice, 100)).after == 0


async def test_connections_concurrent_opens_respect_the_limit(backend: Backend, app_id: str) -> None:
    opened = await asyncio.gather(*(backend.connections.open(app_id, f"{i}.1", 5) for i in range(20)))
    assert sum(opened) == 5
    assert await backend.connections.count(app_id) == 5


# -- signed-in users ---------------------------------------------------------------------------


async def test_users_online_from_first_signin_to_last_signout(backend: Backend, app_id: str) -> None:
    users = backend.users
    assert await users.signin(app_id, "u1", "1.1") is True
    assert await users.signin(app_id, "u1", "1.2") is False  # a second tab: already online
    assert await users.online(app_id, ["u1", "u2"]) == [True, False]
    assert await users.signout(app_id, "u1", "1.1") is False
    assert await users.online(app_id, ["u1"]) == [True]
    assert await users.signout(app_id, "u1", "1.2") is True
    assert await users.online(app_id, ["u1"]) == [False]


async def test_users_signout_of_an_unknown_socket_changes_nothing(backend: Backend, app_id: str) -> None:
    users = backend.users
    assert await users.signout(app_id, "nobody", "9.9") is False
    assert await users.signin(app_id, "u1", "1.1") is True
    assert await users.signout(app_id, "u2", "1.1") is False
    assert await users.online(app_id, ["u1", "u2"]) == [True, False]


async def test_users_are_per_app(backend: Backend, app_id: str) -> None:
    other = app_id + "-other"
    assert await backend.users.signin(app_id, "u1", "1.1") is True
    assert await backend.users.signin(other, "u1", "2.1") is True  # online in each app on its own
    assert await backend.users.online(other, ["u1"]) == [True]
    assert await backend.users.signout(app_id, "u1", "1.1") is True
    assert await backend.users.online(other, ["u1"]) == [True]
    assert await backend.users.online(app_id, []) == []


async def test_users_concurrent_signins_see_one_online(backend: Backend, app_id: str) -> None:
    results = await asyncio.gather(*(backend.users.signin(app_id, "u1", f"1.{i}") for i in range(20)))
    assert results.count(True) == 1
    results = await asyncio.gather(*(backend.users.signout(app_id, "u1", f"1.{i}") for i in range(20)))
    assert results.count(True) == 1
    assert await backend.users.online(app_id, ["u1"]) == [False]


# -- cache channels ----------------------------------------------------------------------------


async def test_cache_miss_then_last_event_with_its_ttl(backend: Backend, app_id: str) -> None:
    cache = backend.cache
    assert await cache.get(app_id, "cache-x") is None
    await cache.put(app_id, "cache-x", "first", '{"n":1}', 60)
    await cache.put(app_id, "cache-x", "second", '{ "n" : 2 }', 60)
    cached = await cache.get(app_id, "cache-x")
    assert cached is not None
    assert (cached.event, cached.data) == ("second", '{ "n" : 2 }')  # the last one, data as sent
    assert 1 <= cached.ttl_s <= 60


async def test_cache_keeps_object_data_and_is_per_app_and_channel(backend: Backend, app_id: str) -> None:
    await backend.cache.put(app_id, "cache-a", "ev", {"a": [1, None]}, 60)
    cached = await backend.cache.get(app_id, "cache-a")
    assert cached is not None and cached.data == {"a": [1, None]}
    assert await backend.cache.get(app_id, "cache-b") is None
    assert await backend.cache.get(app_id + "-other", "cache-a") is None


async def test_cache_event_expires_after_its_ttl(backend: Backend, app_id: str) -> None:
    await backend.cache.put(app_id, "cache-short", "ev", "{}", 1)
    cached = await backend.cache.get(app_id, "cache-short")
    assert cached is not None and cached.ttl_s == 1

    # Expiry is time passing, not an event: poll until it is gone.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while await backend.cache.get(app_id, "cache-short") is not None:
        assert loop.time() < deadline, "cached event did not expire"
        await asyncio.sleep(0.05)
async def test_presence_keeps_integer_ids_beyond_64_bits_apart(backend: Backend, app_id: str) -> None:
    import orjson

    from shared.protocol.users import loads_exact

    big, bigger = (Member(loads_exact(str(n))) for n in (2**70, 2**70 + 1))
    assert isinstance(big.user_id, orjson.Fragment)
    assert (await backend.presence.join(app_id, "presence-r", "1.1", big, 100)).added
    assert (await backend.presence.join(app_id, "presence-r", "2.2", bigger, 100)).added
    keys = sorted(m.key for m in await backend.presence.members(app_id, "presence-r"))
    assert keys == [str(2**70), str(2**70 + 1)]
    roster = await backend.presence.roster(app_id, "presence-r")
    assert sorted(orjson.dumps(m.user_id) for m in roster.members) == [b"%d" % 2**70, b"%d" % (2**70 + 1)]
