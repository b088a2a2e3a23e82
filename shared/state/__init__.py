"""Cluster-wide state: interfaces in `base`, implementations in `memory_impl` (one process) and
`redis_impl` + `redis_node` (a cluster over Redis)."""

from shared.state.base import (
    CachedEvent,
    CacheStore,
    ClusterResyncing,
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
    "ClusterResyncing",
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
