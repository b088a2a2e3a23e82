"""The set of pluggable parts a node runs on: a bus and the three state stores."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from shared.bus import Bus
from shared.bus_memory import MemoryBus
from shared.state import CacheStore, ConnectionStore, OccupancyStore, PresenceStore, UserStore
from shared.state_memory import (
    MemoryCacheStore,
    MemoryConnectionStore,
    MemoryOccupancyStore,
    MemoryPresenceStore,
    MemoryUserStore,
)
from shared.webhooks import NullWebhookQueue, WebhookQueue


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

    async def start(self) -> None:
        await self.bus.start()
        await self.webhooks.start()

    async def close(self) -> None:
        await self.webhooks.close()
        await self.bus.close()


def memory_backend() -> Backend:
    return Backend(
        MemoryBus(), MemoryConnectionStore(), MemoryOccupancyStore(), MemoryPresenceStore(),
        MemoryUserStore(), MemoryCacheStore(),
    )
