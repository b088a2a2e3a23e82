"""Cluster-wide channel state: connection quotas, channel occupancy and presence membership.

Each store changes state only through operations that return the transition they caused
(occupied / vacated, member added / removed), decided atomically for the whole cluster, so exactly
one caller sees each transition whichever node it runs on.

Callers (the gateway) guarantee pairing: `add`/`join` once per (socket, channel) and the matching
`remove`/`leave` once. The stores do not deduplicate sockets themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from shared.bus import BusUnavailable


class StoreUnavailable(BusUnavailable):
    """The shared state can't be reached (Redis is away). Like an unavailable bus, callers answer
    503 or a retryable error and never report a change that did not happen."""


def user_key(user_id: Any) -> str:
    """Users are compared by the string form of their id (decision 9): 10 and "10" are one user."""
    return user_id if isinstance(user_id, str) else orjson.dumps(user_id).decode()


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


class ConnectionStore(Protocol):
    async def open(self, app_id: str, socket_id: str, limit: int) -> bool:
        """Count a new connection; False (and nothing counted) when `limit` (>= 0) is reached."""

    async def close(self, app_id: str, socket_id: str) -> None: ...

    async def count(self, app_id: str) -> int: ...


class OccupancyStore(Protocol):
    async def add(self, app_id: str, channel: str, socket_id: str) -> int:
        """Add a subscription; returns the channel's new subscription count (1 = became occupied)."""

    async def remove(self, app_id: str, channel: str, socket_id: str) -> int:
        """Remove a subscription; returns the new count (0 = vacated)."""

    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]: ...

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        """Occupied channels whose name starts with `prefix`, with their subscription counts."""


class PresenceStore(Protocol):
    async def join(
        self, app_id: str, channel: str, socket_id: str, member: Member, max_members: int
    ) -> PresenceJoin: ...

    async def leave(self, app_id: str, channel: str, socket_id: str, member: Member) -> bool:
        """True when this was the user's last connection in the channel (send member_removed)."""

    async def members(self, app_id: str, channel: str) -> list[Member]: ...

    async def user_counts(self, app_id: str, channels: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class CachedEvent:
    event: str
    data: Any
    ttl_s: int  # seconds left before it expires


class UserStore(Protocol):
    """Signed-in users (pusher:signin), cluster-wide: a user is online while signed in on >= 1 socket."""

    async def signin(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Count a signed-in socket; True when the user just came online (0 -> 1)."""

    async def signout(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Uncount it; True when the user just went offline (1 -> 0)."""

    async def online(self, app_id: str, user_ids: Sequence[str]) -> list[bool]: ...


class CacheStore(Protocol):
    """The last event published to each cache channel, kept for a TTL (section 2.8)."""

    async def put(self, app_id: str, channel: str, event: str, data: Any, ttl_s: int) -> None: ...

    async def get(self, app_id: str, channel: str) -> CachedEvent | None: ...
