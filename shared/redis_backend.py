"""Cluster mode: the bus and the stores over Redis (a single server or a Redis Cluster)."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from shared import protocol, webhooks
from shared.backend import Backend, new_node_id
from shared.bus import BusUnavailable, Envelope, watch_status_envelope
from shared.config import AppRegistry
from shared.redis_pubsub import RedisBus
from shared.redis_state import NODE_LEASE_S, REAPER_INTERVAL_S, RedisState, Transitions
from shared.webhook_queue import DEFAULT_WORKERS
from shared.webhooks import WebhookEvent, queue_webhooks
from shared.webhooks_redis import redis_webhook_queue

log = logging.getLogger("herald.redis")


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
    state: RedisState

    async def start(self) -> None:
        client = self.state.client
        if isinstance(client, RedisCluster):
            await client.initialize()
        await self.bus.start()
        await self.state.start_node()
        await self.webhooks.start()

    async def close(self) -> None:
        # The node's clean leave (stop_node) still queues webhooks, so the queue closes after it.
        await self.state.stop_node()
        await self.webhooks.close()
        await self.bus.close()
        await self.state.client.aclose()


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
    bus = RedisBus(url, prefix, client, cluster)
    state = RedisState(client, prefix, node_id, lease_s=lease_s, reaper_interval_s=reaper_interval_s)

    async def publish_transitions(transitions: Transitions) -> None:
        """Transitions found by a sync or the reaper reach clients and webhooks like live ones."""
        now = time.time()
        app_id = transitions.app_id
        envelopes = [
            Envelope(app_id, channel, "pusher_internal:member_removed", protocol.member_removed_data(m.user_id),
                     origin=node_id, ts=now)
            for channel, m in transitions.removed
        ] + [
            Envelope(app_id, channel, "pusher_internal:member_added",
                     protocol.member_added_data(m.user_id, m.user_info), origin=node_id, ts=now)
            for channel, m in transitions.added
        ] + [
            watch_status_envelope(app_id, user, True, node_id) for user in transitions.online
        ] + [
            watch_status_envelope(app_id, user, False, node_id) for user in transitions.offline
        ]
        try:
            for envelope in envelopes:
                await bus.publish(envelope)
        except BusUnavailable:
            log.warning("could not publish %d repair transitions for app %s", len(envelopes), app_id)
        app = backend.apps.by_id(app_id) if backend.apps is not None else None
        if app is None:
            return
        events = (
            [WebhookEvent(webhooks.CHANNEL_OCCUPIED, c) for c in transitions.occupied]
            + [WebhookEvent(webhooks.MEMBER_ADDED, c, user_id=m.user_id) for c, m in transitions.added]
            + [WebhookEvent(webhooks.MEMBER_REMOVED, c, user_id=m.user_id) for c, m in transitions.removed]
            + [WebhookEvent(webhooks.CHANNEL_VACATED, c) for c in transitions.vacated]
        )
        await queue_webhooks(backend.webhooks, app, events)

    queue = redis_webhook_queue(client, prefix, apps, workers=webhook_workers)
    backend = RedisBackend(bus, state, state, state, state, state, node_id=node_id, webhooks=queue, apps=apps)
    backend.state = state
    state.add_transitions_listener(publish_transitions)
    return backend
