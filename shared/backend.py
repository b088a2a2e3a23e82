"""The set of pluggable parts a node runs on: a bus and the three state stores."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from shared.bus import Bus, Envelope
from shared.bus_memory import MemoryBus
from shared.channels import SERVER_TO_USER_PREFIX
from shared.config import AppRegistry
from shared.state import CacheStore, ConnectionStore, OccupancyStore, PresenceStore, UserStore
from shared.state_memory import (
    MemoryCacheStore,
    MemoryConnectionStore,
    MemoryOccupancyStore,
    MemoryPresenceStore,
    MemoryUserStore,
)
from shared.webhook_queue import DEFAULT_WORKERS
from shared.webhooks import NullWebhookQueue, WebhookQueue
from shared.webhooks_memory import memory_webhook_queue

# A bus control message: gateways close the user's signed-in sockets with 4009 instead of relaying it.
TERMINATE_EVENT = "pusher_internal:terminate_connections"


def new_node_id() -> str:
    return secrets.token_hex(6)


@dataclass
class Backend:
    bus: Bus
    connections: ConnectionStore
    occupancy: OccupancyStore
    presence: PresenceStore
    users: UserStore
    cache: CacheStore
    node_id: str = field(default_factory=new_node_id)
    webhooks: WebhookQueue = field(default_factory=NullWebhookQueue)
    # The apps this node serves; set by the process assembly (webhooks of reaped nodes need them).
    apps: AppRegistry | None = None

    async def start(self) -> None:
        await self.bus.start()
        await self.webhooks.start()

    async def close(self) -> None:
        await self.webhooks.close()
        await self.bus.close()

    async def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close every connection signed in as the user, on every node (they all listen on the
        user's server-to-user topic)."""
        await self.bus.publish(
            Envelope(app_id, SERVER_TO_USER_PREFIX + user_id, TERMINATE_EVENT, None, origin=self.node_id,
                     ts=time.time())
        )


def memory_backend(apps: AppRegistry | None = None, webhook_workers: int = DEFAULT_WORKERS) -> Backend:
    """One process's backend. Webhooks are queued and delivered in memory by `webhook_workers`
    concurrent deliveries; 0 turns webhooks off (nothing else could deliver them)."""
    webhooks: WebhookQueue = (
        memory_webhook_queue(apps, workers=webhook_workers) if webhook_workers > 0 else NullWebhookQueue()
    )
    return Backend(
        MemoryBus(), MemoryConnectionStore(), MemoryOccupancyStore(), MemoryPresenceStore(),
        MemoryUserStore(), MemoryCacheStore(), webhooks=webhooks, apps=apps,
    )
