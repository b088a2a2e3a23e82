"""What only the Redis state has: node leases, the reaper and the repair after an outage
(shared/state/redis_node.py), driven by a manual wall clock instead of waiting for leases to expire.

Each test uses its own key prefix on the session's redis-server. "Redis restarted empty" is a FLUSHDB
of that server, which only this module's tests do, inside one test at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.state.base import Member, StoreUnavailable, Transitions
from shared.state.redis_impl import (
    RedisConnectionStore,
    RedisOccupancyStore,
    RedisPresenceStore,
    RedisUserStore,
)
from shared.state.redis_node import RedisNode
from tests.unit.fakes import ManualClock

LEASE_S = 15.0
APP = "app"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@dataclass
class Node:
    """One node's lease and stores, recording the transitions it reports."""

    lease: RedisNode
    seen: list[Transitions] = field(default_factory=list)

    def __post_init__(self) -> None:
        async def record(t: Transitions) -> None:
            self.seen.append(t)

        self.lease.add_transitions_listener(record)
        self.connections = RedisConnectionStore(self.lease)
        self.occupancy = RedisOccupancyStore(self.lease)
        self.presence = RedisPresenceStore(self.lease)
        self.users = RedisUserStore(self.lease)

    def take(self) -> list[Transitions]:
        seen, self.seen = self.seen, []
        return seen


@dataclass
class Cluster:
    """Nodes sharing one key prefix and one manual wall clock."""

    client: Redis
    prefix: str = field(default_factory=lambda: f"n{uuid.uuid4().hex[:8]}")
    clock: ManualClock = field(default_factory=lambda: ManualClock(start=1_700_000_000.0))

    def node(self, node_id: str) -> Node:
        lease = RedisNode(self.client, self.prefix, node_id, lease_s=LEASE_S, clock=self.clock, recovery_grace_s=0)
        return Node(lease)

    async def keys_of(self, node_id: str) -> list[bytes]:
        return [k async for k in self.client.scan_iter(f"{self.prefix}:*{node_id}*")]


@pytest.fixture
def cluster(client: Redis) -> Cluster:
    return Cluster(client)


def reaper_metrics() -> dict[str, float]:
    names = ["runs", "nodes", "members", "users"]
    return {n: REGISTRY.get_sample_value(f"herald_{'reaper' if n == 'runs' else 'reaped'}_{n}_total") or 0.0
            for n in names}


async def test_reaping_a_node_reports_vacated_removed_offline_and_counts(cluster: Cluster) -> None:
    dead, survivor = cluster.node("dead"), cluster.node("alive")
    await dead.occupancy.add(APP, "news", "1.1")
    await survivor.occupancy.add(APP, "shared", "2.1")
    await dead.occupancy.add(APP, "shared", "1.2")
    assert (await dead.presence.join(APP, "presence-x", "1.1", Member("u1", {"n": 1}), 100)).added
    assert await dead.users.signin(APP, "u1", "1.1")
    assert await survivor.users.signin(APP, "u2", "2.1")
    assert await dead.users.signin(APP, "u2", "1.3") is False

    await survivor.lease.reap_node("dead")

    [t] = survivor.take()
    assert t.vacated == ["news"] and t.occupied == []
    assert t.removed == [("presence-x", Member("u1", {"n": 1}))]
    assert t.offline == ["u1"] and t.online == []
    assert sorted(t.counts) == [("news", 0), ("shared", 1)]
    assert await survivor.occupancy.counts(APP, ["news", "shared"]) == [0, 1]
    assert await survivor.users.online(APP, ["u1", "u2"]) == [False, True]
    assert await survivor.presence.members(APP, "presence-x") == []
    assert await cluster.keys_of("dead") == []


async def test_only_an_expired_lease_is_reaped(cluster: Cluster) -> None:
    clock = cluster.clock
    a, b = cluster.node("a"), cluster.node("b")
    await a.lease.heartbeat()
    await b.lease.heartbeat()
    assert (await a.presence.join(APP, "presence-room", "1.1", Member("alice"), 100)).added
    await a.occupancy.add(APP, "presence-room", "1.1")

    clock.advance(LEASE_S - 1)
    await b.lease.heartbeat()
    await b.lease.reap()
    assert b.take() == []  # a's lease still holds
    assert await b.presence.members(APP, "presence-room") == [Member("alice")]

    clock.advance(2)  # a missed its heartbeats past the lease
    await b.lease.heartbeat()
    await b.lease.reap()
    [t] = b.take()
    assert t.removed == [("presence-room", Member("alice"))] and t.vacated == ["presence-room"]
    assert await b.presence.members(APP, "presence-room") == []


async def test_one_reaper_at_a_time_reports_each_transition_once(cluster: Cluster) -> None:
    clock = cluster.clock
    dead, b, c = cluster.node("dead"), cluster.node("b"), cluster.node("c")
    await dead.lease.heartbeat()
    await dead.occupancy.add(APP, "news", "1.1")
    assert (await dead.presence.join(APP, "presence-room", "1.1", Member("alice"), 100)).added
    assert await dead.users.signin(APP, "alice", "1.1")
    clock.advance(LEASE_S + 1)
    before = reaper_metrics()
    await b.lease.reap()
    await c.lease.reap()  # b holds the reaper lock: c does nothing
    await b.lease.reap()  # the dead node is gone: nothing left to report
    assert [t.vacated for t in b.take()] == [["news"]]
    assert c.take() == []
    after = reaper_metrics()
    # Two passes by the lock holder (c's attempt is not a run), one node with one member and one user.
    assert {n: after[n] - before[n] for n in after} == {"runs": 2, "nodes": 1, "members": 1, "users": 1}


async def test_a_node_reaped_while_partitioned_re_registers_what_it_holds(cluster: Cluster) -> None:
    clock = cluster.clock
    cut_off, reaper = cluster.node("cut-off"), cluster.node("reaper")
    await cut_off.lease.heartbeat()
    await cut_off.occupancy.add(APP, "news", "1.1")
    await cut_off.presence.join(APP, "presence-room", "1.1", Member("alice", {"a": 1}), 100)
    await cut_off.users.signin(APP, "alice", "1.1")
    assert await cut_off.connections.open(APP, "1.1", -1)
    clock.advance(LEASE_S + 1)
    await reaper.lease.reap()
    [reaped] = reaper.take()
    assert reaped.removed and reaped.offline == ["alice"]

    # Its next heartbeat finds it was removed: it writes back what its sockets still hold.
    await cut_off.lease.heartbeat()
    [back] = cut_off.take()
    assert back.occupied == ["news"]
    assert back.added == [("presence-room", Member("alice", {"a": 1}))] and back.online == ["alice"]
    assert await reaper.occupancy.counts(APP, ["news"]) == [1]
    assert await reaper.presence.members(APP, "presence-room") == [Member("alice", {"a": 1})]
    assert await reaper.users.online(APP, ["alice"]) == [True]
    assert await reaper.connections.count(APP) == 1


async def test_after_redis_restarts_empty_the_node_restores_its_records(client: Redis, cluster: Cluster) -> None:
    node, other = cluster.node("n1"), cluster.node("n2")
    await node.lease.heartbeat()
    await node.occupancy.add(APP, "news", "1.1")
    await node.occupancy.add(APP, "news", "1.2")
    await node.presence.join(APP, "presence-room", "1.1", Member(7, {"n": 7}), 100)
    await node.users.signin(APP, "u7", "1.1")
    assert await node.connections.open(APP, "1.1", -1)
    assert await node.connections.open(APP, "1.2", -1)

    await client.flushdb()  # Redis came back with nothing
    await node.lease.heartbeat()

    assert await other.occupancy.counts(APP, ["news"]) == [2]
    assert await other.presence.members(APP, "presence-room") == [Member(7, {"n": 7})]
    assert await other.users.online(APP, ["u7"]) == [True]
    assert await other.connections.count(APP) == 2


async def test_leaves_that_failed_during_an_outage_are_reported_after_it(client: Redis, cluster: Cluster) -> None:
    node = cluster.node("n1")
    await node.lease.heartbeat()
    await node.occupancy.add(APP, "presence-room", "1.1")
    await node.presence.join(APP, "presence-room", "1.1", Member("bob"), 100)
    await node.users.signin(APP, "bob", "1.1")

    # Redis goes away: the socket's leaves fail, and the node must not forget them.
    scripts = node.lease.scripts

    async def unreachable(*args: object, **kwargs: object) -> object:
        raise RedisConnectionError("Connection refused")

    real_run = scripts.run
    scripts.run = unreachable  # type: ignore[method-assign]
    for leave in (node.occupancy.remove(APP, "presence-room", "1.1"),
                  node.presence.leave(APP, "presence-room", "1.1", Member("bob")),
                  node.users.signout(APP, "bob", "1.1")):
        with pytest.raises(StoreUnavailable):
            await leave
    scripts.run = real_run  # type: ignore[method-assign]
    assert node.lease.needs_sync

    await client.flushdb()  # and comes back empty: nothing in Redis remembers bob
    await node.lease.heartbeat()

    [t] = node.take()
    assert t.vacated == ["presence-room"]
    assert t.removed == [("presence-room", Member("bob"))]
    assert t.offline == ["bob"]
    await node.lease.heartbeat()
    assert node.take() == []  # settled once


async def test_a_clean_stop_leaves_nothing_behind(cluster: Cluster) -> None:
    node, other = cluster.node("n1"), cluster.node("n2")
    await node.lease.heartbeat()
    await node.occupancy.add(APP, "news", "1.1")
    await node.presence.join(APP, "presence-room", "1.1", Member("alice"), 100)
    await node.lease.stop_node()
    [t] = node.take()
    assert t.vacated == ["news"] and t.removed == [("presence-room", Member("alice"))]
    assert await other.occupancy.channels(APP) == {}
    assert await cluster.keys_of("n1") == []
