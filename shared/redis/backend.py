"""Cluster mode: the bus and the stores over Redis (a single server or a Redis Cluster)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from shared.apps.registry import AppRegistry
from shared.backend import Backend, new_node_id
from shared.bus.redis_impl import RedisBus
from shared.ratelimit.redis_impl import RedisRateLimiter
from shared.state.redis_impl import (
    RedisCacheStore,
    RedisConnectionStore,
    RedisOccupancyStore,
    RedisPresenceStore,
    RedisUserStore,
)
from shared.state.redis_node import NODE_LEASE_S, REAPER_INTERVAL_S, RedisNode
from shared.webhooks.queue import DEFAULT_WORKERS
from shared.webhooks.redis_impl import redis_webhook_queue

DEFAULT_PREFIX = "herald"
# Commands fail fast while Redis is away, so HTTP requests answer 503 instead of hanging.
SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0
# Connections to Redis per process, and how long a command waits for a free one before failing.
POOL_CONNECTIONS = 128
POOL_WAIT_S = 5.0
# redis-py's cluster pool can't wait, so it gets room for bursts (per Redis node).
CLUSTER_POOL_CONNECTIONS = 1024


class RedisBackend(Backend):
    """A `Backend` whose client (and with it every store) must be initialised and closed too."""

    node: RedisNode
    client: Any = None

    async def start(self) -> None:
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
        await super().start()

    async def close(self) -> None:
        await super().close()
        await self.client.aclose()


def _is_cluster(url: str) -> bool:
    """Ask the server whether it runs in cluster mode (so one URL form serves both)."""
    import redis

    with redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                              socket_connect_timeout=CONNECT_TIMEOUT_S) as probe:
        try:
            info: Any = probe.info("cluster")
        except redis.RedisError:
            return False
        return bool(info.get("cluster_enabled"))


def redis_backend(
    url: str,
    prefix: str = DEFAULT_PREFIX,
    lease_s: float = NODE_LEASE_S,
    reaper_interval_s: float = REAPER_INTERVAL_S,
    cluster: bool | None = None,
    apps: AppRegistry | None = None,
    webhook_workers: int = DEFAULT_WORKERS,
) -> RedisBackend:
    """`webhook_workers` concurrent webhook deliveries in this process (0: this process only queues;
    jobs are delivered by other processes' workers)."""
    if cluster is None:
        cluster = _is_cluster(url)
    opts: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
    client: Any
    if cluster:
        client = RedisCluster.from_url(url, max_connections=CLUSTER_POOL_CONNECTIONS, **opts)
    else:
        # A waiting pool: bursts (a reconnect storm, many concurrent API requests) queue for a
        # connection instead of failing with "Too many connections" as redis-py's default pool does.
        pool = BlockingConnectionPool.from_url(url, max_connections=POOL_CONNECTIONS, timeout=POOL_WAIT_S, **opts)
        client = Redis.from_pool(pool)
    node_id = new_node_id()
    node = RedisNode(client, prefix, node_id, lease_s=lease_s, reaper_interval_s=reaper_interval_s)
    backend = RedisBackend(
        RedisBus(url, prefix, client, cluster),
        RedisConnectionStore(node), RedisOccupancyStore(node), RedisPresenceStore(node), RedisUserStore(node),
        RedisCacheStore(client, prefix),
        node=node, node_id=node_id, webhooks=redis_webhook_queue(client, prefix, apps, workers=webhook_workers),
        apps=apps, limits=RedisRateLimiter(client, prefix),
    )
    backend.client = client
    return backend
