"""Cluster-wide state: connection quotas, channel occupancy, presence, signed-in users, cache channels,
and the node's own lease on what it holds (docs/cluster.md).

Each store changes state only through operations that return the transition they caused (occupied /
vacated, member added / removed, online / offline), decided atomically for the whole cluster, so
exactly one caller sees each transition whichever node it runs on. What a transition means for clients
and webhooks is decided in one place, `shared.transitions`.

Callers (the gateway) guarantee pairing: `add`/`join`/`signin` once per (socket, name) and the matching
`remove`/`leave`/`signout` once. The stores do not deduplicate sockets themselves.

Order (docs/cluster.md, "Ordering"): every occupied / vacated / member added / member removed
transition gets a `Stamp` from one clock per app, taken by the same atomic step that makes the
transition. Stamps strictly increase, so two transitions of the same channel (or channel and user)
are ordered whichever nodes made them, even when their messages cross on the way to subscribers and
the webhook queue. An occupy (add) also says which recent vacate (removal) it follows (`after`), so
their webhooks pair up whatever order they arrive in.

Outages: every method raises `StoreUnavailable` when the state can't be reached and then reports no
transition. A leave that failed that way is still settled later by the node (`NodeLease`), which
reports its transition once the state is reachable again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from shared.bus.base import BusUnavailable, PublishGuard
from shared.protocol.users import user_key

if TYPE_CHECKING:
    from shared.redis.health import RedisHealth


class StoreUnavailable(BusUnavailable):
    """The shared state can't be reached (Redis is away). Like an unavailable bus, callers answer
    503 or a retryable error and never report a change that did not happen."""


class ClusterResyncing(StoreUnavailable):
    """The state restarted (Redis lost its keys and subscribers) and not every live node has
    re-subscribed and re-synced yet: a publish could reach nobody and a query could read a partial
    state, so the HTTP API answers 503 (docs/cluster.md, "Redis restarts")."""


Stamp = int
"""A transition's place in its app's order: microseconds of the state's clock, or the previous stamp
+ 1 when that is later, so stamps never repeat or go back. 0 means "no transition"."""

# A vacate (member removal) is remembered this long, so an occupy (add) can say which one it follows.
PAIR_WINDOW_S = 60.0
# Stamps are kept this long after an app's last transition (a later one continues from the clock).
CLOCK_KEEP_S = 86400.0


@dataclass(frozen=True, slots=True)
class Member:
    user_id: Any  # the JSON value from channel_data, kept as sent
    user_info: Any = None

    @property
    def key(self) -> str:
        return user_key(self.user_id)


class ChannelChange(NamedTuple):
    """A channel occupied or vacated."""

    channel: str
    stamp: Stamp = 0
    after: Stamp = 0  # occupied: the stamp of the recent vacate it follows, else 0


class MemberChange(NamedTuple):
    """A member added to or removed from a presence channel."""

    channel: str
    member: Member
    stamp: Stamp = 0
    after: Stamp = 0  # added: the stamp of the user's recent removal from the channel, else 0


@dataclass(frozen=True, slots=True)
class Occupancy:
    """A channel's subscription count after an `add` or `remove`."""

    count: int
    stamp: Stamp = 0  # the change occupied (count 1) or vacated (count 0) the channel: its stamp; else 0
    after: Stamp = 0  # occupied: the stamp of the recent vacate it follows, else 0

    def occupied(self, channel: str) -> ChannelChange | None:
        return ChannelChange(channel, self.stamp, self.after) if self.stamp and self.count > 0 else None

    def vacated(self, channel: str) -> ChannelChange | None:
        return ChannelChange(channel, self.stamp) if self.stamp and self.count == 0 else None


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    accepted: bool  # False: the channel is full (max members) and this user is not in it
    added: bool  # True: first connection of this user in the channel (send member_added)
    members: Sequence[Member]  # roster after the join, including the joiner
    # The roster's place in the order: it reflects every presence transition stamped before, none
    # after. When `added`, it is also the stamp of the member's addition.
    stamp: Stamp = 0
    after: Stamp = 0  # added: the stamp of this user's recent removal from the channel, else 0


@dataclass(frozen=True, slots=True)
class PresenceRoster:
    members: Sequence[Member]
    stamp: Stamp  # reflects every presence transition of the app stamped before this, none after


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
    async def add(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        """Add a subscription; the channel's new subscription count (1 = became occupied, stamped)."""

    async def remove(self, app_id: str, channel: str, socket_id: str) -> Occupancy:
        """Remove a subscription; the new count (0 = vacated, stamped)."""

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

    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> Stamp:
        """The stamp of the member's removal when this was the user's last connection in the channel
        (send member_removed), else 0."""

    async def members(self, app_id: str, channel: str) -> list[Member]:
        """The channel's users, one per user, with the info of their first connection."""

    async def roster(self, app_id: str, channel: str) -> PresenceRoster:
        """`members` with its place in the order, read atomically."""

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
    """What a repair (sync after an outage) or the reaper changed, cluster-wide, for one app, stamped
    like live transitions.

    `counts` lists every channel whose subscription count changed, with its new count.
    """

    app_id: str
    occupied: list[ChannelChange] = field(default_factory=list)
    vacated: list[ChannelChange] = field(default_factory=list)
    added: list[MemberChange] = field(default_factory=list)
    removed: list[MemberChange] = field(default_factory=list)
    online: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    counts: list[tuple[str, int]] = field(default_factory=list)
    # Channels whose count must be read again before reporting (a re-sync after a restart).
    recount: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.occupied or self.vacated or self.added or self.removed or self.online or self.offline
                    or self.counts)


TransitionsListener = Callable[[Transitions], Awaitable[None]]
ResyncedListener = Callable[[], Awaitable[None]]


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

    @property
    def cluster_synced(self) -> bool:
        """True while every node with a live lease is subscribed and synced to the state's current
        life; False after the state restarted until they all are (and after this node lost it)."""

    def publish_guard(self) -> PublishGuard | None:
        """What an acknowledged publish must be checked against, atomically (`Bus.publish_many`), so
        it is refused if the state restarted since; raises ClusterResyncing while not
        `cluster_synced`. None: nothing to check."""

    async def confirm_synced(self) -> None:
        """After reading state to answer a query: raise ClusterResyncing unless the state is still
        the one the cluster was synced to (so the read saw it whole)."""

    def boot_changed(self) -> None:
        """A guarded publish was refused: the state restarted; stop answering until re-synced."""

    def add_resynced_listener(self, listener: ResyncedListener) -> None:
        """Called after this node re-synced its records (an outage, a restart of the state, being
        reaped while partitioned) once the cluster is synced: views built from events it may have
        missed (the gateway's presence views) are re-read from the state."""

    async def wait_synced(self, timeout_s: float) -> bool:
        """Wait until `cluster_synced` (False after `timeout_s`)."""

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        """Called with the transitions of every repair and reap, once each, cluster-wide."""

    async def start_node(self) -> None:
        """Register the lease and start renewing it (and reaping others)."""

    async def stop_node(self) -> None:
        """Remove this node's records as the reaper would, and its lease."""


class LocalNode:
    """The `NodeLease` of a single process: nothing can die or restart without this node too."""

    healthy = True
    redis_health = None
    cluster_synced = True

    def publish_guard(self) -> PublishGuard | None:
        return None

    async def confirm_synced(self) -> None:
        return None

    def boot_changed(self) -> None:
        return None

    def add_resynced_listener(self, listener: ResyncedListener) -> None:
        return None

    async def wait_synced(self, timeout_s: float) -> bool:
        return True

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        return None

    async def start_node(self) -> None:
        return None

    async def stop_node(self) -> None:
        return None
