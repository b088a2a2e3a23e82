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

Enqueue is one script call; claim is one script call per app; ack one; a retry is one ZADD XX.
Times come from the callers' clocks (like node leases), so processes need synchronised clocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.config import AppRegistry
from shared.redis_scripts import ScriptRunner
from shared.webhook_queue import DEFAULT_WORKERS, Claimed, Entry, QueuedWebhooks

# KEYS: due, jobs, cancel, ckey, seq. ARGV: n, then n x (job or "", due ms, set-cancel key or "",
# check-cancel key or ""). Returns per entry 1 (queued), 0 (nothing) or -1 (withdrew a pending job).
_ADD = """
local out = {}
local i = 2
for e = 1, tonumber(ARGV[1]) do
  local job, due, setk, checkk = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local status = 0
  if checkk ~= '' then
    local pending = redis.call('HGET', KEYS[3], checkk)
    if pending then
      redis.call('HDEL', KEYS[3], checkk)
      redis.call('HDEL', KEYS[4], pending)
      if redis.call('HDEL', KEYS[2], pending) == 1 then
        redis.call('ZREM', KEYS[1], pending)
        status = -1
      end
    end
  end
  if status == 0 and job ~= '' then
    local id = tostring(redis.call('INCR', KEYS[5]))
    redis.call('HSET', KEYS[2], id, job)
    redis.call('ZADD', KEYS[1], due, id)
    if setk ~= '' then
      redis.call('HSET', KEYS[3], setk, id)
      redis.call('HSET', KEYS[4], id, setk)
    end
    status = 1
  end
  out[e] = status
end
return out
"""

# KEYS: due, jobs, cancel, ckey, tries. ARGV: now ms, visibility ms, limit.
# Returns {{id, job, attempts, ...}, earliest due left or false}.
_CLAIM = """
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[2], id)
  if job then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    local k = redis.call('HGET', KEYS[4], id)
    if k then
      redis.call('HDEL', KEYS[4], id)
      if redis.call('HGET', KEYS[3], k) == id then redis.call('HDEL', KEYS[3], k) end
    end
    table.insert(out, id)
    table.insert(out, job)
    table.insert(out, redis.call('HINCRBY', KEYS[5], id, 1))
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[5], id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {out, first[2] or false}
"""

# KEYS: due, jobs, tries, cancel, ckey. ARGV: job ids.
_ACK = """
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  local k = redis.call('HGET', KEYS[5], id)
  if k then
    redis.call('HDEL', KEYS[5], id)
    if redis.call('HGET', KEYS[4], k) == id then redis.call('HDEL', KEYS[4], k) end
  end
end
return #ARGV
"""



class RedisJobStore:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._scripts = ScriptRunner(client)

    def keys(self, app_id: str) -> dict[str, str]:
        base = f"{self.prefix}:{{{app_id}}}:wh"
        return {name: f"{base}:{name}" for name in ("due", "jobs", "tries", "cancel", "ckey", "seq")}

    async def _script(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts.run(source, keys, args)

    async def add(self, app_id: str, entries: Sequence[Entry]) -> list[int]:
        k = self.keys(app_id)
        args: list[Any] = [len(entries)]
        for e in entries:
            args += [e.job or b"", e.due_ms, e.set_cancel or "", e.check_cancel or ""]
        result = await self._script(_ADD, [k["due"], k["jobs"], k["cancel"], k["ckey"], k["seq"]], args)
        return [int(r) for r in result]

    async def claim(
        self, app_id: str, now_ms: int, visibility_ms: int, limit: int
    ) -> tuple[list[Claimed], int | None]:
        k = self.keys(app_id)
        flat, first = await self._script(
            _CLAIM, [k["due"], k["jobs"], k["cancel"], k["ckey"], k["tries"]], [now_ms, visibility_ms, limit]
        )
        claimed = [Claimed(flat[i].decode(), bytes(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
        return claimed, (int(float(first)) if first is not None else None)

    async def ack(self, app_id: str, ids: Sequence[str]) -> None:
        if ids:
            k = self.keys(app_id)
            await self._script(_ACK, [k["due"], k["jobs"], k["tries"], k["cancel"], k["ckey"]], list(ids))

    async def reschedule(self, app_id: str, job_id: str, due_ms: int) -> None:
        await self.client.zadd(self.keys(app_id)["due"], {job_id: due_ms}, xx=True)

    async def pending(self, app_id: str) -> int:
        return int(await self.client.hlen(self.keys(app_id)["jobs"]))

    async def close(self) -> None:
        return None  # the client belongs to the backend


def redis_webhook_queue(client: Any, prefix: str, registry: AppRegistry | None = None,
                        workers: int = DEFAULT_WORKERS, **options: Any) -> QueuedWebhooks:
    return QueuedWebhooks(RedisJobStore(client, prefix), registry, workers=workers, **options)
