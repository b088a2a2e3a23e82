"""Cluster mode: the bus and the stores over Redis (a single server, a unix socket, a Sentinel-managed
master or a Redis Cluster, with or without TLS), all connected through one `RedisConnector`."""

from __future__ import annotations

from typing import Any

from redis.asyncio import RedisCluster

from shared import metrics
from shared.apps.registry import AppRegistry
from shared.backend import Backend, new_node_id
from shared.bus.redis_impl import RedisBus
from shared.history.redis_impl import RedisHistoryStore
from shared.ratelimit.redis_impl import RedisRateLimiter
from shared.redis.connection import RedisConnector, RedisSettings, TlsOptions, parse_redis_url
from shared.redis.health import DEFAULT_UNREADY_AFTER_S, RedisHealth
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


class RedisBackend(Backend):
    """A `Backend` whose client (and with it every store) must be initialised and closed too."""

    node: RedisNode
    client: Any = None
    connector: RedisConnector | None = None

    async def start(self) -> None:
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
        await super().start()

    async def close(self) -> None:
        await super().close()
        await self.client.aclose()
        if self.connector is not None:
            await self.connector.aclose()


def redis_backend(
    url: str | RedisSettings,
    prefix: str = DEFAULT_PREFIX,
    lease_s: float = NODE_LEASE_S,
    reaper_interval_s: float = REAPER_INTERVAL_S,
    cluster: bool | None = None,
    apps: AppRegistry | None = None,
    webhook_workers: int = DEFAULT_WORKERS,
    tls: TlsOptions | None = None,
    unready_after_s: float = DEFAULT_UNREADY_AFTER_S,
) -> RedisBackend:
    """`url` (or settings already parsed) and `tls` as `shared.redis.connection` describes; raises
    `RedisConfigError` for settings that can't work. `cluster` None asks the server.

    `webhook_workers` concurrent webhook deliveries in this process (0: this process only queues;
    jobs are delivered by other processes' workers)."""
    settings = url if isinstance(url, RedisSettings) else parse_redis_url(url, tls)
    connector = RedisConnector(settings)
    if cluster is None:
        cluster = connector.is_cluster()
    client = connector.command_client(cluster)
    health = RedisHealth(unready_after_s)
    metrics.REDIS.watch(health)
    node_id = new_node_id()
    bus = RedisBus(connector, prefix, client, cluster, health)
    # The Redis-restart gate (503 until re-synced) needs one boot key for the whole state: single Redis.
    node = RedisNode(client, prefix, node_id, lease_s=lease_s, reaper_interval_s=reaper_interval_s, health=health,
                     bus=bus, boot_gate=not cluster)
    backend = RedisBackend(
        bus,
        RedisConnectionStore(node), RedisOccupancyStore(node), RedisPresenceStore(node), RedisUserStore(node),
        RedisCacheStore(client, prefix), RedisHistoryStore(client, bus),
        node=node, node_id=node_id, webhooks=redis_webhook_queue(client, prefix, apps, workers=webhook_workers),
        apps=apps, limits=RedisRateLimiter(client, prefix),
    )
    backend.client = client
    backend.connector = connector
    return backend
