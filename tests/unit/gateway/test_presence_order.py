"""Ordered presence on one node (issue 9, defect 1 and the repeated member_added): member events from
the bus carry their transition's stamp, and the hub keeps what its subscribers were told, so a stale or
repeated member event never reaches them and a new subscriber's roster agrees with the events to come.

Envelopes are handed to the hub directly, in the order a cluster can deliver them (crossing on the way
from two nodes), on top of the real in-memory backend.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared import transitions
from shared.bus.base import Envelope
from shared.protocol import messages
from shared.state.base import Member, MemberChange
from tests.unit.fakes import Client, Harness, decode, make_app
from tests.unit.gateway.test_protocol_handler import join_presence, roster

APP = make_app()
CHANNEL = "presence-room"


def added(user: Any, stamp: int, info: Any = None) -> Envelope:
    return transitions.member_added(APP.id, MemberChange(CHANNEL, Member(user, info), stamp), "other-node")


def removed(user: Any, stamp: int) -> Envelope:
    return transitions.member_removed(APP.id, MemberChange(CHANNEL, Member(user), stamp), "other-node")


def member_events(client: Client) -> list[tuple[str, Any]]:
    out = []
    for frame in client.sink.take():
        if frame["event"] in ("pusher_internal:member_added", "pusher_internal:member_removed"):
            out.append((frame["event"].split(":")[1], decode(frame["data"])["user_id"]))
    return out


async def subscriber(h: Harness, user: str) -> Client:
    client = h.connect(APP)
    await join_presence(client, CHANNEL, user)
    client.sink.take()
    return client


async def stamp_now(h: Harness) -> int:
    return (await h.backend.presence.roster(APP.id, CHANNEL)).stamp


async def test_a_removal_overtaken_by_the_next_addition_is_dropped(harness: Harness) -> None:
    watcher = await subscriber(harness, "watcher")
    pres, bob = harness.backend.presence, Member("bob")
    first = await pres.join(APP.id, CHANNEL, "1.9", bob, 100)
    harness.hub.deliver(added("bob", first.stamp))
    # bob leaves on node A and rejoins on node B; B's event arrives first.
    gone = await pres.leave(APP.id, CHANNEL, "1.9", bob)
    back = await pres.join(APP.id, CHANNEL, "2.9", bob, 100)
    assert back.after == gone
    harness.hub.deliver(added("bob", back.stamp))
    harness.hub.deliver(removed("bob", gone))
    assert member_events(watcher) == [("member_added", "bob")]
    # The roster a new local subscriber gets agrees: bob is there.
    late = harness.connect(APP)
    await join_presence(late, CHANNEL, "late")
    ids = roster(late.sink.take()[0])["ids"]
    assert "bob" in ids


async def test_an_addition_overtaken_by_the_removal_is_dropped(harness: Harness) -> None:
    watcher = await subscriber(harness, "watcher")
    base = await stamp_now(harness)
    harness.hub.deliver(removed("carol", base + 2))
    harness.hub.deliver(added("carol", base + 1))
    assert member_events(watcher) == []


async def test_a_repeated_member_added_is_not_sent(harness: Harness) -> None:
    """After a re-sync every node re-adds its members; subscribers that have them hear nothing."""
    watcher = await subscriber(harness, "watcher")
    base = await stamp_now(harness)
    harness.hub.deliver(added("dave", base + 1))
    harness.hub.deliver(added("dave", base + 5))
    harness.hub.deliver(added("watcher", base + 6))
    assert member_events(watcher) == [("member_added", "dave")]
    harness.hub.deliver(removed("dave", base + 7))
    harness.hub.deliver(removed("dave", base + 8))
    assert member_events(watcher) == [("member_removed", "dave")]


async def test_a_member_in_the_new_subscribers_roster_gets_no_member_added_after_it(harness: Harness) -> None:
    """Concurrent joins: the roster already holds erin, whose member_added (stamped before the roster)
    arrives afterwards."""
    await harness.backend.presence.join(APP.id, CHANNEL, "9.9", Member("erin"), 100)
    stamp = (await harness.backend.presence.roster(APP.id, CHANNEL)).stamp
    newcomer = harness.connect(APP)
    await join_presence(newcomer, CHANNEL, "newcomer")
    assert "erin" in roster(newcomer.sink.take()[0])["ids"]
    harness.hub.deliver(added("erin", stamp - 1))
    assert member_events(newcomer) == []


async def test_a_new_subscriber_corrects_what_the_others_were_told(harness: Harness) -> None:
    """A join's roster is newer than the view: local subscribers hear the difference at once, and the
    events still on their way are dropped when they arrive."""
    watcher = await subscriber(harness, "watcher")
    base = await stamp_now(harness)
    harness.hub.deliver(added("frank", base + 1))
    assert member_events(watcher) == [("member_added", "frank")]
    # frank leaves elsewhere (its member_removed is still in flight), gina joins elsewhere.
    await harness.backend.presence.join(APP.id, CHANNEL, "8.8", Member("gina"), 100)
    newcomer = harness.connect(APP)
    await join_presence(newcomer, CHANNEL, "newcomer")
    ids = sorted(roster(newcomer.sink.take()[0])["ids"])
    assert ids == ["gina", "newcomer", "watcher"]
    assert sorted(member_events(watcher)) == [("member_added", "gina"), ("member_added", "newcomer"),
                                              ("member_removed", "frank")]
    harness.hub.deliver(removed("frank", base + 2))
    assert member_events(watcher) == [] and member_events(newcomer) == []


async def test_a_refresh_tells_subscribers_what_they_missed(harness: Harness) -> None:
    watcher = await subscriber(harness, "watcher")
    base = await stamp_now(harness)
    harness.hub.deliver(added("ghost", base + 1))
    member_events(watcher)
    roster_now = await harness.backend.presence.roster(APP.id, CHANNEL)
    assert harness.hub.presence_refresh((APP.id, CHANNEL), roster_now.members, roster_now.stamp) == 1
    assert member_events(watcher) == [("member_removed", "ghost")]


async def test_member_events_keep_big_integer_ids_apart(harness: Harness) -> None:
    watcher = await subscriber(harness, "watcher")
    base = await stamp_now(harness)
    big = orjson.Fragment(b"1180591620717411303424")
    bigger = orjson.Fragment(b"1180591620717411303425")
    harness.hub.deliver(Envelope.unpack(added(big, base + 1).pack()))
    harness.hub.deliver(Envelope.unpack(added(bigger, base + 2).pack()))
    frames = [f for f in watcher.sink.take() if f["event"] == "pusher_internal:member_added"]
    assert [f["data"] for f in frames] == [messages.member_added_data(big, None),
                                           messages.member_added_data(bigger, None)]
    assert b"1180591620717411303425" in orjson.dumps(frames[1])
