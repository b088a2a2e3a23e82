"""The state stores over Redis (a single server or a Redis Cluster): see the interfaces in
`shared.state.base` for each method's contract, and `shared.state.redis_node` for the key layout,
the node's mirror and the repair after outages.

Every change goes through a Lua script (`shared/redis/lua/`) that applies it and returns the
transition, so exactly one caller sees "occupied", "vacated", "member added" or "member removed",
whichever node it is on. Each store also updates the node's mirror, which the node writes back after
an outage.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError

from shared.redis.scripts import load_script
from shared.state.base import (
    CachedEvent,
    CacheStore,
    ConnectionStore,
    Member,
    Occupancy,
    OccupancyStore,
    PresenceJoin,
    PresenceRoster,
    PresenceStore,
    Stamp,
    StoreUnavailable,
    UserStore,
)
from shared.state.redis_node import (
    CLOCK_KEEP_MS,
    PAIR_WINDOW_MS,
    RedisNode,
)
from shared.state.redis_records import member_from_json, member_json, presence_field

CONNECTIONS_OPEN = load_script("connections_open")
CONNECTIONS_CLOSE = load_script("connections_close")
PRESENCE_JOIN = load_script("presence_join")
PRESENCE_LEAVE = load_script("presence_leave")
PRESENCE_ROSTER = load_script("presence_roster")

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


class RedisConnectionStore:
    """See `ConnectionStore`. Fails open during an outage (the node re-syncs the count later)."""

    def __init__(self, node: RedisNode) -> None:
        self.node = node

    async def open(self, app_id: str, socket_id: str, limit: int) -> bool:
        node = self.node
        mirror = node.app(app_id)
        async with node.gate.shared():
            try:
                await node.register_app(app_id)
                ok = await node.script(CONNECTIONS_OPEN, [f"{node.base(app_id)}:conns"], [node.node_id, limit])
            except (RedisError, OSError):
                # Fail open: a Redis outage must not lock users out; sync restores the count later.
                node.needs_sync = True
                mirror.conns += 1
                return True
        if ok:
            mirror.conns += 1
        return bool(ok)

    async def close(self, app_id: str, socket_id: str) -> None:
        node = self.node
        mirror = node.app(app_id)
        mirror.conns = max(0, mirror.conns - 1)
        async with node.gate.shared():
            try:
                await node.script(CONNECTIONS_CLOSE, [f"{node.base(app_id)}:conns"], [node.node_id])
            except (RedisError, OSError):
                node.needs_sync = True

    @_store_errors
    async def count(self, app_id: str) -> int:
        values = await self.node.client.hvals(f"{self.node.base(app_id)}:conns")
        return sum(int(v) for v in values)


class RedisOccupancyStore:
    """See `OccupancyStore`."""

    def __init__(self, node: RedisNode) -> None:
        self.node = node

    @_store_errors
    async def add(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        total, stamp, after = await self.node.count_in(app_id, "occ", self.node.app(app_id).occ, channel,
                                                       stamped=True)
        return Occupancy(total, stamp, after)

    @_store_errors
    async def remove(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        node = self.node
        _, total, stamp = await node.count_out(app_id, "occ", node.app(app_id).occ, channel, node.failed_occ,
                                               stamped=True)
        return Occupancy(total, stamp)

    @_store_errors
    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        if not channels:
            return []
        values = await self.node.client.hmget(f"{self.node.base(app_id)}:occ", list(channels))
        return [int(v) if v is not None else 0 for v in values]

    @_store_errors
    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        flat = await self.node.client.hgetall(f"{self.node.base(app_id)}:occ")
        out = {}
        for name, count in flat.items():
            channel = name.decode() if isinstance(name, bytes) else name
            if channel.startswith(prefix) and int(count) > 0:
                out[channel] = int(count)
        return out


class RedisPresenceStore:
    """See `PresenceStore`."""

    def __init__(self, node: RedisNode) -> None:
        self.node = node

    def _keys(self, app_id: str, channel: str, field: str) -> list[str]:
        base = self.node.base(app_id)
        return [f"{base}:pc:{channel}", f"{base}:pm:{channel}", f"{base}:presn:{self.node.node_id}",
                f"{base}:clock", f"{base}:mleft:{field}"]

    @_store_errors
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        node = self.node
        mirror = node.app(app_id)
        encoded = member_json(member)
        field = presence_field(channel, member.key)
        async with node.gate.shared():
            await node.register_app(app_id)
            accepted, added, members, stamp, after = await node.script(
                PRESENCE_JOIN, self._keys(app_id, channel, field),
                [field, member.key, encoded, max_members, CLOCK_KEEP_MS],
            )
            if accepted:
                entry = mirror.pres.setdefault((channel, member.key), [0, encoded])
                entry[0] += 1
        if not accepted:
            return PresenceJoin(False, False, [])
        return PresenceJoin(True, bool(added), [member_from_json(m) for m in members], int(stamp), int(after))

    @_store_errors
    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> Stamp:
        node = self.node
        mirror = node.app(app_id)
        entry = mirror.pres.get((channel, member.key))
        if entry is not None:
            entry[0] -= 1
            if entry[0] <= 0:
                del mirror.pres[(channel, member.key)]
        field = presence_field(channel, member.key)
        async with node.gate.shared():
            try:
                stamp = await node.script(PRESENCE_LEAVE, self._keys(app_id, channel, field),
                                          [field, member.key, CLOCK_KEEP_MS, PAIR_WINDOW_MS])
            except (RedisError, OSError):
                node.needs_sync = True
                node.failed_pres[(app_id, channel, member.key)] = member
                raise
        return int(stamp)

    @_store_errors
    async def members(self, app_id: str, channel: str) -> list[Member]:
        values = await self.node.client.hvals(f"{self.node.base(app_id)}:pm:{channel}")
        return [member_from_json(v) for v in values]

    @_store_errors
    async def roster(self, app_id: str, channel: str) -> PresenceRoster:
        base = self.node.base(app_id)
        stamp, values = await self.node.script(PRESENCE_ROSTER, [f"{base}:pm:{channel}", f"{base}:clock"],
                                               [CLOCK_KEEP_MS])
        return PresenceRoster([member_from_json(v) for v in values], int(stamp))

    @_store_errors
    async def user_counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        base = self.node.base(app_id)
        async with self.node.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.hlen(f"{base}:pc:{channel}")
            return [int(n) for n in await pipe.execute()]

    def local_members(self) -> dict[str, int]:
        return {app_id: len(mirror.pres) for app_id, mirror in list(self.node.mirror.items())}


class RedisUserStore:
    """See `UserStore`."""

    def __init__(self, node: RedisNode) -> None:
        self.node = node

    @_store_errors
    async def signin(self, app_id: str, user_id: str, socket_id: str) -> bool:
        total, _, _ = await self.node.count_in(app_id, "uc", self.node.app(app_id).users, user_id)
        return total == 1

    @_store_errors
    async def signout(self, app_id: str, user_id: str, socket_id: str) -> bool:
        node = self.node
        changed, total, _ = await node.count_out(app_id, "uc", node.app(app_id).users, user_id,
                                                 node.failed_users)
        return changed and total == 0

    @_store_errors
    async def online(self, app_id: str, user_ids: Sequence[str]) -> list[bool]:
        if not user_ids:
            return []
        values = await self.node.client.hmget(f"{self.node.base(app_id)}:uc", list(user_ids))
        return [v is not None and int(v) > 0 for v in values]


class RedisCacheStore:
    """See `CacheStore`: one key per cache channel, expiring with its TTL."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, app_id: str, channel: str) -> str:
        return f"{self.prefix}:{{{app_id}}}:cache:{channel}"

    @_store_errors
    async def put(self, app_id: str, channel: str, event: str, data: Any, ttl_s: int) -> None:
        await self.client.set(self._key(app_id, channel), orjson.dumps([event, data]), px=int(ttl_s * 1000))

    @_store_errors
    async def get(self, app_id: str, channel: str) -> CachedEvent | None:
        key = self._key(app_id, channel)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, ttl_ms = await pipe.execute()
        if raw is None:
            return None
        event, data = orjson.loads(raw)
        return CachedEvent(event, data, max(1, round(int(ttl_ms) / 1000)) if ttl_ms and ttl_ms > 0 else 1)


def _conforms(
    c: RedisConnectionStore, o: RedisOccupancyStore, p: RedisPresenceStore, u: RedisUserStore, k: RedisCacheStore
) -> tuple[ConnectionStore, OccupancyStore, PresenceStore, UserStore, CacheStore]:
    return c, o, p, u, k  # checked by mypy: each class implements its interface
