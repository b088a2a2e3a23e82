"""The webhook job store in process memory (`herald serve` without Redis): the same semantics as the
Redis store's scripts, each operation atomic because it never awaits."""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.apps.registry import AppRegistry
from shared.clock import Clock
from shared.webhooks.base import (
    ADDED,
    CANCELLED,
    CANCELLED_PAIR,
    NOTHING,
    PAIR_MEMORY_S,
    Claimed,
    Entry,
    JobStore,
)
from shared.webhooks.queue import DEFAULT_WORKERS, QueuedWebhooks


@dataclass
class _AppJobs:
    seq: int = 0
    jobs: dict[str, bytes] = field(default_factory=dict)
    due: dict[str, int] = field(default_factory=dict)
    heap: list[tuple[int, int, str]] = field(default_factory=list)  # (due, seq, id); stale rows skipped
    cancel: dict[str, str] = field(default_factory=dict)  # cancel key -> pending delayed job
    cancel_of: dict[str, str] = field(default_factory=dict)  # delayed job -> its cancel key
    tries: dict[str, int] = field(default_factory=dict)
    # cancel key -> (stamp, forget at): the last delayed event queued, and one whose partner came first
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)
    early: dict[str, tuple[int, float]] = field(default_factory=dict)

    def schedule(self, job_id: str, due_ms: int) -> None:
        self.due[job_id] = due_ms
        heapq.heappush(self.heap, (due_ms, int(job_id), job_id))

    def delete(self, job_id: str) -> bool:
        found = self.jobs.pop(job_id, None) is not None
        self.due.pop(job_id, None)
        self.tries.pop(job_id, None)
        key = self.cancel_of.pop(job_id, None)
        if key is not None and self.cancel.get(key) == job_id:
            del self.cancel[key]
        return found


def _recall(records: dict[str, tuple[int, float]], key: str, now: float) -> int:
    entry = records.get(key)
    if entry is None:
        return 0
    if entry[1] <= now:
        del records[key]
        return 0
    return entry[0]


def _forget_old(records: dict[str, tuple[int, float]], now: float) -> None:
    for key in [k for k, (_, until) in records.items() if until <= now]:
        del records[key]


class MemoryJobStore:
    """See `JobStore`."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._apps: dict[str, _AppJobs] = {}
        self._clock = clock
        self._next_sweep = 0.0

    def _app(self, app_id: str) -> _AppJobs:
        jobs = self._apps.get(app_id)
        if jobs is None:
            jobs = self._apps[app_id] = _AppJobs()
        return jobs

    def _withdraw(self, q: _AppJobs, key: str) -> bool:
        pending = q.cancel.pop(key, None)
        return pending is not None and q.delete(pending)

    async def add(self, app_id: str, entries: Sequence[Entry]) -> list[int]:
        q = self._app(app_id)
        now = self._clock()
        forget = now + PAIR_MEMORY_S
        if now >= self._next_sweep:
            self._next_sweep = now + PAIR_MEMORY_S
            for jobs in self._apps.values():
                _forget_old(jobs.seen, now)
                _forget_old(jobs.early, now)
        results = []
        for entry in entries:
            result = NOTHING
            if entry.set_cancel is not None and entry.stamp:
                if _recall(q.early, entry.set_cancel, now) == entry.stamp:
                    del q.early[entry.set_cancel]
                    result = CANCELLED
                else:
                    q.seen[entry.set_cancel] = (entry.stamp, forget)
            if entry.check_cancel is not None:
                key = entry.check_cancel
                if entry.after:
                    seen = _recall(q.seen, key, now)
                    if seen == entry.after and self._withdraw(q, key):
                        result = CANCELLED_PAIR
                    elif seen < entry.after:
                        q.early[key] = (entry.after, forget)
                        result = CANCELLED
                elif self._withdraw(q, key):
                    result = CANCELLED_PAIR
            if result == NOTHING and entry.job is not None:
                q.seq += 1
                job_id = str(q.seq)
                q.jobs[job_id] = entry.job
                q.schedule(job_id, entry.due_ms)
                if entry.set_cancel is not None:
                    q.cancel[entry.set_cancel] = job_id
                    q.cancel_of[job_id] = entry.set_cancel
                result = ADDED
            results.append(result)
        return results

    async def claim(
        self, app_id: str, now_ms: int, visibility_ms: int, limit: int
    ) -> tuple[list[Claimed], int | None]:
        q = self._apps.get(app_id)
        if q is None:
            return [], None
        taken: dict[str, None] = {}  # ordered set
        while q.heap and len(taken) < limit and q.heap[0][0] <= now_ms:
            due, _, job_id = heapq.heappop(q.heap)
            if q.due.get(job_id) == due:
                taken[job_id] = None
        claimed = []
        for job_id in taken:
            q.schedule(job_id, now_ms + visibility_ms)
            key = q.cancel_of.pop(job_id, None)
            if key is not None and q.cancel.get(key) == job_id:
                del q.cancel[key]
            q.tries[job_id] = q.tries.get(job_id, 0) + 1
            claimed.append(Claimed(job_id, q.jobs[job_id], q.tries[job_id]))
        while q.heap and q.due.get(q.heap[0][2]) != q.heap[0][0]:
            heapq.heappop(q.heap)
        next_due = q.heap[0][0] if q.heap else None
        if not q.jobs and not q.cancel and not q.seen and not q.early:
            del self._apps[app_id]
        return claimed, next_due

    async def ack(self, app_id: str, ids: Sequence[str]) -> None:
        q = self._apps.get(app_id)
        if q is not None:
            for job_id in ids:
                q.delete(job_id)

    async def reschedule(self, app_id: str, job_id: str, due_ms: int) -> None:
        q = self._apps.get(app_id)
        if q is not None and job_id in q.jobs:
            q.schedule(job_id, due_ms)

    async def pending(self, app_id: str) -> int:
        q = self._apps.get(app_id)
        return len(q.jobs) if q is not None else 0

    async def backlog(self, app_id: str) -> tuple[int, int | None]:
        q = self._apps.get(app_id)
        if q is None:
            return 0, None
        while q.heap and q.due.get(q.heap[0][2]) != q.heap[0][0]:
            heapq.heappop(q.heap)  # stale rows, as in claim()
        return len(q.jobs), (q.heap[0][0] if q.heap else None)

    async def close(self) -> None:
        return None


def _conforms(store: MemoryJobStore) -> JobStore:
    return store  # checked by mypy: MemoryJobStore implements JobStore


def memory_webhook_queue(registry: AppRegistry | None = None, workers: int = DEFAULT_WORKERS,
                         **options: Any) -> QueuedWebhooks:
    return QueuedWebhooks(MemoryJobStore(), registry, workers=workers, **options)
