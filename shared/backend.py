"""The parts a node runs on: a bus, the state stores, the node's lease and the webhook queue, in memory
(one process) or over Redis (`shared.redis.backend`)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from shared import transitions
from shared.apps.registry import AppRegistry, AppsUnavailable
from shared.bus.base import Bus, BusUnavailable, GuardFailed
from shared.bus.memory_impl import MemoryBus
from shared.console.tap import ConsoleTap, TappedBus
from shared.history.base import HistoryStore
from shared.history.memory_impl import MemoryHistoryStore
from shared.ratelimit.base import RateLimiter
from shared.ratelimit.memory_impl import MemoryRateLimiter
from shared.state.base import (
    CacheStore,
    ClusterResyncing,
    ConnectionStore,
    LocalNode,
    NodeLease,
    OccupancyStore,
    PresenceStore,
    Transitions,
    UserStore,
)
from shared.state.memory_impl import (
    MemoryCacheStore,
    MemoryConnectionStore,
    MemoryOccupancyStore,
    MemoryPresenceStore,
    MemoryUserStore,
    StampClock,
)
from shared.webhooks.base import NullWebhookQueue, WebhookQueue, queue_webhooks
from shared.webhooks.memory_impl import memory_webhook_queue
from shared.webhooks.queue import DEFAULT_WORKERS, QueuedWebhooks

log = logging.getLogger("herald")


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
    history: HistoryStore
    node: NodeLease = field(default_factory=LocalNode)
    node_id: str = field(default_factory=new_node_id)
    webhooks: WebhookQueue = field(default_factory=NullWebhookQueue)
    # Per-app HTTP API rates (cluster-wide with Redis).
    limits: RateLimiter = field(default_factory=MemoryRateLimiter)
    # The apps this node serves; set by the process assembly (webhooks of reaped nodes need them).
    apps: AppRegistry | None = None

    # The debug console's tap on this process's publishes (docs/console.md); set up from `bus`.
    tap: ConsoleTap = field(init=False)

    def __post_init__(self) -> None:
        self.node.add_transitions_listener(self.report)
        inner = self.bus.inner if isinstance(self.bus, TappedBus) else self.bus
        self.tap = ConsoleTap(inner, node_id=self.node_id)
        self.bus = TappedBus(inner, self.tap)
        if isinstance(self.webhooks, QueuedWebhooks):
            self.webhooks.console = self.tap

    async def start(self) -> None:
        await self.bus.start()
        await self.tap.start()
        await self.node.start_node()
        await self.webhooks.start()

    async def close(self) -> None:
        # The node's clean leave still queues webhooks, so the queue closes after it.
        await self.node.stop_node()
        await self.webhooks.close()
        await self.tap.close()
        await self.bus.close()

    async def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close every connection signed in as the user, on every node (guarded like the HTTP API's
        publishes: refused while the cluster re-syncs after a Redis restart)."""
        try:
            await self.bus.publish_many([transitions.terminate_user(app_id, user_id, self.node_id)],
                                        guard=self.node.publish_guard())
        except GuardFailed:
            self.node.boot_changed()
            raise ClusterResyncing("Redis restarted; the cluster is re-syncing, try again shortly") from None

    async def report(self, changes: Transitions) -> None:
        """Transitions found by a repair or the reaper reach clients and webhooks like live ones."""
        try:
            app = await self.apps.by_id(changes.app_id) if self.apps is not None else None
        except AppsUnavailable:
            app = None  # clients still hear the transitions; webhooks need the app's config
        envelopes, hooks = transitions.repaired(app, changes, self.node_id)
        try:
            for envelope in envelopes:
                await self.bus.publish(envelope)
        except BusUnavailable:
            log.warning("could not publish %d repair transitions for app %s", len(envelopes), changes.app_id)
        if app is not None:
            await queue_webhooks(self.webhooks, app, hooks)


def memory_backend(apps: AppRegistry | None = None, webhook_workers: int = DEFAULT_WORKERS) -> Backend:
    """One process's backend. Webhooks are queued and delivered in memory by `webhook_workers`
    concurrent deliveries; 0 turns webhooks off (nothing else could deliver them)."""
    webhooks: WebhookQueue = (
        memory_webhook_queue(apps, workers=webhook_workers) if webhook_workers > 0 else NullWebhookQueue()
    )
    bus = MemoryBus()
    stamps = StampClock()
    return Backend(
        bus, MemoryConnectionStore(), MemoryOccupancyStore(stamps), MemoryPresenceStore(stamps),
        MemoryUserStore(), MemoryCacheStore(), MemoryHistoryStore(bus), webhooks=webhooks, apps=apps,
    )
