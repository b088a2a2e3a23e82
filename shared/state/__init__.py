"""Cluster-wide state: interfaces in `base`, implementations in `memory_impl` (one process) and
`redis_impl` + `redis_node` (a cluster over Redis)."""

from shared.state.base import (
    CachedEvent,
    CacheStore,
    ConnectionStore,
    LocalNode,
    Member,
    NodeLease,
    OccupancyStore,
    PresenceJoin,
    PresenceStore,
    StoreUnavailable,
    Transitions,
    TransitionsListener,
    UserStore,
)

__all__ = [
    "CacheStore",
    "CachedEvent",
    "ConnectionStore",
    "LocalNode",
    "Member",
    "NodeLease",
    "OccupancyStore",
    "PresenceJoin",
    "PresenceStore",
    "StoreUnavailable",
    "Transitions",
    "TransitionsListener",
    "UserStore",
]
