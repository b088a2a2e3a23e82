"""The webhook job store in Redis (cluster mode): jobs outlive the process that queued them and are
delivered by whichever process's workers claim them.

Keys of one app share its hash tag (P = prefix, A = app id), so every script runs on one slot:

    P:{A}:wh:due     sorted set job -> due time (ms); a claim moves it VISIBILITY ahead
    P:{A}:wh:jobs    hash job -> JSON {"h": webhook index, "u": URL, "t": created ms, "e": event}
    P:{A}:wh:tries   hash job -> attempts so far (claims)
    P:{A}:wh:cancel  hash cancel key ("hook\\nc\\nchannel" or "hook\\nm\\nchannel\\nuser") -> pending
                     delayed job (channel_vacated / member_removed not yet claimed)
    P:{A}:wh:ckey    hash delayed job -> its cancel key (so a claim can end its cancellability)
    P:{A}:wh:seq     counter for job ids
    P:{A}:wh:seen:K  the stamp of the last delayed event queued under cancel key K (PAIR_MEMORY_S)
    P:{A}:wh:early:K the stamp of a delayed event whose cancelling partner arrived first (same)

Enqueue is one script call; claim is one script call per app; ack one; a retry is one ZADD XX.
Times come from the callers' clocks (like node leases), so processes need synchronised clocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.apps.registry import AppRegistry
from shared.redis.scripts import ScriptRunner, load_script
from shared.webhooks.base import PAIR_MEMORY_S, Claimed, Entry, JobStore
from shared.webhooks.queue import DEFAULT_WORKERS, QueuedWebhooks

WEBHOOKS_ADD = load_script("webhooks_add")
WEBHOOKS_CLAIM = load_script("webhooks_claim")
WEBHOOKS_ACK = load_script("webhooks_ack")


class RedisJobStore:
    """See `JobStore`."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._scripts = ScriptRunner(client)

    def base(self, app_id: str) -> str:
        return f"{self.prefix}:{{{app_id}}}:wh"

    def keys(self, app_id: str) -> dict[str, str]:
        base = self.base(app_id)
        return {name: f"{base}:{name}" for name in ("due", "jobs", "tries", "cancel", "ckey", "seq")}

    async def _script(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts.run(source, keys, args)

    async def add(self, app_id: str, entries: Sequence[Entry]) -> list[int]:
        k = self.keys(app_id)
        args: list[Any] = [self.base(app_id), int(PAIR_MEMORY_S * 1000), len(entries)]
        for e in entries:
            args += [e.job or b"", e.due_ms, e.set_cancel or "", e.check_cancel or "", e.stamp, e.after]
        result = await self._script(WEBHOOKS_ADD, [k["due"], k["jobs"], k["cancel"], k["ckey"], k["seq"]], args)
        return [int(r) for r in result]

    async def claim(
        self, app_id: str, now_ms: int, visibility_ms: int, limit: int
    ) -> tuple[list[Claimed], int | None]:
        k = self.keys(app_id)
        flat, first = await self._script(
            WEBHOOKS_CLAIM, [k["due"], k["jobs"], k["cancel"], k["ckey"], k["tries"]], [now_ms, visibility_ms, limit]
        )
        claimed = [Claimed(flat[i].decode(), bytes(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
        return claimed, (int(float(first)) if first is not None else None)

    async def ack(self, app_id: str, ids: Sequence[str]) -> None:
        if ids:
            k = self.keys(app_id)
            await self._script(WEBHOOKS_ACK, [k["due"], k["jobs"], k["tries"], k["cancel"], k["ckey"]], list(ids))

    async def reschedule(self, app_id: str, job_id: str, due_ms: int) -> None:
        await self.client.zadd(self.keys(app_id)["due"], {job_id: due_ms}, xx=True)

    async def pending(self, app_id: str) -> int:
        return int(await self.client.hlen(self.keys(app_id)["jobs"]))

    async def backlog(self, app_id: str) -> tuple[int, int | None]:
        k = self.keys(app_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hlen(k["jobs"])
            pipe.zrange(k["due"], 0, 0, withscores=True)
            jobs, first = await pipe.execute()
        return int(jobs), (int(first[0][1]) if first else None)

    async def close(self) -> None:
        return None  # the client belongs to the backend


def _conforms(store: RedisJobStore) -> JobStore:
    return store  # checked by mypy: RedisJobStore implements JobStore


def redis_webhook_queue(client: Any, prefix: str, registry: AppRegistry | None = None,
                        workers: int = DEFAULT_WORKERS, **options: Any) -> QueuedWebhooks:
    return QueuedWebhooks(RedisJobStore(client, prefix), registry, workers=workers, **options)
