"""Queueing and delivery of webhooks (docs/webhooks.md) over a `JobStore`.

One *job* is one event for one of the app's webhooks (so each receiver retries on its own). The store
(`MemoryJobStore` in one process, `RedisJobStore` for a cluster) keeps jobs with a due time and applies
every change atomically; `QueuedWebhooks` turns producers' events into jobs and runs the workers.

Life of a job:

* **enqueue** (one store call, never any HTTP): an event becomes one job per webhook whose
  `event_types` and channel filters take it. `channel_vacated` / `member_removed` jobs are due
  `delay_s` (3 s) later and leave a *cancel key* (webhook, channel[, user]). A `channel_occupied` /
  `member_added` for a key that still has a pending job withdraws that job and is itself not queued
  (a client back within the delay causes no webhooks). A job stops being cancellable
  once a worker claims it.
* **claim**: a worker takes due jobs and pushes their due time `visibility_s` ahead in the same step.
  A job whose claimer dies becomes due again and another process delivers it: at-least-once, and
  exactly-once while nobody crashes (visibility is well above the HTTP timeout).
* **deliver**: POST `{"time_ms": <creation>, "events": [...]}` signed with the app secret; 2xx acks
  (deletes) the job. Anything else schedules the next attempt 1 s, 2 s, 4 s, ... (capped at 60 s)
  after this one, until 5 minutes after creation; a job that would go past that is dropped.
  With `webhook_batching` an app's immediate jobs are due `batch_window_s` later, and jobs claimed
  together for the same webhook go out in one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from shared.apps.config import AppConfig, WebhookConfig
from shared.apps.registry import AppRegistry
from shared.clock import Clock
from shared.console.tap import ConsoleTap
from shared.metrics import (
    WEBHOOK_QUEUE_JOBS,
    WEBHOOK_QUEUE_OLDEST_AGE,
    WEBHOOK_REQUEST_DURATION,
    WEBHOOK_REQUESTS,
    WEBHOOKS_CANCELLED,
    WEBHOOKS_DELIVERED,
    WEBHOOKS_DROPPED,
    WEBHOOKS_ENQUEUED,
    WEBHOOKS_RETRIES,
)
from shared.protocol.events import CONSOLE_WEBHOOK, WEBHOOK_CHANNEL_OCCUPIED, WEBHOOK_CHANNEL_VACATED
from shared.protocol.signatures import sign_webhook
from shared.protocol.users import user_key
from shared.state.base import StoreUnavailable
from shared.webhooks.base import (
    ADDED,
    CANCELLED,
    CANCELLED_PAIR,
    CANCELLING,
    DELAYED,
    Claimed,
    Entry,
    JobStore,
    WebhookEvent,
    WebhookQueue,
)
from shared.webhooks.sender import HttpSender, Sender

log = logging.getLogger("herald.webhooks")

WEBHOOK_DELAY_S = 3.0  # channel_vacated / member_removed wait this long (docs/webhooks.md)
MAX_AGE_S = 300.0  # retries stop 5 minutes after the webhook was created
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
VISIBILITY_S = 30.0  # a claimed job is due again after this (its claimer died); >> HTTP timeout
HTTP_TIMEOUT_S = 5.0
BATCH_WINDOW_S = 0.05
POLL_S = 0.2  # how soon jobs queued by other processes are noticed
CLAIM_LIMIT = 100  # jobs per claim, and events per batched request
DEFAULT_WORKERS = 4
CLOSE_GRACE_S = 2.0  # on close, in-flight requests get this long to finish
# How often a process with workers reads the queue's size and oldest due job for the gauges (one
# round trip per app with webhooks).
BACKLOG_INTERVAL_S = 5.0


# -- jobs -------------------------------------------------------------------------------------------


def encode_job(hook: int, url: str, created_ms: int, event: dict[str, Any]) -> bytes:
    return orjson.dumps({"h": hook, "u": url, "t": created_ms, "e": event})


@dataclass(slots=True)
class Job:
    id: str
    app_id: str
    hook: int
    url: str
    created_ms: int
    event: dict[str, Any]
    attempts: int

    @classmethod
    def decode(cls, app_id: str, claimed: Claimed) -> Job:
        raw = orjson.loads(claimed.raw)
        return cls(claimed.id, app_id, int(raw["h"]), str(raw["u"]), int(raw["t"]), raw["e"], claimed.attempts)

    @property
    def name(self) -> str:
        return str(self.event.get("name", "?"))


@dataclass(slots=True)
class Delivery:
    """One HTTP request's worth of jobs: all for the same app and webhook."""

    app_id: str
    hook: int
    url: str
    jobs: list[Job]


def hook_takes(hook: WebhookConfig, name: str, channel: str) -> bool:
    if name not in hook.event_types:
        return False
    if hook.channel_name_starts_with is not None and not channel.startswith(hook.channel_name_starts_with):
        return False
    return hook.channel_name_ends_with is None or channel.endswith(hook.channel_name_ends_with)


def cancel_key(hook: int, event: WebhookEvent) -> str:
    """What pairs a delayed event with the one that cancels it, per webhook (users compared as strings;
    the channel is length-prefixed so no bytes in it or the user id can make two keys equal)."""
    if event.name in (WEBHOOK_CHANNEL_OCCUPIED, WEBHOOK_CHANNEL_VACATED):
        return f"{hook}:c:{event.channel}"
    return f"{hook}:m:{len(event.channel.encode())}:{event.channel}{user_key(event.user_id)}"


def body_bytes(created_ms: int, events: Iterable[dict[str, Any]]) -> bytes:
    return orjson.dumps({"time_ms": created_ms, "events": list(events)})


def backoff_s(attempts: int) -> float:
    """Wait after the `attempts`-th failed attempt: 1, 2, 4, ... capped."""
    return float(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_CAP_S))


# -- the queue ------------------------------------------------------------------------------------


@dataclass
class _Loop:
    claimer: asyncio.Task[None] | None = None
    senders: list[asyncio.Task[None]] = field(default_factory=list)
    gauges: asyncio.Task[None] | None = None


class QueuedWebhooks:
    """`WebhookQueue` over a `JobStore`, with this process's share of the delivery workers.

    `workers` is the number of concurrent deliveries; 0 runs no workers (jobs wait for other
    processes, or for `run_due()` in tests). `clock` is wall-clock seconds (time_ms and due times).
    """

    def __init__(
        self,
        store: JobStore,
        registry: AppRegistry | None = None,
        *,
        workers: int = DEFAULT_WORKERS,
        sender: Sender | None = None,
        clock: Clock = time.time,
        delay_s: float = WEBHOOK_DELAY_S,
        max_age_s: float = MAX_AGE_S,
        visibility_s: float = VISIBILITY_S,
        batch_window_s: float = BATCH_WINDOW_S,
        poll_s: float = POLL_S,
        http_timeout_s: float = HTTP_TIMEOUT_S,
        close_grace_s: float = CLOSE_GRACE_S,
        backlog_interval_s: float = BACKLOG_INTERVAL_S,
    ) -> None:
        if sender is None:
            sender = HttpSender(timeout_s=http_timeout_s)
        self.store = store
        self.registry = registry
        self.workers = workers
        self.sender = sender
        self.clock = clock
        self.delay_ms = int(delay_s * 1000)
        self.max_age_ms = int(max_age_s * 1000)
        self.visibility_ms = int(visibility_s * 1000)
        self.batch_window_ms = int(batch_window_s * 1000)
        self.poll_s = poll_s
        self.close_grace_s = close_grace_s
        self.backlog_interval_s = backlog_interval_s
        # The debug console's tap (set by the Backend): each request's outcome is shown to a watching console.
        self.console: ConsoleTap | None = None
        self._seen: dict[str, AppConfig] = {}  # apps met in enqueue (the registry may not know them)
        self._loop = _Loop()
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._inflight = 0
        self._max_inflight = max(1, workers * 2)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._closing = False

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- producers --------------------------------------------------------------------------------

    def plan(self, app: AppConfig, events: Sequence[WebhookEvent], now_ms: int) -> list[tuple[str, Entry]]:
        """The store entries for `events`, each with the event name it is about."""
        immediate_ms = now_ms + (self.batch_window_ms if app.webhook_batching else 0)
        planned: list[tuple[str, Entry]] = []
        for event in events:
            payload: dict[str, Any] | None = None
            for h, hook in enumerate(app.webhooks):
                job: bytes | None = None
                if hook_takes(hook, event.name, event.channel):
                    payload = payload if payload is not None else event.to_json()
                    job = encode_job(h, hook.url, now_ms, payload)
                if event.name in DELAYED:
                    if job is not None:
                        planned.append((event.name, Entry(job, now_ms + self.delay_ms,
                                                          set_cancel=cancel_key(h, event), stamp=event.stamp)))
                elif event.name in CANCELLING:
                    # Checked even when this webhook doesn't take the event itself: its pending
                    # vacate/remove is still withdrawn.
                    planned.append((event.name, Entry(job, immediate_ms, check_cancel=cancel_key(h, event),
                                                      after=self.pairs_with(hook, event))))
                elif job is not None:
                    planned.append((event.name, Entry(job, immediate_ms)))
        return planned

    def pairs_with(self, hook: WebhookConfig, event: WebhookEvent) -> int:
        """The stamp of the delayed event an occupy/add must pair with on this webhook, or 0 (pair with
        whatever is pending): only when it follows a vacate/removal within the delay, which this webhook
        takes, so that event will reach the queue too."""
        if not event.after or event.stamp - event.after > self.delay_ms * 1000:  # stamps are microseconds
            return 0
        return event.after if hook_takes(hook, CANCELLING[event.name], event.channel) else 0

    async def enqueue(self, app: AppConfig, events: Sequence[WebhookEvent]) -> None:
        if not app.webhooks or not events:
            return
        self._seen[app.id] = app
        planned = self.plan(app, events, self.now_ms())
        if not planned:
            return
        try:
            results = await self.store.add(app.id, [entry for _, entry in planned])
        except StoreUnavailable:
            raise
        except Exception as exc:  # Redis errors: the interface reports an unreachable queue this way
            raise StoreUnavailable(f"webhook queue unavailable: {exc}") from exc
        for (name, entry), result in zip(planned, results, strict=True):
            if result == ADDED:
                WEBHOOKS_ENQUEUED.labels(name).inc()
            elif result == CANCELLED_PAIR:
                WEBHOOKS_CANCELLED.labels(CANCELLING[name]).inc()
                if entry.job is not None:
                    WEBHOOKS_CANCELLED.labels(name).inc()
            elif result == CANCELLED and entry.job is not None:
                WEBHOOKS_CANCELLED.labels(name).inc()
        self._wake.set()

    # -- workers ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        await self.sender.start()
        if self.workers > 0:
            self._loop.senders = [asyncio.create_task(self._send_forever(), name=f"webhook-sender-{i}")
                                  for i in range(self.workers)]
            self._loop.claimer = asyncio.create_task(self._claim_forever(), name="webhook-claimer")
            self._loop.gauges = asyncio.create_task(self._measure_forever(), name="webhook-backlog")

    async def close(self) -> None:
        """Stop claiming, give in-flight requests a moment, hand unstarted jobs back to the queue."""
        # The flag as well as the cancels: a cancel that lands inside a Redis command can come out of
        # redis-py as an ordinary error, and a loop catching errors would go on.
        self._closing = True
        for task in (self._loop.claimer, self._loop.gauges):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        unstarted: list[Delivery] = []
        while not self._queue.empty():
            unstarted.append(self._queue.get_nowait())
        for delivery in unstarted:
            self._done()
            with contextlib.suppress(Exception):
                for job in delivery.jobs:
                    await self.store.reschedule(delivery.app_id, job.id, self.now_ms())
        if self._loop.senders:
            deadline = time.monotonic() + self.close_grace_s
            while self._inflight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            for task in self._loop.senders:
                task.cancel()
            for task in self._loop.senders:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop = _Loop()
        await self.sender.close()
        await self.store.close()

    async def app(self, app_id: str) -> AppConfig | None:
        found = await self.registry.by_id(app_id) if self.registry is not None else None
        return found or self._seen.get(app_id)

    def apps(self) -> list[AppConfig]:
        """Apps whose queues the workers visit: every configured app with webhooks (jobs from any
        process), plus apps this process queued for that the registry doesn't know."""
        apps = {a.id: a for a in (self.registry or ()) if a.webhooks}
        for app_id, app in self._seen.items():
            apps.setdefault(app_id, app)
        return list(apps.values())

    async def claim(self, app: AppConfig, limit: int) -> tuple[list[Delivery], int | None]:
        """Claim an app's due jobs, grouped into requests."""
        claimed, next_due = await self.store.claim(app.id, self.now_ms(), self.visibility_ms, limit)
        jobs = sorted((Job.decode(app.id, c) for c in claimed), key=lambda j: (j.created_ms, int(j.id)))
        if not app.webhook_batching:
            return [Delivery(app.id, j.hook, j.url, [j]) for j in jobs], next_due
        groups: dict[tuple[int, str], Delivery] = {}
        for job in jobs:
            groups.setdefault((job.hook, job.url), Delivery(app.id, job.hook, job.url, [])).jobs.append(job)
        return list(groups.values()), next_due

    async def run_due(self) -> int:
        """Claim and deliver, one after another, everything due now (tests; workers do this in the
        background). Returns the number of requests made or dropped."""
        done = 0
        for app in self.apps():
            while True:
                deliveries, _ = await self.claim(app, CLAIM_LIMIT)
                for delivery in deliveries:
                    await self.deliver(delivery)
                done += len(deliveries)
                if not deliveries:
                    break
        return done

    async def _resolve(self, delivery: Delivery) -> tuple[AppConfig | None, WebhookConfig | None]:
        app = await self.app(delivery.app_id)
        if app is None:
            return None, None
        hooks = app.webhooks
        if delivery.hook < len(hooks) and hooks[delivery.hook].url == delivery.url:
            return app, hooks[delivery.hook]
        # The apps file changed since the job was queued: same URL elsewhere in the list is the same
        # receiver.
        return app, next((h for h in hooks if h.url == delivery.url), None)

    async def deliver(self, delivery: Delivery) -> None:
        app, hook = await self._resolve(delivery)
        if app is None or hook is None:
            log.warning("dropping %d webhook jobs of app %s for %s: no such webhook configured any more",
                        len(delivery.jobs), delivery.app_id, delivery.url)
            await self._drop(delivery.app_id, delivery.jobs, "unconfigured")
            return
        now = self.now_ms()
        expired = [j for j in delivery.jobs if now - j.created_ms > self.max_age_ms]
        if expired:
            await self._drop(app.id, expired, "expired")
        jobs = [j for j in delivery.jobs if now - j.created_ms <= self.max_age_ms]
        if not jobs:
            return
        body = body_bytes(min(j.created_ms for j in jobs), (j.event for j in jobs))
        headers = webhook_headers(app, hook, body)
        started = time.perf_counter()
        failure = await self.sender.send(hook.url, headers, body)
        took_s = time.perf_counter() - started
        WEBHOOK_REQUEST_DURATION.observe(took_s)
        WEBHOOK_REQUESTS.labels(app.id, "ok" if failure is None else failure.split(":", 1)[0]).inc()
        if self.console is not None and self.console.watched:
            await self.console.note(app.id, CONSOLE_WEBHOOK, {
                "url": shown_url(hook.url), "events": [j.event for j in jobs], "attempt": max(j.attempts for j in jobs),
                "outcome": "ok" if failure is None else failure, "ms": round(took_s * 1000, 1),
            })
        if failure is None:
            await self.store.ack(app.id, [j.id for j in jobs])
            for job in jobs:
                WEBHOOKS_DELIVERED.labels(job.name).inc()
            return
        now = self.now_ms()
        give_up: list[Job] = []
        for job in jobs:
            due = now + int(backoff_s(job.attempts) * 1000)
            if due - job.created_ms > self.max_age_ms:
                give_up.append(job)
            else:
                await self.store.reschedule(app.id, job.id, due)
                WEBHOOKS_RETRIES.inc()
        if give_up:
            log.warning("webhook to %s failed (%s); giving up on %d events of app %s after %d attempts "
                        "(%.0f s old): %s", hook.url, failure, len(give_up), app.id, give_up[0].attempts,
                        (now - give_up[0].created_ms) / 1000, ", ".join(j.name for j in give_up))
            await self._drop(app.id, give_up, "expired")
        if len(give_up) < len(jobs):
            log.info("webhook to %s failed (%s); %d events of app %s will be retried", hook.url, failure,
                     len(jobs) - len(give_up), app.id)

    async def _drop(self, app_id: str, jobs: Sequence[Job], reason: str) -> None:
        await self.store.ack(app_id, [j.id for j in jobs])
        for job in jobs:
            WEBHOOKS_DROPPED.labels(job.name, reason).inc()

    def _done(self) -> None:
        self._inflight -= 1
        self._room.set()

    async def _send_forever(self) -> None:
        while not self._closing:
            delivery = await self._queue.get()
            try:
                await self.deliver(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The store is away: the jobs stay claimed and come back after the visibility timeout.
                log.warning("webhook delivery to %s failed", delivery.url, exc_info=True)
            finally:
                self._done()

    async def _claim_forever(self) -> None:
        errors = 0
        while not self._closing:
            while self._inflight >= self._max_inflight:
                self._room.clear()
                await self._room.wait()
            self._wake.clear()  # before claiming: an enqueue meanwhile must not be missed
            now = self.now_ms()
            wake_ms = now + int(self.poll_s * 1000)
            try:
                for app in self.apps():
                    room = self._max_inflight - self._inflight
                    if room <= 0:
                        wake_ms = now
                        break
                    limit = CLAIM_LIMIT if app.webhook_batching else min(room, CLAIM_LIMIT)
                    deliveries, next_due = await self.claim(app, limit)
                    claimed = sum(len(d.jobs) for d in deliveries)
                    if claimed >= limit:
                        wake_ms = now  # more may be due
                    elif next_due is not None:
                        wake_ms = min(wake_ms, next_due)
                    for delivery in deliveries:
                        self._inflight += 1
                        self._queue.put_nowait(delivery)
                errors = 0
            except Exception as exc:
                errors += 1
                if errors == 1:
                    log.warning("webhook queue unavailable (%s); retrying", exc)
                wake_ms = now + int(min(errors, 5) * 1000)
            delay = max(0.0, (wake_ms - self.now_ms()) / 1000)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)


    async def measure(self) -> None:
        """Set the queue gauges of every app whose queue the workers visit."""
        now = self.now_ms()
        for app in self.apps():
            jobs, first_due_ms = await self.store.backlog(app.id)
            WEBHOOK_QUEUE_JOBS.labels(app.id).set(jobs)
            waited_s = 0.0 if first_due_ms is None else max(0, now - first_due_ms) / 1000
            WEBHOOK_QUEUE_OLDEST_AGE.labels(app.id).set(waited_s)

    async def _measure_forever(self) -> None:
        while not self._closing:
            try:
                await self.measure()
            except Exception as exc:  # the store is away; the claimer reports that already
                log.debug("webhook backlog not measured: %s", exc)
            await asyncio.sleep(self.backlog_interval_s)


def shown_url(url: str) -> str:
    """A webhook URL without credentials or query (which may hold tokens), for the console."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def webhook_headers(app: AppConfig, hook: WebhookConfig, body: bytes) -> dict[str, str]:
    """The signed request's headers (docs/webhooks.md, "Requests") after the webhook's own (which can't
    replace them)."""
    ours = {
        "Content-Type": "application/json",
        "X-Pusher-Key": app.key,
        "X-Pusher-Signature": sign_webhook(app.secret, body),
    }
    reserved = {k.lower() for k in ours} | {"content-length", "host"}
    headers = {k: v for k, v in hook.headers.items() if k.lower() not in reserved}
    headers.update(ours)
    return headers


def _conforms(queue: QueuedWebhooks) -> WebhookQueue:
    return queue  # checked by mypy: QueuedWebhooks implements WebhookQueue
