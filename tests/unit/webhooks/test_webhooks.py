"""Webhook queueing and delivery (docs/webhooks.md).

Each test runs on both job stores through the `store` fixture: the in-memory one and the Redis one on
the session's real redis-server. Time is a manual wall clock; deliveries happen in `run_due()` steps, so
delays, backoff and the 5-minute limit are checked to the millisecond without waiting. Requests go to a
recording fake sender, except where the real HTTP sender and receiver (with both pusher SDKs) are the
point.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from shared.apps.config import AppConfig, WebhookConfig
from shared.apps.registry import AppRegistry
from shared.backend import memory_backend
from shared.protocol.events import WEBHOOK_CACHE_MISS as CACHE_MISS
from shared.protocol.events import WEBHOOK_CHANNEL_OCCUPIED as CHANNEL_OCCUPIED
from shared.protocol.events import WEBHOOK_CHANNEL_VACATED as CHANNEL_VACATED
from shared.protocol.events import WEBHOOK_CLIENT_EVENT as CLIENT_EVENT
from shared.protocol.events import WEBHOOK_MEMBER_ADDED as MEMBER_ADDED
from shared.protocol.events import WEBHOOK_MEMBER_REMOVED as MEMBER_REMOVED
from shared.protocol.events import WEBHOOK_SUBSCRIPTION_COUNT as SUBSCRIPTION_COUNT
from shared.protocol.signatures import sign_webhook
from shared.redis.backend import redis_backend
from shared.webhooks.base import (
    JobStore,
    NullWebhookQueue,
    WebhookEvent,
    wants,
)
from shared.webhooks.memory_impl import MemoryJobStore
from shared.webhooks.queue import CLAIM_LIMIT, QueuedWebhooks, backoff_s
from shared.webhooks.redis_impl import RedisJobStore
from tests.webhook_receiver import WebhookReceiver

ALL_TYPES = (CHANNEL_OCCUPIED, CHANNEL_VACATED, MEMBER_ADDED, MEMBER_REMOVED, CLIENT_EVENT, CACHE_MISS,
             SUBSCRIPTION_COUNT)
HOOK = "http://receiver.test/hook"
OTHER = "http://receiver.test/other"


class WallClock:
    """Seconds since the epoch that move only when told to (starts at the real time, so the PyPI SDK's
    300 s freshness check passes)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


@dataclass
class Sent:
    url: str
    headers: dict[str, str]
    body: bytes
    at_ms: int

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["events"]
        return events

    @property
    def time_ms(self) -> int:
        return int(json.loads(self.body)["time_ms"])


@dataclass
class FakeSender:
    """Records requests; answers from `failures` (one per request, None = 2xx) and then 2xx."""

    clock: WallClock
    failures: list[str | None] = field(default_factory=list)
    always_fail: str | None = None
    sent: list[Sent] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        self.sent.append(Sent(url, headers, body, self.clock.ms))
        if self.always_fail is not None:
            return self.always_fail
        return self.failures.pop(0) if self.failures else None

    async def close(self) -> None:
        return None

    def events(self, url: str | None = None) -> list[dict[str, Any]]:
        return [e for s in self.sent if url is None or s.url == url for e in s.events]


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        yield MemoryJobStore()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisJobStore(client, f"t{uuid.uuid4().hex[:8]}")
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def sender(clock: WallClock) -> FakeSender:
    return FakeSender(clock)


def make_app(hooks: Sequence[WebhookConfig] = (), **overrides: Any) -> AppConfig:
    values: dict[str, Any] = {"id": f"wh-{uuid.uuid4().hex[:10]}", "key": "wh-key", "secret": "wh-secret",
                              "webhooks": tuple(hooks) or (WebhookConfig(HOOK, ALL_TYPES),)}
    values.update(overrides)
    return AppConfig(**values)


def make_queue(store: JobStore, sender: Any, clock: WallClock, *apps: AppConfig, **options: Any) -> QueuedWebhooks:
    return QueuedWebhooks(store, AppRegistry(apps), workers=0, sender=sender, clock=clock, **options)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in events]


# -- format ---------------------------------------------------------------------------------------


async def test_request_format_signature_and_custom_headers_pass_both_sdks(store: JobStore, clock: WallClock) -> None:
    receiver = WebhookReceiver([{"key": "wh-key", "secret": "wh-secret"}]).start()
    try:
        hook = WebhookConfig(receiver.url(), ALL_TYPES, headers={"X-Custom": "yes", "content-type": "text/plain"})
        app = make_app([hook])
        queue = QueuedWebhooks(store, AppRegistry([app]), workers=0, clock=clock)
        await queue.start()
        try:
            created = clock.ms
            await queue.enqueue(app, [
                WebhookEvent(CHANNEL_OCCUPIED, "my-channel"),
                WebhookEvent(CLIENT_EVENT, "presence-x", user_id=42, event="client-typing", data={"a": [1, "é"]},
                             socket_id="1.2"),
            ])
            clock.advance(1)
            assert await queue.run_due() == 2
        finally:
            await queue.close()
        first, second = receiver.requests()
        # One event per request (no batching); time_ms is the creation time, not the sending time.
        assert first.data == {"time_ms": created, "events": [{"name": "channel_occupied", "channel": "my-channel"}]}
        assert second.events == [{"name": "client_event", "channel": "presence-x", "event": "client-typing",
                                  "data": {"a": [1, "é"]}, "socket_id": "1.2", "user_id": "42"}]
        for r in (first, second):
            assert r.headers["content-type"] == "application/json"
            assert r.headers["x-pusher-key"] == "wh-key"
            assert r.headers["x-pusher-signature"] == sign_webhook("wh-secret", r.body)
            assert r.headers["x-custom"] == "yes"
            assert r.python_sdk == r.data
        receiver.assert_valid()
        assert await store.pending(app.id) == 0
    finally:
        receiver.stop()


# -- filters --------------------------------------------------------------------------------------


async def test_each_webhook_gets_only_its_event_types_and_channel_filters(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    hooks = [
        WebhookConfig("http://r.test/all", ALL_TYPES),
        WebhookConfig("http://r.test/occupied", (CHANNEL_OCCUPIED,)),
        WebhookConfig("http://r.test/prefix", ALL_TYPES, channel_name_starts_with="private-"),
        WebhookConfig("http://r.test/both", (CHANNEL_OCCUPIED, CLIENT_EVENT), channel_name_starts_with="private-",
                      channel_name_ends_with="-room"),
    ]
    app = make_app(hooks)
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [
        WebhookEvent(CHANNEL_OCCUPIED, "public-room"),
        WebhookEvent(CHANNEL_OCCUPIED, "private-room"),
        WebhookEvent(CHANNEL_OCCUPIED, "private-hall"),
        WebhookEvent(CLIENT_EVENT, "private-room", event="client-x", data="d", socket_id="1.1"),
        WebhookEvent(CACHE_MISS, "cache-room"),
    ])
    await queue.run_due()

    def got(url: str) -> list[tuple[str, str]]:
        return [(e["name"], e["channel"]) for e in sender.events(f"http://r.test/{url}")]

    assert got("all") == [(CHANNEL_OCCUPIED, "public-room"), (CHANNEL_OCCUPIED, "private-room"),
                          (CHANNEL_OCCUPIED, "private-hall"), (CLIENT_EVENT, "private-room"),
                          (CACHE_MISS, "cache-room")]
    assert got("occupied") == [(CHANNEL_OCCUPIED, "public-room"), (CHANNEL_OCCUPIED, "private-room"),
                               (CHANNEL_OCCUPIED, "private-hall")]
    assert got("prefix") == [(CHANNEL_OCCUPIED, "private-room"), (CHANNEL_OCCUPIED, "private-hall"),
                             (CLIENT_EVENT, "private-room")]
    assert got("both") == [(CHANNEL_OCCUPIED, "private-room"), (CLIENT_EVENT, "private-room")]
    assert all(len(s.events) == 1 for s in sender.sent)


async def test_apps_without_webhooks_or_events_queue_nothing(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    bare = make_app(hooks=(), webhooks=())
    app = make_app([WebhookConfig(HOOK, (CHANNEL_OCCUPIED,))])
    queue = make_queue(store, sender, clock, app, bare)
    await queue.enqueue(bare, [WebhookEvent(CHANNEL_OCCUPIED, "x")])
    await queue.enqueue(app, [WebhookEvent(CACHE_MISS, "x")])  # no webhook of the app takes it
    await queue.enqueue(app, [])
    assert await store.pending(bare.id) == 0 and await store.pending(app.id) == 0
    assert await queue.run_due() == 0


# -- delay and cancel (docs/webhooks.md) -----------------------------------------------------------


async def test_vacated_and_member_removed_wait_three_seconds(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)  # the default delay: WEBHOOK_DELAY_S = 3
    created = clock.ms
    await queue.enqueue(app, [WebhookEvent(MEMBER_REMOVED, "presence-a", user_id="u1"),
                              WebhookEvent(CHANNEL_VACATED, "presence-a")])
    clock.advance(2.999)
    assert await queue.run_due() == 0
    clock.advance(0.001)
    assert await queue.run_due() == 2
    assert names(sender.events()) == [MEMBER_REMOVED, CHANNEL_VACATED]
    assert {s.time_ms for s in sender.sent} == {created}
    assert {s.at_ms - created for s in sender.sent} == {3000}


async def test_reoccupied_within_the_delay_sends_neither(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room"),
                              WebhookEvent(MEMBER_ADDED, "presence-room", user_id="alice")])
    await queue.run_due()
    assert names(sender.events()) == [CHANNEL_OCCUPIED, MEMBER_ADDED]
    sender.sent.clear()
    vacated_before = counter("herald_webhooks_cancelled_total", event=CHANNEL_VACATED)
    occupied_before = counter("herald_webhooks_cancelled_total", event=CHANNEL_OCCUPIED)

    # The last client leaves and comes back 2.5 s later (the 7.4 reconnect case).
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room"),
                              WebhookEvent(MEMBER_REMOVED, "presence-room", user_id="alice")])
    clock.advance(2.5)
    await queue.run_due()
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room"),
                              WebhookEvent(MEMBER_ADDED, "presence-room", user_id="alice")])
    clock.advance(10)
    assert await queue.run_due() == 0
    assert sender.sent == []
    assert await store.pending(app.id) == 0
    assert counter("herald_webhooks_cancelled_total", event=CHANNEL_VACATED) == vacated_before + 1
    assert counter("herald_webhooks_cancelled_total", event=CHANNEL_OCCUPIED) == occupied_before + 1


async def test_reoccupied_after_the_delay_sends_both(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room"),
                              WebhookEvent(MEMBER_REMOVED, "presence-room", user_id=7)])
    clock.advance(3)
    await queue.run_due()
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room"),
                              WebhookEvent(MEMBER_ADDED, "presence-room", user_id=7)])
    await queue.run_due()
    assert [(e["name"], e.get("user_id")) for e in sender.events()] == [
        (CHANNEL_VACATED, None), (MEMBER_REMOVED, "7"), (CHANNEL_OCCUPIED, None), (MEMBER_ADDED, "7")]


async def test_cancel_pairs_same_channel_and_same_user_only(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "a"), WebhookEvent(CHANNEL_VACATED, "b"),
                              WebhookEvent(MEMBER_REMOVED, "presence-p", user_id="1"),
                              WebhookEvent(MEMBER_REMOVED, "presence-p", user_id="2")])
    clock.advance(1)
    # Another channel, another user, and the same user id given as a number (compared as a string).
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "c"), WebhookEvent(CHANNEL_OCCUPIED, "b"),
                              WebhookEvent(MEMBER_ADDED, "presence-p", user_id=2),
                              WebhookEvent(MEMBER_ADDED, "presence-q", user_id="1")])
    clock.advance(3)
    await queue.run_due()
    assert sorted((e["name"], e["channel"], e.get("user_id")) for e in sender.events()) == sorted([
        (CHANNEL_OCCUPIED, "c", None), (MEMBER_ADDED, "presence-q", "1"),
        (CHANNEL_VACATED, "a", None), (MEMBER_REMOVED, "presence-p", "1")])


async def test_a_vacate_already_claimed_is_not_cancelled(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    """Once a worker has taken the vacate (here: its first attempt failed), the receiver may have it:
    the re-occupy is sent too, and the vacate keeps being retried."""
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    sender.failures = ["http_500: down"]
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room")])
    clock.advance(3)
    await queue.run_due()
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room")])
    await queue.run_due()
    clock.advance(1)
    await queue.run_due()
    assert names(sender.events()) == [CHANNEL_VACATED, CHANNEL_OCCUPIED, CHANNEL_VACATED]
    assert [s.time_ms for s in sender.sent][::2] == [sender.sent[0].time_ms] * 2
    assert await store.pending(app.id) == 0


async def test_cancel_is_per_webhook(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    """A webhook that takes only channel_vacated still loses its pending vacate to a re-occupy that
    another webhook of the app takes."""
    hooks = [WebhookConfig(HOOK, (CHANNEL_VACATED,)), WebhookConfig(OTHER, (CHANNEL_OCCUPIED, CHANNEL_VACATED))]
    app = make_app(hooks)
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room")])
    clock.advance(1)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room")])
    clock.advance(5)
    assert await queue.run_due() == 0
    assert await store.pending(app.id) == 0


async def test_cancel_within_the_delay_with_a_short_test_delay(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app, delay_s=0.2)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room")])
    clock.advance(0.1)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room")])
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room")])
    clock.advance(0.2)
    await queue.run_due()
    assert names(sender.events()) == [CHANNEL_VACATED]


# -- batching -------------------------------------------------------------------------------------


async def test_batching_puts_events_due_together_in_one_request_per_webhook(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app([WebhookConfig(HOOK, ALL_TYPES), WebhookConfig(OTHER, (CHANNEL_OCCUPIED,))],
                   webhook_batching=True)
    queue = make_queue(store, sender, clock, app)
    first_ms = clock.ms
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "a")])
    clock.advance(0.01)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "b"), WebhookEvent(CACHE_MISS, "cache-c")])
    clock.advance(0.01)
    await queue.enqueue(app, [WebhookEvent(SUBSCRIPTION_COUNT, "a", subscription_count=2)])
    assert await queue.run_due() == 0  # the batch window is still open
    clock.advance(0.05)
    assert await queue.run_due() == 2
    by_url = {s.url: s for s in sender.sent}
    assert [(e["name"], e["channel"]) for e in by_url[HOOK].events] == [
        (CHANNEL_OCCUPIED, "a"), (CHANNEL_OCCUPIED, "b"), (CACHE_MISS, "cache-c"), (SUBSCRIPTION_COUNT, "a")]
    assert by_url[HOOK].events[3]["subscription_count"] == 2
    assert [e["channel"] for e in by_url[OTHER].events] == ["a", "b"]
    assert by_url[HOOK].time_ms == first_ms  # the oldest event's creation time
    # Delayed events are due later and come in their own request.
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "a")])
    clock.advance(3)
    assert await queue.run_due() == 1
    assert names(sender.sent[-1].events) == [CHANNEL_VACATED]


async def test_without_batching_every_event_is_its_own_request(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, c) for c in "abc"])
    assert await queue.run_due() == 3
    assert [len(s.events) for s in sender.sent] == [1, 1, 1]


async def test_batches_are_limited_in_size(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app(webhook_batching=True)
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, f"c{i}") for i in range(CLAIM_LIMIT + 5)])
    clock.advance(1)
    await queue.run_due()
    assert [len(s.events) for s in sender.sent] == [CLAIM_LIMIT, 5]


# -- retries --------------------------------------------------------------------------------------


def test_backoff_schedule() -> None:
    assert [backoff_s(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


async def test_failures_are_retried_with_exponential_backoff_then_dropped_after_five_minutes(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    sender.always_fail = "http_500: nope"
    dropped_before = counter("herald_webhooks_dropped_total", event=CACHE_MISS, reason="expired")
    failed_before = counter("herald_webhooks_requests_total", app_id=app.id, outcome="http_500")
    retries_before = counter("herald_webhooks_retries_total")
    created = clock.ms
    await queue.enqueue(app, [WebhookEvent(CACHE_MISS, "cache-x")])
    # Step through time 250 ms at a time, delivering whatever is due, for six minutes.
    for _ in range(int(360 / 0.25)):
        await queue.run_due()
        clock.advance(0.25)
    offsets = [(s.at_ms - created) / 1000 for s in sender.sent]
    assert offsets == [0, 1, 3, 7, 15, 31, 63, 123, 183, 243]
    # The next attempt would be at 303 s, past the 5 minutes: the job was dropped after the 243 s one.
    assert await store.pending(app.id) == 0
    assert {s.time_ms for s in sender.sent} == {created}
    assert counter("herald_webhooks_dropped_total", event=CACHE_MISS, reason="expired") == dropped_before + 1
    assert counter("herald_webhooks_requests_total", app_id=app.id, outcome="http_500") == failed_before + 10
    # Every failed attempt but the last was rescheduled.
    assert counter("herald_webhooks_retries_total") == retries_before + 9


async def test_a_retry_that_succeeds_is_delivered_once_with_its_creation_time(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    sender.failures = ["http_503: busy", "network: ConnectError"]
    delivered_before = counter("herald_webhooks_delivered_total", event=CHANNEL_OCCUPIED)
    created = clock.ms
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "x")])
    for _ in range(40):
        await queue.run_due()
        clock.advance(0.25)
    assert [(s.at_ms - created) / 1000 for s in sender.sent] == [0, 1, 3]
    assert [s.body for s in sender.sent] == [sender.sent[0].body] * 3  # same body, same signature
    assert counter("herald_webhooks_delivered_total", event=CHANNEL_OCCUPIED) == delivered_before + 1
    assert await store.pending(app.id) == 0


async def test_one_failing_webhook_does_not_resend_to_the_others(
    store: JobStore, clock: WallClock
) -> None:
    class PerUrl(FakeSender):
        async def send(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
            self.sent.append(Sent(url, headers, body, self.clock.ms))
            return "http_500: x" if url == OTHER else None

    sender = PerUrl(clock)
    app = make_app([WebhookConfig(HOOK, ALL_TYPES), WebhookConfig(OTHER, ALL_TYPES)])
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "x")])
    for _ in range(5):
        await queue.run_due()
        clock.advance(1)
    assert [s.url for s in sender.sent].count(HOOK) == 1
    assert [s.url for s in sender.sent].count(OTHER) == 3  # at 0, 1 and 3 s


async def test_jobs_older_than_five_minutes_when_claimed_are_dropped_unsent(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "x")])
    clock.advance(301)  # e.g. no worker anywhere for five minutes
    assert await queue.run_due() == 1
    assert sender.sent == []
    assert await store.pending(app.id) == 0


# -- claims ---------------------------------------------------------------------------------------


async def test_a_claimed_job_is_redelivered_after_the_visibility_timeout(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    """Process A claims and dies before delivering; process B delivers once the claim times out."""
    app = make_app()
    dead = make_queue(store, FakeSender(clock), clock, app, visibility_s=30)
    survivor = make_queue(store, sender, clock, app, visibility_s=30)
    created = clock.ms
    await survivor.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "x")])
    deliveries, _ = await dead.claim(app, 10)
    assert len(deliveries) == 1
    assert await survivor.run_due() == 0  # claimed: invisible to others
    clock.advance(29.999)
    assert await survivor.run_due() == 0
    clock.advance(0.001)
    assert await survivor.run_due() == 1
    assert len(sender.sent) == 1 and sender.sent[0].time_ms == created
    clock.advance(60)
    assert await survivor.run_due() == 0
    assert await store.pending(app.id) == 0


async def test_claims_do_not_overlap(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app()
    a = make_queue(store, sender, clock, app)
    b = make_queue(store, sender, clock, app)
    await a.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, f"c{i}") for i in range(20)])
    claims = await asyncio.gather(*(q.claim(app, 3) for q in [a, b] * 5))
    ids = [j.id for deliveries, _ in claims for d in deliveries for j in d.jobs]
    assert len(ids) == len(set(ids)) == 20


async def test_claim_reports_the_next_due_time(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    assert (await queue.claim(app, 10))[1] is None
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "x")])
    deliveries, next_due = await queue.claim(app, 10)
    assert deliveries == [] and next_due == clock.ms + 3000


async def test_backlog_gauges_show_queued_jobs_and_how_long_the_oldest_due_one_waited(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)

    def gauges() -> tuple[float, float]:
        return (counter("herald_webhooks_queue_jobs", app_id=app.id),
                counter("herald_webhooks_queue_oldest_age_seconds", app_id=app.id))

    await queue.measure()
    assert gauges() == (0, 0)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "a"), WebhookEvent(CHANNEL_VACATED, "b")])
    await queue.measure()
    assert gauges() == (2, 0)  # the occupied job is due now, the vacated one in 3 s
    clock.advance(7.5)  # nobody claims: both are overdue, the first by 7.5 s
    await queue.measure()
    assert gauges() == (2, 7.5)
    assert await queue.run_due() == 2
    await queue.measure()
    assert gauges() == (0, 0)


async def test_jobs_for_a_removed_webhook_are_dropped(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app([WebhookConfig(HOOK, ALL_TYPES), WebhookConfig(OTHER, ALL_TYPES)])
    await make_queue(store, sender, clock, app).enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "x")])
    # The apps file changed: the first webhook is gone, the second moved to index 0.
    changed = AppConfig(id=app.id, key=app.key, secret=app.secret, webhooks=(WebhookConfig(OTHER, ALL_TYPES),))
    assert await make_queue(store, sender, clock, changed).run_due() == 2
    assert [s.url for s in sender.sent] == [OTHER]
    assert await store.pending(app.id) == 0


# -- the background workers ------------------------------------------------------------------------


async def test_workers_deliver_in_the_background_and_enqueue_never_waits_for_receivers(
    store: JobStore,
) -> None:
    receiver = WebhookReceiver([{"key": "wh-key", "secret": "wh-secret"}]).start()
    try:
        app = make_app([WebhookConfig(receiver.url(), ALL_TYPES)])
        queue = QueuedWebhooks(store, AppRegistry([app]), workers=2, delay_s=0.3)
        await queue.start()
        try:
            receiver.slow(0.5)
            started = time.monotonic()
            for i in range(10):
                await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, f"c{i}")])
            assert time.monotonic() - started < 0.2, "enqueue waited for the slow receiver"
            # Two workers, 0.5 s per request: 10 requests take about 2.5 s, never more than 2 at a time.
            await receiver.wait_for(lambda r: len(r.accepted()) == 10, timeout=10)
            arrivals = sorted(r.at for r in receiver.requests())
            assert all(arrivals[i + 2] - arrivals[i] >= 0.45 for i in range(len(arrivals) - 2)), arrivals
            receiver.slow(0)
            await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "v")])
            await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "w")])
            await asyncio.sleep(0.1)
            await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "w")])
            await receiver.wait_events(CHANNEL_VACATED, "v")
            await asyncio.sleep(0.5)
            assert receiver.events_named(CHANNEL_VACATED, "w") == []
            assert receiver.events_named(CHANNEL_OCCUPIED, "w") == []
            assert await store.pending(app.id) == 0
        finally:
            await queue.close()
        receiver.assert_valid(node_checks=2)
    finally:
        receiver.stop()


async def test_workers_retry_a_receiver_that_answered_500(store: JobStore) -> None:
    receiver = WebhookReceiver([{"key": "wh-key", "secret": "wh-secret"}]).start()
    try:
        app = make_app([WebhookConfig(receiver.url(), ALL_TYPES)])
        queue = QueuedWebhooks(store, AppRegistry([app]), workers=1)
        await queue.start()
        try:
            receiver.fail_next(2)
            await queue.enqueue(app, [WebhookEvent(CACHE_MISS, "cache-1")])
            await receiver.wait_for(lambda r: len(r.accepted()) == 1, timeout=10)
            statuses = [r.status for r in receiver.requests()]
            assert statuses == [500, 500, 200]
            gaps = [b.at - a.at for a, b in zip(receiver.requests(), receiver.requests()[1:], strict=False)]
            assert 0.9 < gaps[0] < 1.6 and 1.9 < gaps[1] < 2.6, gaps
            assert len({r.body for r in receiver.requests()}) == 1
        finally:
            await queue.close()
    finally:
        receiver.stop()


async def test_close_hands_unstarted_jobs_back(store: JobStore, clock: WallClock) -> None:
    app = make_app()

    class Stuck(FakeSender):
        async def send(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
            await asyncio.sleep(3600)
            return None

    queue = QueuedWebhooks(store, AppRegistry([app]), workers=1, sender=Stuck(clock), clock=clock,
                           close_grace_s=0.2)
    await queue.start()
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, f"c{i}") for i in range(2)])
    for _ in range(100):
        if queue._inflight == 2:
            break
        await asyncio.sleep(0.01)
    await queue.close()  # one stuck in flight (claimed until the visibility timeout), one handed back
    sender = FakeSender(clock)
    assert await make_queue(store, sender, clock, app).run_due() == 1
    clock.advance(30)
    assert await make_queue(store, sender, clock, app).run_due() == 1
    assert sorted(e["channel"] for e in sender.events()) == ["c0", "c1"]


# -- assembly -------------------------------------------------------------------------------------


async def test_backends_build_the_queue_with_the_app_registry(redis_url: str) -> None:
    registry = AppRegistry([make_app()])
    memory = memory_backend(registry)
    assert isinstance(memory.webhooks, QueuedWebhooks) and memory.webhooks.registry is registry
    assert memory.apps is registry
    assert isinstance(memory_backend(registry, webhook_workers=0).webhooks, NullWebhookQueue)
    redis = redis_backend(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}", cluster=False, apps=registry,
                          webhook_workers=0)
    # Without workers a Redis node still queues (other processes deliver).
    assert isinstance(redis.webhooks, QueuedWebhooks) and redis.webhooks.workers == 0
    assert isinstance(redis.webhooks.store, RedisJobStore) and redis.apps is registry
    await redis.client.aclose()


def test_cli_refuses_negative_webhook_workers(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "herald", "serve", "--webhook-workers", "-1", "--port", "1"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "--webhook-workers" in result.stderr, result.stderr


async def test_reconnect_cancels_a_vacate_even_when_no_webhook_takes_occupied() -> None:
    """Delay and cancel with a vacate-only webhook: the gateway still hands the re-occupy to the queue,
    so the pending vacate is withdrawn and the receiver hears nothing."""
    from tests.unit.fakes import Harness

    app = make_app([WebhookConfig(url="http://127.0.0.1:9/hook", event_types=("channel_vacated",))])
    assert wants(app, "channel_occupied") and wants(app, "channel_vacated")
    assert not wants(app, "member_added")
    harness = Harness()
    queued: list[str] = []

    class Recorder:
        async def enqueue(self, app: AppConfig, events: Sequence[Any]) -> None:
            queued.extend(e.name for e in events)

    harness.backend.webhooks = Recorder()  # type: ignore[assignment]
    client = harness.connect(app)
    await client.subscribe("news")
    await client.unsubscribe("news")
    await client.subscribe("news")
    assert queued == ["channel_occupied", "channel_vacated", "channel_occupied"]


# -- pairing by transition order (issue 9: two nodes changing a channel in the same millisecond) ---

MS_US = 1000  # stamps are microseconds


async def test_an_occupy_that_arrives_before_its_vacate_cancels_both(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    """Node A vacates (stamp v) and node B re-occupies (stamp v + 1 ms, after v) at about the same time;
    B's enqueue reaches the queue first. Neither webhook is sent, as if they had arrived in order."""
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    v = clock.ms * MS_US
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room", stamp=v - 5000),
                              WebhookEvent(MEMBER_ADDED, "presence-room", user_id="al", stamp=v - 4000)])
    await queue.run_due()
    sender.sent.clear()
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room", stamp=v + 1000, after=v),
                              WebhookEvent(MEMBER_ADDED, "presence-room", user_id="al", stamp=v + 1001,
                                           after=v + 1)])
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room", stamp=v),
                              WebhookEvent(MEMBER_REMOVED, "presence-room", user_id="al", stamp=v + 1)])
    clock.advance(10)
    assert await queue.run_due() == 0
    assert sender.sent == []
    assert await store.pending(app.id) == 0


async def test_an_occupy_pairs_only_with_the_vacate_it_follows(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    """Arriving in order, the pair still cancels; an occupy naming another vacate leaves the pending
    one alone (it is not this occupy's partner)."""
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    v = clock.ms * MS_US
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "a", stamp=v)])
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "a", stamp=v + 10, after=v)])
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "b", stamp=v + 20)])
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "b", stamp=v + 40, after=v + 30)])
    # ... and that vacate of b (v + 30) comes late: it is dropped, its occupy was withheld.
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "b", stamp=v + 30)])
    clock.advance(3)
    await queue.run_due()
    assert [(e["name"], e["channel"]) for e in sender.events()] == [(CHANNEL_VACATED, "b")]


async def test_an_occupy_long_after_its_vacate_is_sent(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    """More than the delay apart, an occupy and its vacate are both real: both sent, in order."""
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    v = clock.ms * MS_US
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room", stamp=v)])
    clock.advance(3)
    await queue.run_due()
    clock.advance(1)
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room", stamp=v + 4_000_000, after=v)])
    await queue.run_due()
    assert names(sender.events()) == [CHANNEL_VACATED, CHANNEL_OCCUPIED]


async def test_an_occupy_after_a_claimed_vacate_is_sent(store: JobStore, sender: FakeSender, clock: WallClock) -> None:
    app = make_app()
    queue = make_queue(store, sender, clock, app)
    v = clock.ms * MS_US
    await queue.enqueue(app, [WebhookEvent(MEMBER_REMOVED, "presence-r", user_id=5, stamp=v)])
    clock.advance(3)
    await queue.run_due()
    await queue.enqueue(app, [WebhookEvent(MEMBER_ADDED, "presence-r", user_id=5, stamp=v + 2_900_000, after=v)])
    await queue.run_due()
    assert names(sender.events()) == [MEMBER_REMOVED, MEMBER_ADDED]


async def test_an_occupy_on_a_webhook_without_vacates_is_not_held_back(
    store: JobStore, sender: FakeSender, clock: WallClock
) -> None:
    """The vacate it follows never reaches the queue for this webhook, so there is nothing to wait for."""
    app = make_app([WebhookConfig(HOOK, (CHANNEL_OCCUPIED,))])
    queue = make_queue(store, sender, clock, app)
    v = clock.ms * MS_US
    await queue.enqueue(app, [WebhookEvent(CHANNEL_VACATED, "room", stamp=v)])
    await queue.enqueue(app, [WebhookEvent(CHANNEL_OCCUPIED, "room", stamp=v + 5, after=v)])
    await queue.run_due()
    assert names(sender.events()) == [CHANNEL_OCCUPIED]
