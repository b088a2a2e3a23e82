"""Cluster-wide connection quotas, occupancy and presence in Redis, owned by node leases.

Key layout (P = key prefix, A = app id; every key of one app shares the hash tag `{A}`, so each
script touches one Redis Cluster slot):

    P:{A}:occ            hash channel -> subscriptions in the cluster
    P:{A}:occn:NODE      hash channel -> subscriptions held by NODE
    P:{A}:pc:CHANNEL     hash user -> connections of that user in a presence channel
    P:{A}:pm:CHANNEL     hash user -> member JSON [user_id, user_info]
    P:{A}:presn:NODE     hash "CHANNEL\\nUSER" -> connections held by NODE
    P:{A}:conns          hash NODE -> open connections
    P:{A}:uc             hash user -> signed-in sockets of that user in the cluster
    P:{A}:ucn:NODE       hash user -> signed-in sockets held by NODE
    P:{A}:cache:CHANNEL  the last event of a cache channel, with its TTL
    P:nodes              sorted set NODE -> lease expiry (ms)
    P:nodeapps:NODE      set of apps NODE holds state in
    P:reaper             lock: the one node currently reaping

Every change goes through a Lua script that applies it and returns the transition, so exactly one
caller sees "occupied", "vacated", "member added" or "member removed", whichever node it is on.

Each node also keeps a mirror of what it *means* to hold (its sockets' subscriptions). A `sync`
script replaces the node's records with the mirror and applies the difference to the aggregates,
returning the transitions. It repairs state after a Redis outage or restart, after this node was
reaped while partitioned, and, with an empty mirror, is how the reaper removes a dead node.

Timings: a node renews its lease every HEARTBEAT (lease / 3); a lease not renewed for LEASE expires;
some live node runs the reaper every REAPER_INTERVAL. A dead node's members are therefore gone at most
LEASE + REAPER_INTERVAL (+ one script) after its last heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError

from shared.redis_scripts import ScriptRunner
from shared.state import CachedEvent, Member, PresenceJoin, StoreUnavailable

log = logging.getLogger("herald.state")

NODE_LEASE_S = 15.0
REAPER_INTERVAL_S = 5.0
# After an outage, wait this long before publishing repair transitions: longer than the bus
# subscribers' capped reconnect back-off (1 s, jittered up to 1.5 s).
RECOVERY_GRACE_S = 2.0
# Node-owned keys and aggregates expire if no live node refreshes them (every node gone).
KEY_TTL_FACTOR = 10

_OCC_ADD = """
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

# Shared by occupancy (field = channel) and signed-in users (field = user id). Returns
# {1, new total} or, when this node held no such record, {0, current total}.
_OCC_REMOVE = """
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if n <= 0 then return {0, tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')} end
if n == 1 then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HINCRBY', KEYS[2], ARGV[1], -1) end
local t = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if t <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return {1, 0} end
return {1, t}
"""

_PRESENCE_JOIN = """
local field = ARGV[1] .. '\\n' .. ARGV[2]
local added = 0
if not redis.call('HGET', KEYS[1], ARGV[2]) then
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {0, 0, {}} end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  added = 1
end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], field, 1)
return {1, added, redis.call('HVALS', KEYS[2])}
"""

_PRESENCE_LEAVE = """
local field = ARGV[1] .. '\\n' .. ARGV[2]
local n = tonumber(redis.call('HGET', KEYS[3], field) or '0')
if n <= 0 then return 0 end
if n == 1 then redis.call('HDEL', KEYS[3], field) else redis.call('HINCRBY', KEYS[3], field, -1) end
local c = redis.call('HINCRBY', KEYS[1], ARGV[2], -1)
if c <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

_CONN_OPEN = """
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local total = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
  if total >= limit then return 0 end
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""

_CONN_CLOSE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

# KEYS: occ, occn, presn, conns, uc, ucn. ARGV: key base, node, connections, n, n x (channel, count),
# m, m x ("channel\\nuser", count, member JSON), u, u x (user, count). Returns {occupied, vacated,
# added, removed, online, offline}, added/removed as flat (channel, member JSON) lists.
_SYNC = """
local base, node = ARGV[1], ARGV[2]
local i = 5
local want_occ, want_pres, want_member, want_users = {}, {}, {}, {}
for _ = 1, tonumber(ARGV[4]) do want_occ[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  want_pres[ARGV[i]] = tonumber(ARGV[i + 1]); want_member[ARGV[i]] = ARGV[i + 2]; i = i + 3
end
local u = tonumber(ARGV[i]); i = i + 1
for _ = 1, u do want_users[ARGV[i]] = tonumber(ARGV[i + 1]); i = i + 2 end

local function read_counts(key)
  local counts, flat = {}, redis.call('HGETALL', key)
  for j = 1, #flat, 2 do counts[flat[j]] = tonumber(flat[j + 1]) end
  return counts
end

-- Make this node's counts in node_key equal `want`, applying the difference to the cluster totals in
-- agg; returns the fields that went from 0 to some (ups) and from some to 0 (downs).
local function sync_counts(agg, node_key, want)
  local have, ups, downs = read_counts(node_key), {}, {}
  local function apply(f, w)
    local delta = w - (have[f] or 0)
    if delta == 0 then return end
    local before = tonumber(redis.call('HGET', agg, f) or '0')
    local after = before + delta
    if after <= 0 then redis.call('HDEL', agg, f) else redis.call('HSET', agg, f, after) end
    if w > 0 then redis.call('HSET', node_key, f, w) else redis.call('HDEL', node_key, f) end
    if before <= 0 and after > 0 then table.insert(ups, f) end
    if before > 0 and after <= 0 then table.insert(downs, f) end
  end
  for f, w in pairs(want) do apply(f, w) end
  for f, _ in pairs(have) do if want[f] == nil then apply(f, 0) end end
  return ups, downs
end

local occupied, vacated = sync_counts(KEYS[1], KEYS[2], want_occ)
local online, offline = sync_counts(KEYS[5], KEYS[6], want_users)

-- Presence totals live in one hash per channel, with the member's JSON beside them.
local added, removed = {}, {}
local have_pres = read_counts(KEYS[3])
local function apply_pres(f, want)
  local delta = want - (have_pres[f] or 0)
  if delta == 0 then return end
  local p = string.find(f, '\\n', 1, true)
  local ch, user = string.sub(f, 1, p - 1), string.sub(f, p + 1)
  local pc, pm = base .. ':pc:' .. ch, base .. ':pm:' .. ch
  local before = tonumber(redis.call('HGET', pc, user) or '0')
  local after = before + delta
  if after <= 0 then
    local member = redis.call('HGET', pm, user)
    redis.call('HDEL', pc, user)
    redis.call('HDEL', pm, user)
    if before > 0 and member then table.insert(removed, ch); table.insert(removed, member) end
  else
    redis.call('HSET', pc, user, after)
    if before <= 0 then
      redis.call('HSET', pm, user, want_member[f])
      table.insert(added, ch); table.insert(added, want_member[f])
    end
  end
  if want > 0 then redis.call('HSET', KEYS[3], f, want) else redis.call('HDEL', KEYS[3], f) end
end
for f, want in pairs(want_pres) do apply_pres(f, want) end
for f, _ in pairs(have_pres) do if want_pres[f] == nil then apply_pres(f, 0) end end

if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[4], node, ARGV[3]) else redis.call('HDEL', KEYS[4], node) end
return {occupied, vacated, added, removed, online, offline}
"""


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _store_errors(method: _F) -> _F:
    """Report Redis failures of the store interface as StoreUnavailable."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def member_json(member: Member) -> bytes:
    return orjson.dumps([member.user_id, member.user_info])


def member_from_json(raw: bytes | str) -> Member:
    user_id, user_info = orjson.loads(raw)
    return Member(user_id, user_info)


@dataclass
class Transitions:
    """What a sync or reap changed, cluster-wide, for one app."""

    app_id: str
    occupied: list[str] = field(default_factory=list)
    vacated: list[str] = field(default_factory=list)
    added: list[tuple[str, Member]] = field(default_factory=list)
    removed: list[tuple[str, Member]] = field(default_factory=list)
    online: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.occupied or self.vacated or self.added or self.removed or self.online or self.offline)


TransitionsListener = Callable[[Transitions], Awaitable[None]]


@dataclass
class _Mirror:
    """What this node holds for one app: the desired state that `sync` writes back."""

    occ: dict[str, int] = field(default_factory=dict)
    pres: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # -> [count, member JSON]
    users: dict[str, int] = field(default_factory=dict)  # signed-in user -> sockets here
    conns: int = 0


class _Gate:
    """Incremental updates run together; a full sync runs alone (so no script is in flight)."""

    def __init__(self) -> None:
        self._active = 0
        self._syncing = False
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if self._syncing:
            async with self._cond:
                await self._cond.wait_for(lambda: not self._syncing)
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._syncing:
                async with self._cond:
                    self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._syncing)
            self._syncing = True
            await self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._syncing = False
                self._cond.notify_all()


class RedisState:
    """Implements ConnectionStore, OccupancyStore and PresenceStore, plus the node lease and reaper."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        node_id: str,
        lease_s: float = NODE_LEASE_S,
        reaper_interval_s: float = REAPER_INTERVAL_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.node_id = node_id
        self.lease_s = lease_s
        self.heartbeat_s = lease_s / 3
        self.reaper_interval_s = reaper_interval_s
        self.key_ttl_ms = int(lease_s * KEY_TTL_FACTOR * 1000)
        self._mirror: dict[str, _Mirror] = {}
        self._gate = _Gate()
        self._scripts = ScriptRunner(client)
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[TransitionsListener] = []
        self._needs_sync = True
        self._registered_apps: set[str] = set()
        # Leaves whose script failed (Redis away). If Redis comes back empty, sync can't see them, so
        # after syncing each is checked and reported as a transition when it really happened.
        self._failed_occ: set[tuple[str, str]] = set()
        self._failed_pres: dict[tuple[str, str, str], Member] = {}
        self._failed_users: set[tuple[str, str]] = set()
        self.healthy = False
        self._outage_seen = False

    # -- plumbing ------------------------------------------------------------------------------

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        self._listeners.append(listener)

    def base(self, app_id: str) -> str:
        return f"{self.prefix}:{{{app_id}}}"

    async def _script(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts.run(source, keys, args)

    def _app(self, app_id: str) -> _Mirror:
        mirror = self._mirror.get(app_id)
        if mirror is None:
            mirror = self._mirror[app_id] = _Mirror()
        return mirror

    # -- ConnectionStore -----------------------------------------------------------------------

    async def open(self, app_id: str, socket_id: str, limit: int) -> bool:
        mirror = self._app(app_id)
        async with self._gate.shared():
            try:
                await self._register_app(app_id)
                ok = await self._script(_CONN_OPEN, [f"{self.base(app_id)}:conns"], [self.node_id, limit])
            except (RedisError, OSError):
                # Fail open: a Redis outage must not lock users out; sync restores the count later.
                self._needs_sync = True
                mirror.conns += 1
                return True
        if ok:
            mirror.conns += 1
        return bool(ok)

    async def close(self, app_id: str, socket_id: str) -> None:
        mirror = self._app(app_id)
        mirror.conns = max(0, mirror.conns - 1)
        async with self._gate.shared():
            try:
                await self._script(_CONN_CLOSE, [f"{self.base(app_id)}:conns"], [self.node_id])
            except (RedisError, OSError):
                self._needs_sync = True

    @_store_errors
    async def count(self, app_id: str) -> int:
        values = await self.client.hvals(f"{self.base(app_id)}:conns")
        return sum(int(v) for v in values)

    # -- OccupancyStore ------------------------------------------------------------------------

    async def _count_in(self, app_id: str, kind: str, counts: dict[str, int], name: str) -> int:
        """One more of `name` (a channel, or a signed-in user) held by this node; the cluster total."""
        base = self.base(app_id)
        async with self._gate.shared():
            await self._register_app(app_id)
            total = await self._script(_OCC_ADD, [f"{base}:{kind}", f"{base}:{kind}n:{self.node_id}"], [name])
            counts[name] = counts.get(name, 0) + 1
        return int(total)

    async def _count_out(self, app_id: str, kind: str, counts: dict[str, int], name: str,
                         failed: set[tuple[str, str]]) -> tuple[bool, int]:
        """One fewer; (whether this node held one, the cluster total). The mirror changes even when
        Redis is away, and the failure is remembered for the repair after the outage."""
        base = self.base(app_id)
        left = counts.get(name, 0) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)
        async with self._gate.shared():
            try:
                changed, total = await self._script(
                    _OCC_REMOVE, [f"{base}:{kind}", f"{base}:{kind}n:{self.node_id}"], [name]
                )
            except (RedisError, OSError):
                self._needs_sync = True
                failed.add((app_id, name))
                raise
        return bool(changed), int(total)

    @_store_errors
    async def add(self, app_id: str, channel: str, socket_id: str) -> int:
        return await self._count_in(app_id, "occ", self._app(app_id).occ, channel)

    @_store_errors
    async def remove(self, app_id: str, channel: str, socket_id: str) -> int:
        _, total = await self._count_out(app_id, "occ", self._app(app_id).occ, channel, self._failed_occ)
        return total

    @_store_errors
    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        if not channels:
            return []
        values = await self.client.hmget(f"{self.base(app_id)}:occ", list(channels))
        return [int(v) if v is not None else 0 for v in values]

    @_store_errors
    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        flat = await self.client.hgetall(f"{self.base(app_id)}:occ")
        out = {}
        for name, count in flat.items():
            channel = name.decode() if isinstance(name, bytes) else name
            if channel.startswith(prefix) and int(count) > 0:
                out[channel] = int(count)
        return out

    # -- PresenceStore -------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str) -> list[str]:
        base = self.base(app_id)
        return [f"{base}:pc:{channel}", f"{base}:pm:{channel}", f"{base}:presn:{self.node_id}"]

    @_store_errors
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        mirror = self._app(app_id)
        encoded = member_json(member)
        async with self._gate.shared():
            await self._register_app(app_id)
            accepted, added, members = await self._script(
                _PRESENCE_JOIN, self._presence_keys(app_id, channel),
                [channel, member.key, encoded, max_members],
            )
            if accepted:
                entry = mirror.pres.setdefault((channel, member.key), [0, encoded])
                entry[0] += 1
        if not accepted:
            return PresenceJoin(False, False, [])
        return PresenceJoin(True, bool(added), [member_from_json(m) for m in members])

    @_store_errors
    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> bool:
        mirror = self._app(app_id)
        entry = mirror.pres.get((channel, member.key))
        if entry is not None:
            entry[0] -= 1
            if entry[0] <= 0:
                del mirror.pres[(channel, member.key)]
        async with self._gate.shared():
            try:
                removed = await self._script(
                    _PRESENCE_LEAVE, self._presence_keys(app_id, channel), [channel, member.key]
                )
            except (RedisError, OSError):
                self._needs_sync = True
                self._failed_pres[(app_id, channel, member.key)] = member
                raise
        return bool(removed)

    @_store_errors
    async def members(self, app_id: str, channel: str) -> list[Member]:
        values = await self.client.hvals(f"{self.base(app_id)}:pm:{channel}")
        return [member_from_json(v) for v in values]

    @_store_errors
    async def user_counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        base = self.base(app_id)
        async with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.hlen(f"{base}:pc:{channel}")
            return [int(n) for n in await pipe.execute()]

    # -- UserStore -----------------------------------------------------------------------------

    @_store_errors
    async def signin(self, app_id: str, user_id: str, socket_id: str) -> bool:
        return await self._count_in(app_id, "uc", self._app(app_id).users, user_id) == 1

    @_store_errors
    async def signout(self, app_id: str, user_id: str, socket_id: str) -> bool:
        changed, total = await self._count_out(app_id, "uc", self._app(app_id).users, user_id, self._failed_users)
        return changed and total == 0

    @_store_errors
    async def online(self, app_id: str, user_ids: Sequence[str]) -> list[bool]:
        if not user_ids:
            return []
        values = await self.client.hmget(f"{self.base(app_id)}:uc", list(user_ids))
        return [v is not None and int(v) > 0 for v in values]

    # -- CacheStore ----------------------------------------------------------------------------

    @_store_errors
    async def put(self, app_id: str, channel: str, event: str, data: Any, ttl_s: int) -> None:
        await self.client.set(f"{self.base(app_id)}:cache:{channel}", orjson.dumps([event, data]),
                              px=int(ttl_s * 1000))

    @_store_errors
    async def get(self, app_id: str, channel: str) -> CachedEvent | None:
        key = f"{self.base(app_id)}:cache:{channel}"
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, ttl_ms = await pipe.execute()
        if raw is None:
            return None
        event, data = orjson.loads(raw)
        return CachedEvent(event, data, max(1, round(int(ttl_ms) / 1000)) if ttl_ms and ttl_ms > 0 else 1)

    # -- node lease, sync and reaper -------------------------------------------------------------

    async def _register_app(self, app_id: str) -> None:
        if app_id in self._registered_apps:
            return
        await self.client.sadd(f"{self.prefix}:nodeapps:{self.node_id}", app_id)
        self._registered_apps = self._registered_apps | {app_id}

    async def start_node(self) -> None:
        """Register this node's lease and start the heartbeat and reaper loops."""
        self._registered_apps = set()
        try:
            await self.heartbeat()
        except (RedisError, OSError):
            log.warning("Redis unavailable at start; will retry", exc_info=True)
        self._tasks = [
            asyncio.create_task(self._every(self.heartbeat_s, self.heartbeat)),
            asyncio.create_task(self._every(self.reaper_interval_s, self.reap)),
        ]

    async def stop_node(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A clean stop leaves nothing behind: remove this node's records as the reaper would.
        self._mirror = {app: _Mirror() for app in self._mirror}
        with contextlib.suppress(RedisError, OSError):
            await self.sync_all()
            await self.client.zrem(f"{self.prefix}:nodes", self.node_id)
            await self.client.delete(f"{self.prefix}:nodeapps:{self.node_id}")

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except (RedisError, OSError, StoreUnavailable) as exc:
                if self.healthy:
                    log.warning("Redis unavailable (%s); node state will be re-synced", exc)
                self.healthy = False
                self._outage_seen = True
                self._needs_sync = True
            except Exception:
                log.exception("%s failed", getattr(job, "__name__", "job"))

    async def heartbeat(self) -> None:
        expiry_ms = int((time.time() + self.lease_s) * 1000)
        nodes_key = f"{self.prefix}:nodes"
        apps_key = f"{self.prefix}:nodeapps:{self.node_id}"
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(nodes_key, {self.node_id: expiry_ms})
            if self._mirror:
                pipe.sadd(apps_key, *self._mirror)
            pipe.pexpire(apps_key, self.key_ttl_ms)
            for app_id, mirror in self._mirror.items():
                base = self.base(app_id)
                for key in (f"{base}:occ", f"{base}:conns", f"{base}:occn:{self.node_id}",
                            f"{base}:presn:{self.node_id}", f"{base}:uc", f"{base}:ucn:{self.node_id}"):
                    pipe.pexpire(key, self.key_ttl_ms)
                for channel in {ch for ch, _ in mirror.pres}:
                    pipe.pexpire(f"{base}:pc:{channel}", self.key_ttl_ms)
                    pipe.pexpire(f"{base}:pm:{channel}", self.key_ttl_ms)
            results = await pipe.execute()
        self._registered_apps = set(self._mirror)
        newly_added = results[0] == 1
        if self._outage_seen and not self.healthy:
            # Redis is back after an outage. Give every node's subscriber time to re-subscribe
            # (their reconnect back-off is capped below this), or the transitions this sync
            # publishes would reach nobody.
            await asyncio.sleep(RECOVERY_GRACE_S)
        if newly_added or self._needs_sync or not self.healthy:
            # Reaped while partitioned, Redis restarted empty, or writes failed: rewrite our records.
            if self.healthy and newly_added and self._mirror:
                log.warning("node %s was missing from Redis; re-registering its state", self.node_id)
            await self.sync_all()
        self.healthy = True
        self._outage_seen = False

    async def sync_all(self) -> None:
        async with self._gate.exclusive():
            failed_occ, failed_pres = set(self._failed_occ), dict(self._failed_pres)
            failed_users = set(self._failed_users)
            for app_id in list(self._mirror):
                transitions = await self._sync(app_id, self.node_id, self._mirror[app_id])
                await self._settle_failed_leaves(transitions, failed_occ, failed_pres, failed_users)
                if transitions:
                    await self._emit(transitions)
            # Only a complete pass clears the repair work; a failure leaves it for the next heartbeat.
            self._needs_sync = False
            self._failed_occ -= failed_occ
            self._failed_users -= failed_users
            for key in failed_pres:
                self._failed_pres.pop(key, None)

    async def _settle_failed_leaves(
        self,
        transitions: Transitions,
        failed_occ: set[tuple[str, str]],
        failed_pres: dict[tuple[str, str, str], Member],
        failed_users: set[tuple[str, str]],
    ) -> None:
        """Report leaves that failed during an outage and that sync could not see (Redis lost them)."""
        app_id = transitions.app_id
        channels = [ch for app, ch in failed_occ if app == app_id and ch not in transitions.vacated]
        if channels:
            for channel, count in zip(channels, await self.counts(app_id, channels), strict=True):
                if count == 0:
                    transitions.vacated.append(channel)
        seen = {(ch, m.key) for ch, m in transitions.removed}
        members = [(ch, m) for (app, ch, key), m in failed_pres.items() if app == app_id and (ch, key) not in seen]
        if members:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, member in members:
                    pipe.hexists(f"{self.base(app_id)}:pc:{channel}", member.key)
                present = await pipe.execute()
            transitions.removed.extend(m for m, here in zip(members, present, strict=True) if not here)
        users = [u for app, u in failed_users if app == app_id and u not in transitions.offline]
        if users:
            for user, here in zip(users, await self.online(app_id, users), strict=True):
                if not here:
                    transitions.offline.append(user)

    async def _sync(self, app_id: str, node_id: str, mirror: _Mirror) -> Transitions:
        base = self.base(app_id)
        args: list[Any] = [base, node_id, mirror.conns, len(mirror.occ)]
        for channel, count in mirror.occ.items():
            args += [channel, count]
        args.append(len(mirror.pres))
        for (channel, user), (count, encoded) in mirror.pres.items():
            args += [f"{channel}\n{user}", count, encoded]
        args.append(len(mirror.users))
        for user, count in mirror.users.items():
            args += [user, count]
        keys = [f"{base}:occ", f"{base}:occn:{node_id}", f"{base}:presn:{node_id}", f"{base}:conns",
                f"{base}:uc", f"{base}:ucn:{node_id}"]
        occupied, vacated, added, removed, online, offline = await self._script(_SYNC, keys, args)
        return Transitions(
            app_id,
            occupied=[c.decode() for c in occupied],
            vacated=[c.decode() for c in vacated],
            added=[(added[i].decode(), member_from_json(added[i + 1])) for i in range(0, len(added), 2)],
            removed=[(removed[i].decode(), member_from_json(removed[i + 1])) for i in range(0, len(removed), 2)],
            online=[u.decode() for u in online],
            offline=[u.decode() for u in offline],
        )

    async def _emit(self, transitions: Transitions) -> None:
        for listener in self._listeners:
            try:
                await listener(transitions)
            except Exception:
                log.warning("transitions listener failed", exc_info=True)

    async def reap(self) -> None:
        """If this node holds the reaper lock, remove every node whose lease expired."""
        lock_key = f"{self.prefix}:reaper"
        lock_ms = int(max(self.reaper_interval_s * 2, 1) * 1000)
        got = await self.client.set(lock_key, self.node_id, nx=True, px=lock_ms)
        if not got:
            holder = await self.client.get(lock_key)
            if holder is None or holder.decode() != self.node_id:
                return
            await self.client.pexpire(lock_key, lock_ms)
        now_ms = int(time.time() * 1000)
        dead = await self.client.zrangebyscore(f"{self.prefix}:nodes", "-inf", now_ms)
        for raw in dead:
            node = raw.decode()
            if node == self.node_id:
                continue
            await self.reap_node(node)

    async def reap_node(self, node: str) -> None:
        apps_key = f"{self.prefix}:nodeapps:{node}"
        apps = [a.decode() for a in await self.client.smembers(apps_key)]
        log.warning("reaping node %s (lease expired; %d apps)", node, len(apps))
        for app_id in apps:
            transitions = await self._sync(app_id, node, _Mirror())
            if transitions:
                await self._emit(transitions)
        await self.client.delete(apps_key)
        await self.client.zrem(f"{self.prefix}:nodes", node)
