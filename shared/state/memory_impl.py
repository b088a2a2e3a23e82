"""In-memory stores for one process (embedded mode); they define the semantics the Redis stores match.

See the interfaces in `shared.state.base` for each method's contract; a single process has no other
node to reap or re-sync with, so its `NodeLease` is `LocalNode`."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from shared.clock import Clock
from shared.state.base import (
    PAIR_WINDOW_S,
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
    UserStore,
)


class StampClock:
    """Stamps for one process (see `Stamp`): wall-clock microseconds, or the last stamp + 1.

    Also remembers recent vacates and removals for `PAIR_WINDOW_S`, so an occupy (add) can say which
    one it follows, as the Redis scripts do with expiring keys."""

    def __init__(self, clock: Clock = time.time, window_s: float = PAIR_WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._last = 0
        self._recent: OrderedDict[Hashable, tuple[Stamp, float]] = OrderedDict()

    def stamp(self) -> Stamp:
        self._last = max(int(self._clock() * 1_000_000), self._last + 1)
        return self._last

    def remember(self, key: Hashable, stamp: Stamp) -> None:
        """Record a vacate/removal of `key`, forgetting those older than the window."""
        now = self._clock()
        self._recent.pop(key, None)
        self._recent[key] = (stamp, now + self._window_s)
        while self._recent:
            oldest, (_, expires) = next(iter(self._recent.items()))
            if expires > now:
                break
            del self._recent[oldest]

    def take(self, key: Hashable) -> Stamp:
        """The stamp of `key`'s recent vacate/removal (then forgotten), or 0."""
        entry = self._recent.pop(key, None)
        return entry[0] if entry is not None and entry[1] > self._clock() else 0


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
    def __init__(self, stamps: StampClock | None = None) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        self._stamps = stamps or StampClock()

    async def add(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        counts = self._counts.setdefault(app_id, {})
        count = counts[channel] = counts.get(channel, 0) + 1
        if count > 1:
            return Occupancy(count)
        return Occupancy(1, self._stamps.stamp(), self._stamps.take(("occ", app_id, channel)))

    async def remove(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        counts = self._counts.get(app_id, {})
        if channel not in counts:
            return Occupancy(0)
        left = counts[channel] - 1
        if left > 0:
            counts[channel] = left
            return Occupancy(left)
        del counts[channel]
        stamp = self._stamps.stamp()
        self._stamps.remember(("occ", app_id, channel), stamp)
        return Occupancy(0, stamp)

    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        counts = self._counts.get(app_id, {})
        return [counts.get(c, 0) for c in channels]

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        return {c: n for c, n in self._counts.get(app_id, {}).items() if c.startswith(prefix)}


class MemoryPresenceStore:
    def __init__(self, stamps: StampClock | None = None) -> None:
        # (app, channel) -> user key -> [member, connection count]; dicts keep join order for rosters.
        self._channels: dict[tuple[str, str], dict[str, list]] = {}
        self._members: dict[str, int] = {}  # app -> members in all its channels
        self._stamps = stamps or StampClock()

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
            return PresenceJoin(True, True, [m for m, _ in users.values()], self._stamps.stamp(),
                                self._stamps.take(("pres", app_id, channel, member.key)))
        entry[1] += 1
        return PresenceJoin(True, False, [m for m, _ in users.values()], self._stamps.stamp())

    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> Stamp:
        users = self._channels.get((app_id, channel))
        if not users or member.key not in users:
            return 0
        entry = users[member.key]
        entry[1] -= 1
        if entry[1] > 0:
            return 0
        del users[member.key]
        self._members[app_id] -= 1
        if not users:
            del self._channels[(app_id, channel)]
        stamp = self._stamps.stamp()
        self._stamps.remember(("pres", app_id, channel, member.key), stamp)
        return stamp

    async def members(self, app_id: str, channel: str) -> list[Member]:
        return [m for m, _ in self._channels.get((app_id, channel), {}).values()]

    async def roster(self, app_id: str, channel: str) -> PresenceRoster:
        return PresenceRoster(await self.members(app_id, channel), self._stamps.stamp())

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
