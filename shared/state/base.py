"""Cluster-wide state: connection quotas, channel occupancy, presence, signed-in users, cache channels,
and the node's own lease on what it holds (docs/cluster.md).

Each store changes state only through operations that return the transition they caused (occupied /
vacated, member added / removed, online / offline), decided atomically for the whole cluster, so
exactly one caller sees each transition whichever node it runs on. What a transition means for clients
and webhooks is decided in one place, `shared.transitions`.

Callers (the gateway) guarantee pairing: `add`/`join`/`signin` once per (socket, name) and the matching
`remove`/`leave`/`signout` once. The stores do not deduplicate sockets themselves.

Outages: every method raises `StoreUnavailable` when the state can't be reached and then reports no
transition. A leave that failed that way is still settled later by the node (`NodeLease`), which
reports its transition once the state is reachable again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shared.bus.base import BusUnavailable
from shared.protocol.users import user_key

if TYPE_CHECKING:
    from shared.redis.health import RedisHealth


class StoreUnavailable(BusUnavailable):
    """The shared state can't be reached (Redis is away). Like an unavailable bus, callers answer
    503 or a retryable error and never report a change that did not happen."""


@dataclass(frozen=True, slots=True)
class Member:
    user_id: Any  # the JSON value from channel_data, kept as sent
    user_info: Any = None

    @property
    def key(self) -> str:
        return user_key(self.user_id)


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    accepted: bool  # False: the channel is full (max members) and this user is not in it
    added: bool  # True: first connection of this user in the channel (send member_added)
    members: Sequence[Member]  # roster after the join, including the joiner


@dataclass(frozen=True, slots=True)
class CachedEvent:
    event: str
    data: Any
    ttl_s: int  # seconds left before it expires


class ConnectionStore(Protocol):
    async def open(self, app_id: str, socket_id: str, limit: int) -> bool:
        """Count a new connection; False (and nothing counted) when `limit` (>= 0) is reached.

        The limit holds cluster-wide. During an outage the Redis store admits the connection (fails
        open: an outage must not lock users out) and corrects the count once Redis is back.
        """

    async def close(self, app_id: str, socket_id: str) -> None:
        """Uncount a connection counted by `open`; never raises (an outage is repaired later)."""

    async def count(self, app_id: str) -> int:
        """Open connections of the app in the cluster."""


class OccupancyStore(Protocol):
    async def add(self, app_id: str, channel: str, socket_id: str) -> int:
        """Add a subscription; returns the channel's new subscription count (1 = became occupied)."""

    async def remove(self, app_id: str, channel: str, socket_id: str) -> int:
        """Remove a subscription; returns the new count (0 = vacated)."""

    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        """Subscription counts of `channels` in order (0 for unoccupied ones)."""

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        """Occupied channels whose name starts with `prefix`, with their subscription counts."""


class PresenceStore(Protocol):
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin:
        """Count one more connection of `member.key` in the channel, unless the user is new and the
        channel already has `max_members` users (then nothing changes and `accepted` is False)."""

    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> bool:
        """True when this was the user's last connection in the channel (send member_removed)."""

    async def members(self, app_id: str, channel: str) -> list[Member]:
        """The channel's users, one per user, with the info of their first connection."""

    async def user_counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        """Distinct users of each presence channel, in order."""

    def local_members(self) -> dict[str, int]:
        """Members (one per user and channel) that this node's sockets hold, by app: no I/O, for the
        `herald_presence_members` gauge."""


class UserStore(Protocol):
    """Signed-in users (pusher:signin), cluster-wide: a user is online while signed in on >= 1 socket."""

    async def signin(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Count a signed-in socket; True when the user just came online (0 -> 1)."""

    async def signout(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Uncount it; True when the user just went offline (1 -> 0)."""

    async def online(self, app_id: str, user_ids: Sequence[str]) -> list[bool]:
        """Whether each user is signed in anywhere in the cluster, in order."""


class CacheStore(Protocol):
    """The last event published to each cache channel, kept for a TTL (docs/protocol.md, "Cache")."""

    async def put(self, app_id: str, channel: str, event: str, data: Any, ttl_s: int) -> None:
        """Replace the channel's cached event; it expires `ttl_s` seconds later."""

    async def get(self, app_id: str, channel: str) -> CachedEvent | None:
        """The cached event with its remaining TTL (at least 1 s), or None when none or expired."""


@dataclass
class Transitions:
    """What a repair (sync after an outage) or the reaper changed, cluster-wide, for one app.

    `counts` lists every channel whose subscription count changed, with its new count.
    """

    app_id: str
    occupied: list[str] = field(default_factory=list)
    vacated: list[str] = field(default_factory=list)
    added: list[tuple[str, Member]] = field(default_factory=list)
    removed: list[tuple[str, Member]] = field(default_factory=list)
    online: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    counts: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.occupied or self.vacated or self.added or self.removed or self.online or self.offline
                    or self.counts)


TransitionsListener = Callable[[Transitions], Awaitable[None]]


class NodeLease(Protocol):
    """This node's claim on the state it holds, so a dead node's records can be found and removed.

    In a cluster each node renews a lease; a node whose lease expired is reaped by a live one: its
    subscriptions, members and signed-in users are removed and the resulting transitions reported as
    if its sockets had disconnected. After an outage the node rewrites its own records and reports
    the difference (including leaves that failed meanwhile). In one process there is nothing to do.
    """

    @property
    def healthy(self) -> bool:
        """False from a failed state operation or heartbeat until the node's records are re-synced."""

    @property
    def redis_health(self) -> RedisHealth | None:
        """Whether this process reaches Redis, since when, how often it lost it (shared/redis/health.py):
        the facts behind /ready and the herald_redis_* metrics. None in one process (no Redis)."""

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        """Called with the transitions of every repair and reap, once each, cluster-wide."""

    async def start_node(self) -> None:
        """Register the lease and start renewing it (and reaping others)."""

    async def stop_node(self) -> None:
        """Remove this node's records as the reaper would, and its lease."""


class LocalNode:
    """The `NodeLease` of a single process: nothing can die without this node dying too."""

    healthy = True
    redis_health = None

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        return None

    async def start_node(self) -> None:
        return None

    async def stop_node(self) -> None:
        return None
