"""Cluster mode: the bus and the stores over Redis (a single server or a Redis Cluster)."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import Redis, RedisCluster

from shared import protocol
from shared.backend import Backend, new_node_id
from shared.bus import BusUnavailable, Envelope
from shared.redis_pubsub import RedisBus
from shared.redis_state import NODE_LEASE_S, REAPER_INTERVAL_S, RedisState, Transitions

log = logging.getLogger("herald.redis")

DEFAULT_PREFIX = "herald"
# Commands fail fast while Redis is away, so HTTP requests answer 503 instead of hanging.
SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0


class RedisBackend(Backend):
    state: RedisState

    async def start(self) -> None:
        client = self.state.client
        if isinstance(client, RedisCluster):
            await client.initialize()
        await self.bus.start()
        await self.state.start_node()

    async def close(self) -> None:
        await self.state.stop_node()
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
) -> RedisBackend:
    if cluster is None:
        cluster = _is_cluster(url)
    opts: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S}
    client: Any = RedisCluster.from_url(url, **opts) if cluster else Redis.from_url(url, **opts)
    node_id = new_node_id()
    bus = RedisBus(url, prefix, client, cluster)
    state = RedisState(client, prefix, node_id, lease_s=lease_s, reaper_interval_s=reaper_interval_s)

    async def publish_presence(transitions: Transitions) -> None:
        """Transitions found by a sync or the reaper reach clients like live joins and leaves."""
        now = time.time()
        try:
            for channel, member in transitions.removed:
                await bus.publish(Envelope(transitions.app_id, channel, "pusher_internal:member_removed",
                                           protocol.member_removed_data(member.user_id), origin=node_id, ts=now))
            for channel, member in transitions.added:
                await bus.publish(Envelope(transitions.app_id, channel, "pusher_internal:member_added",
                                           protocol.member_added_data(member.user_id, member.user_info),
                                           origin=node_id, ts=now))
        except BusUnavailable:
            log.warning("could not publish %d presence transitions", len(transitions.removed))

    state.add_transitions_listener(publish_presence)
    backend = RedisBackend(bus, state, state, state, state, state, node_id=node_id)
    backend.state = state
    return backend
