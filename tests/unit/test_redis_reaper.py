"""The Redis node records, read back by the reaper: a dead node's subscriptions, members and signed-in
users come out as transitions, and nothing of it stays in Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.state.base import Member, Transitions
from shared.state.redis_impl import RedisOccupancyStore, RedisPresenceStore, RedisUserStore
from shared.state.redis_node import RedisNode


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_reaping_a_node_reports_vacated_removed_and_offline(client: Redis) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    dead, survivor = RedisNode(client, prefix, "dead"), RedisNode(client, prefix, "alive")
    occ = {n: RedisOccupancyStore(n) for n in (dead, survivor)}
    pres = RedisPresenceStore(dead)
    users = {n: RedisUserStore(n) for n in (dead, survivor)}
    seen: list[Transitions] = []

    async def record(t: Transitions) -> None:
        seen.append(t)

    survivor.add_transitions_listener(record)
    await occ[dead].add("app", "news", "1.1")
    await occ[survivor].add("app", "shared", "2.1")
    await occ[dead].add("app", "shared", "1.2")
    assert (await pres.join("app", "presence-x", "1.1", Member("u1", {"n": 1}), 100)).added
    assert await users[dead].signin("app", "u1", "1.1")
    assert await users[survivor].signin("app", "u2", "2.1")
    assert await users[dead].signin("app", "u2", "1.3") is False

    await survivor.reap_node("dead")

    [t] = seen
    assert t.vacated == ["news"] and t.occupied == []
    assert t.removed == [("presence-x", Member("u1", {"n": 1}))]
    assert t.offline == ["u1"] and t.online == []
    assert sorted(t.counts) == [("news", 0), ("shared", 1)]
    assert await occ[survivor].counts("app", ["news", "shared"]) == [0, 1]
    assert await users[survivor].online("app", ["u1", "u2"]) == [False, True]
    assert await pres.members("app", "presence-x") == []
    assert [k async for k in client.scan_iter(f"{prefix}:*dead*")] == []
