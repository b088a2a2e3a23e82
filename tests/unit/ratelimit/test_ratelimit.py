"""The per-app rate limiter (shared/ratelimit/), one behaviour suite over the in-memory
implementation and the Redis one (a real redis-server; two clients stand for two HTTP API processes).

Burst behaviour is checked without timing: a fresh bucket holds exactly `limit` points. Refills are
checked by waiting out the `retry_after_s` the limiter itself announced.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from shared.ratelimit.base import EVENTS, READS, RateDecision, RateLimiter
from shared.ratelimit.memory_impl import MemoryRateLimiter
from shared.ratelimit.redis_impl import RedisRateLimiter
from tests.unit.fakes import ManualClock

Factory = Callable[[], RateLimiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Limiters sharing one store: one process's (memory) or the cluster's (Redis, a client each)."""
    if request.param == "memory":
        shared = MemoryRateLimiter()
        yield lambda: shared
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    clients: list[Redis] = []

    def make() -> RateLimiter:
        client = Redis.from_url(url)
        clients.append(client)
        return RedisRateLimiter(client, prefix)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def app_id() -> str:
    return f"app-{uuid.uuid4().hex}"


async def take_all(limiter: RateLimiter, app_id: str, limit: int, points: int = 1, kind: str = EVENTS,
                   tries: int = 100) -> list[RateDecision]:
    return [await limiter.take(app_id, kind, points, limit) for _ in range(tries)]


async def test_a_full_bucket_holds_exactly_the_limit(make_limiter: Factory, app_id: str) -> None:
    decisions = await take_all(make_limiter(), app_id, limit=10, tries=15)
    allowed = [d for d in decisions if d.allowed]
    # Refill while these 15 calls run is at most a point or two on a slow machine, never 5.
    assert 10 <= len(allowed) <= 12
    assert decisions[0].remaining == 9 and decisions[0].limit == 10
    refused = decisions[-1]
    assert not refused.allowed and refused.remaining == 0 and 0 < refused.retry_after_s <= 0.2
    assert refused.headers()["Retry-After"] == "1" and refused.headers()["X-RateLimit-Limit"] == "10"
    assert refused.headers()["X-RateLimit-Remaining"] == "0"


async def test_points_count_per_channel_and_a_refusal_spends_nothing(make_limiter: Factory, app_id: str) -> None:
    limiter = make_limiter()
    first = await limiter.take(app_id, EVENTS, 60, 100)
    assert first.allowed and 39 <= first.remaining <= 40
    too_many = await limiter.take(app_id, EVENTS, 60, 100)
    assert not too_many.allowed
    # The refused 60 were not spent: 40 still fit.
    assert (await limiter.take(app_id, EVENTS, 40, 100)).allowed


async def test_requests_the_limit_can_never_hold(make_limiter: Factory, app_id: str) -> None:
    limiter = make_limiter()
    assert not (await limiter.take(app_id, EVENTS, 11, 10)).allowed
    assert not (await limiter.take(app_id, EVENTS, 1, 0)).allowed  # 0: none allowed (soketi)
    assert (await limiter.take(app_id, EVENTS, 10, 10)).allowed  # nothing was spent by either


async def test_buckets_are_per_app_and_kind(make_limiter: Factory, app_id: str) -> None:
    limiter = make_limiter()
    assert all(d.allowed for d in await take_all(limiter, app_id, limit=5, tries=5))
    assert not (await limiter.take(app_id, EVENTS, 1, 5)).allowed
    assert (await limiter.take(app_id, READS, 1, 5)).allowed
    assert (await limiter.take(app_id + "-other", EVENTS, 1, 5)).allowed


async def test_points_come_back_after_the_announced_wait(make_limiter: Factory, app_id: str) -> None:
    limiter = make_limiter()
    await take_all(limiter, app_id, limit=20, tries=20)
    refused = await limiter.take(app_id, EVENTS, 5, 20)
    assert not refused.allowed and refused.retry_after_s > 0
    await asyncio.sleep(refused.retry_after_s + 0.05)
    assert (await limiter.take(app_id, EVENTS, 5, 20)).allowed


async def test_the_limit_holds_across_processes(make_limiter: Factory, app_id: str) -> None:
    """Two limiters (two HTTP API processes with Redis) draw from one bucket."""
    one, two = make_limiter(), make_limiter()
    results = await asyncio.gather(*(take_all(limiter, app_id, limit=30, tries=25) for limiter in (one, two)))
    allowed = sum(d.allowed for decisions in results for d in decisions)
    assert 30 <= allowed <= 33


async def test_a_changed_limit_applies_to_the_next_request(make_limiter: Factory, app_id: str) -> None:
    """The bucket keeps how full it is; it refills at the new rate from the next request on."""
    limiter = make_limiter()
    await take_all(limiter, app_id, limit=5, tries=6)
    slow = await limiter.take(app_id, EVENTS, 1, 5)
    assert not slow.allowed and slow.retry_after_s > 0.02  # a point per 0.2 s
    raised = await limiter.take(app_id, EVENTS, 1, 1000)
    assert raised.allowed or raised.retry_after_s <= 0.002  # a point per ms
    # 8 of 10 spent: one more point would fit under 10 per second, not under 2.
    assert (await limiter.take(app_id + "-b", EVENTS, 8, 10)).allowed
    assert not (await limiter.take(app_id + "-b", EVENTS, 1, 2)).allowed


def test_memory_refill_on_a_manual_clock() -> None:
    """The arithmetic exactly, on a clock moved by hand: one point back every 1/limit seconds."""
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock)
    run = asyncio.new_event_loop().run_until_complete
    assert all(run(limiter.take("a", EVENTS, 1, 4)).allowed for _ in range(4))
    refused = run(limiter.take("a", EVENTS, 1, 4))
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.25)
    assert refused.reset_s == pytest.approx(1.0)
    clock.advance(0.25)
    ok = run(limiter.take("a", EVENTS, 1, 4))
    assert ok.allowed and ok.remaining == 0
    clock.advance(1.0)
    assert run(limiter.take("a", EVENTS, 1, 4)).remaining == 3
