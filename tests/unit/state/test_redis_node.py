"""What only the Redis state has: node leases, the reaper and the repair after an outage
(shared/state/redis_node.py), driven by a manual wall clock instead of waiting for leases to expire.

Each test uses its own key prefix on the session's redis-server. "Redis restarted empty" is a FLUSHDB
of that server, which only this module's tests do, inside one test at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.bus import redis_impl
from shared.bus.base import Envelope
from shared.bus.redis_impl import RedisBus
from shared.redis.connection import RedisConnector, parse_redis_url
from shared.state.base import ChannelChange, ClusterResyncing, Member, MemberChange, StoreUnavailable, Transitions
from shared.state.redis_impl import (
    RedisConnectionStore,
    RedisOccupancyStore,
    RedisPresenceStore,
    RedisUserStore,
)
from shared.state.redis_node import RedisNode
from tests.tcpproxy import FailoverProxy
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
        lease = RedisNode(self.client, self.prefix, node_id, lease_s=LEASE_S, clock=self.clock)
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


def channels(changes: list[ChannelChange]) -> list[str]:
    assert all(c.stamp > 0 for c in changes), changes  # every transition is stamped
    return [c.channel for c in changes]


def members(changes: list[MemberChange]) -> list[tuple[str, Member]]:
    assert all(c.stamp > 0 for c in changes), changes
    return [(c.channel, c.member) for c in changes]


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
    assert channels(t.vacated) == ["news"] and t.occupied == []
    assert members(t.removed) == [("presence-x", Member("u1", {"n": 1}))]
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
    assert members(t.removed) == [("presence-room", Member("alice"))] and channels(t.vacated) == ["presence-room"]
    assert await b.presence.members(APP, "presence-room") == []


async def test_after_an_outage_longer_than_the_lease_live_nodes_are_not_reaped(cluster: Cluster) -> None:
    clock = cluster.clock
    a, b = cluster.node("a"), cluster.node("b")
    await a.lease.heartbeat()
    await b.lease.heartbeat()
    assert (await a.presence.join(APP, "presence-room", "1.1", Member("alice"), 100)).added

    # Redis is away (a failover) longer than a lease: nobody can renew.
    a.lease.outage_seen()
    b.lease.outage_seen()
    clock.advance(LEASE_S + 5)
    await b.lease.heartbeat()  # b reaches Redis first; a's lease has run out meanwhile
    await b.lease.reap()
    assert b.take() == []  # a gets one lease to renew before it counts as dead
    clock.advance(1)
    await a.lease.heartbeat()
    clock.advance(LEASE_S - 2)
    await b.lease.heartbeat()
    await b.lease.reap()
    assert b.take() == []
    assert await b.presence.members(APP, "presence-room") == [Member("alice")]

    clock.advance(LEASE_S)  # now a really stops renewing: it is reaped as usual
    await b.lease.heartbeat()
    await b.lease.reap()
    [t] = b.take()
    assert members(t.removed) == [("presence-room", Member("alice"))]


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
    assert [channels(t.vacated) for t in b.take()] == [["news"]]
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
    assert channels(back.occupied) == ["news"]
    assert members(back.added) == [("presence-room", Member("alice", {"a": 1}))] and back.online == ["alice"]
    # Each addition follows the reaper's removal, which it names (their webhooks pair up).
    assert back.added[0].after == reaped.removed[0].stamp and back.occupied[0].after == reaped.vacated[0].stamp
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
    assert channels(t.vacated) == ["presence-room"]
    assert members(t.removed) == [("presence-room", Member("bob"))]
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
    assert channels(t.vacated) == ["news"] and members(t.removed) == [("presence-room", Member("alice"))]
    assert await other.occupancy.channels(APP) == {}
    assert await cluster.keys_of("n1") == []


# -- records whatever bytes they hold (issue 9, defect 4) ----------------------------------------

ODD_CHANNELS = ["presence-x\n", "presence-x", "presence-1:x", "presence-x\n\n"]
ODD_USERS = ["\nbob", "bob\n", "3:z", "x\ny"]


async def test_records_stay_apart_whatever_bytes_channels_and_users_hold(client: Redis, cluster: Cluster) -> None:
    """A node's presence records name channel and user unambiguously: with newlines and colons in
    both, a node writing its records back into an emptied Redis puts every member back where it was,
    and a reaped member leaves exactly its own channel."""
    dead, survivor = cluster.node("dead"), cluster.node("alive")
    await dead.lease.heartbeat()
    await survivor.lease.heartbeat()
    pairs = [(ch, user) for ch in ODD_CHANNELS for user in ODD_USERS]
    for i, (ch, user) in enumerate(pairs):
        assert (await dead.presence.join(APP, ch, f"1.{i}", Member(user), 100)).added
    assert (await survivor.presence.join(APP, "presence-x", "2.1", Member("carol"), 100)).added

    await client.delete(*[k async for k in client.scan_iter(f"{cluster.prefix}:*")])  # Redis lost it all
    for node in (dead, survivor):
        await node.lease.heartbeat()
    for ch in ODD_CHANNELS:
        keys = sorted(m.key for m in await survivor.presence.members(APP, ch))
        assert keys == sorted([*ODD_USERS, *(["carol"] if ch == "presence-x" else [])]), repr(ch)

    survivor.take()
    await survivor.lease.reap_node("dead")
    [t] = survivor.take()
    assert sorted((c.channel, c.member.key) for c in t.removed) == sorted(pairs)
    assert await survivor.presence.members(APP, "presence-x") == [Member("carol")]
    for ch in ODD_CHANNELS:
        if ch != "presence-x":
            assert await survivor.presence.members(APP, ch) == [], repr(ch)


# -- Redis restarts: the boot gate (issue 9, defect 5) -------------------------------------------


@dataclass
class GatedNode:
    lease: RedisNode
    bus: RedisBus
    resynced: int = 0


async def gated(client: Redis, redis_url: str, prefix: str, node_id: str, grace_s: float) -> GatedNode:
    bus = RedisBus(RedisConnector(parse_redis_url(redis_url)), prefix, client, cluster=False)
    await bus.start()
    lease = RedisNode(client, prefix, node_id, lease_s=LEASE_S, bus=bus, boot_gate=True, boot_grace_s=grace_s)
    node = GatedNode(lease, bus)

    async def count() -> None:
        node.resynced += 1

    lease.add_resynced_listener(count)
    await lease.heartbeat()
    await lease.check_cluster()
    return node


async def test_a_restart_closes_the_gate_until_every_live_node_has_re_synced(client: Redis, redis_url: str) -> None:
    prefix = f"g{uuid.uuid4().hex[:8]}"
    a = await gated(client, redis_url, prefix, "a", grace_s=0.3)
    b = await gated(client, redis_url, prefix, "b", grace_s=0.3)
    try:
        assert await a.lease.check_cluster() and a.lease.cluster_synced
        guard = a.lease.publish_guard()
        assert guard is not None and guard.value == a.lease.boot == b.lease.boot
        await a.lease.confirm_synced()

        # Redis restarts empty: the boot is gone; reads answered from it are refused.
        await client.delete(*[k async for k in client.scan_iter(f"{prefix}:*")])
        with pytest.raises(ClusterResyncing):
            await a.lease.confirm_synced()
        assert not a.lease.cluster_synced
        with pytest.raises(ClusterResyncing):
            a.lease.publish_guard()

        # a notices first and re-syncs; the cluster is not synced while b has not.
        await a.lease.watch_boot()
        await a.lease.heartbeat()
        new_boot = a.lease.boot
        assert new_boot is not None and new_boot != guard.value
        assert not await a.lease.check_cluster()
        await asyncio.sleep(0.05)
        assert a.resynced == 0  # its rosters are re-read only once the whole cluster is synced
        await b.lease.watch_boot()
        await b.lease.heartbeat()
        assert b.lease.boot == new_boot
        # ... and not before the grace after a restart has passed.
        await asyncio.sleep(0.35)
        assert await a.lease.check_cluster() and await b.lease.check_cluster()
        guard = a.lease.publish_guard()
        assert guard is not None and guard.value == new_boot
        # Then (not before) each node re-reads what it built from events (the gateway's rosters).
        await asyncio.wait_for(_until(lambda: a.resynced == 1 and b.resynced == 1), 5)
    finally:
        for node in (a, b):
            await node.lease.stop_node()
            await node.bus.close()


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


async def test_a_resync_waits_until_the_bus_subscriber_receives_again(
    client: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a partition heals, the node's old subscriber connection can carry nothing for seconds more
    while Redis still lists its subscriptions (docs/cluster.md, "Partitions"). The re-sync that makes
    the node's members visible again must wait until its subscriber receives, so that what is published
    from then on reaches the node. The keep-alive ping is pushed past the test, so only the re-sync can
    notice the stalled connection here."""
    monkeypatch.setattr(redis_impl, "PING_INTERVAL_S", 3600.0)
    proxy = await FailoverProxy([urlsplit(redis_url).port or 6379]).start()
    prefix = f"p{uuid.uuid4().hex[:8]}"
    bus = RedisBus(RedisConnector(parse_redis_url(f"redis://127.0.0.1:{proxy.port}")), prefix, client,
                   cluster=False)
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    bus.set_receiver(received.put_nowait)
    await bus.start()
    lease = RedisNode(client, prefix, "a", lease_s=LEASE_S, bus=bus, boot_gate=True, boot_grace_s=0.1)
    topic = bus.topic(APP, "feed")
    try:
        await lease.heartbeat()
        await bus.subscribe(APP, "feed")
        await client.publish(topic, Envelope(APP, "feed", "e", "before").pack())
        assert (await asyncio.wait_for(received.get(), 5)).data == "before"

        # The partition heals for new connections; the subscriber's own stays open and silent.
        proxy.cut()
        proxy.resume(stale=True)
        assert await client.pubsub_numsub(topic) == [(topic, 1)]  # Redis still counts it
        lease.needs_sync = True  # as after the node's commands failed during the partition
        await asyncio.wait_for(lease.heartbeat(), 15)

        await client.publish(topic, Envelope(APP, "feed", "e", "after").pack())
        assert (await asyncio.wait_for(received.get(), 5)).data == "after"
        assert received.empty()  # the probes that checked the subscriber were not relayed
        assert [conn.reconnects for conn in bus.connections] == [1]
    finally:
        await lease.stop_node()
        await bus.close()
        await proxy.stop()
