"""In-memory stores for one process (embedded mode); they define the semantics the Redis stores match.

See the interfaces in `shared.state.base` for each method's contract; a single process has no other
node to reap or re-sync with, so its `NodeLease` is `LocalNode`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from shared.clock import Clock
from shared.state.base import (
    CachedEvent,
    CacheStore,
    ConnectionStore,
    Member,
    OccupancyStore,
    PresenceJoin,
    PresenceStore,
    UserStore,
)


class MemoryConnectionStore:
    def __init__(self) -> None:
        self._sockets: dict[str, set[str]] = {}

    async def open(self, app_id: str, socket_id: str, limit: int) -> bool:
        sockets = self._sockets.setdefault(app_id, set())
        if 0 <= limit <= len(sockets):
            return False
        sockets.add(socket_id)
        return True

    async def close(self, app_id: str, socket_id: str) -> None:
        self._sockets.get(app_id, set()).discard(socket_id)

    async def count(self, app_id: str) -> int:
        return len(self._sockets.get(app_id, ()))


class MemoryOccupancyStore:
    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}

    async def add(self, app_id: str, channel: str, socket_id: str) -> int:
        counts = self._counts.setdefault(app_id, {})
        counts[channel] = counts.get(channel, 0) + 1
        return counts[channel]

    async def remove(self, app_id: str, channel: str, socket_id: str) -> int:
        counts = self._counts.get(app_id, {})
        left = counts.get(channel, 0) - 1
        if left > 0:
            counts[channel] = left
            return left
        counts.pop(channel, None)
        return 0

    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        counts = self._counts.get(app_id, {})
        return [counts.get(c, 0) for c in channels]

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        return {c: n for c, n in self._counts.get(app_id, {}).items() if c.startswith(prefix)}


class MemoryPresenceStore:
    def __init__(self) -> None:
        # (app, channel) -> user key -> [member, connection count]; dicts keep join order for rosters.
        self._channels: dict[tuple[str, str], dict[str, list]] = {}
        self._members: dict[str, int] = {}  # app -> members in all its channels

    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        users = self._channels.setdefault((app_id, channel), {})
        entry = users.get(member.key)
        if entry is None:
            if len(users) >= max_members:
                if not users:
                    del self._channels[(app_id, channel)]
                return PresenceJoin(False, False, [])
            users[member.key] = [member, 1]
            self._members[app_id] = self._members.get(app_id, 0) + 1
            added = True
        else:
            entry[1] += 1
            added = False
        return PresenceJoin(True, added, [m for m, _ in users.values()])

    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> bool:
        users = self._channels.get((app_id, channel))
        if not users or member.key not in users:
            return False
        entry = users[member.key]
        entry[1] -= 1
        if entry[1] > 0:
            return False
        del users[member.key]
        self._members[app_id] -= 1
        if not users:
            del self._channels[(app_id, channel)]
        return True

    async def members(self, app_id: str, channel: str) -> list[Member]:
        return [m for m, _ in self._channels.get((app_id, channel), {}).values()]

    async def user_counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        return [len(self._channels.get((app_id, c), ())) for c in channels]

    def local_members(self) -> dict[str, int]:
        return dict(self._members)


class MemoryUserStore:
    def __init__(self) -> None:
        self._sockets: dict[tuple[str, str], set[str]] = {}

    async def signin(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._sockets.setdefault((app_id, user_id), set())
        sockets.add(socket_id)
        return len(sockets) == 1

    async def signout(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._sockets.get((app_id, user_id))
        if not sockets or socket_id not in sockets:
            return False
        sockets.discard(socket_id)
        if sockets:
            return False
        del self._sockets[(app_id, user_id)]
        return True

    async def online(self, app_id: str, user_ids: Sequence[str]) -> list[bool]:
        return [(app_id, u) in self._sockets for u in user_ids]


class MemoryCacheStore:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._events: dict[tuple[str, str], tuple[str, Any, float]] = {}

    async def put(self, app_id: str, channel: str, event: str, data: Any, ttl_s: int) -> None:
        self._events[(app_id, channel)] = (event, data, self._clock() + ttl_s)

    async def get(self, app_id: str, channel: str) -> CachedEvent | None:
        entry = self._events.get((app_id, channel))
        if entry is None:
            return None
        event, data, expires = entry
        left = expires - self._clock()
        if left <= 0:
            del self._events[(app_id, channel)]
            return None
        return CachedEvent(event, data, max(1, round(left)))


def _conforms(
    c: MemoryConnectionStore, o: MemoryOccupancyStore, p: MemoryPresenceStore, u: MemoryUserStore,
    k: MemoryCacheStore,
) -> tuple[ConnectionStore, OccupancyStore, PresenceStore, UserStore, CacheStore]:
    return c, o, p, u, k  # checked by mypy: each class implements its interface
