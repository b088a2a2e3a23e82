"""The webhook job store in process memory (`herald serve` without Redis): the same semantics as the
Redis store's scripts, each operation atomic because it never awaits."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.apps.registry import AppRegistry
from shared.webhooks.base import ADDED, CANCELLED_PAIR, NOTHING, Claimed, Entry, JobStore
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


class MemoryJobStore:
    """See `JobStore`."""

    def __init__(self) -> None:
        self._apps: dict[str, _AppJobs] = {}

    def _app(self, app_id: str) -> _AppJobs:
        jobs = self._apps.get(app_id)
        if jobs is None:
            jobs = self._apps[app_id] = _AppJobs()
        return jobs

    async def add(self, app_id: str, entries: Sequence[Entry]) -> list[int]:
        q = self._app(app_id)
        results = []
        for entry in entries:
            result = NOTHING
            if entry.check_cancel is not None:
                pending = q.cancel.get(entry.check_cancel)
                if pending is not None and q.delete(pending):
                    result = CANCELLED_PAIR
                q.cancel.pop(entry.check_cancel, None)
            if result != CANCELLED_PAIR and entry.job is not None:
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
        if not q.jobs and not q.cancel:
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
