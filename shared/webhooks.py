"""Webhook events (reference section 7) and the queue interface that delivers them.

Producers (the gateway's protocol handler, the node's sync/reaper) call `WebhookQueue.enqueue` once per
transition; the transitions themselves are decided atomically cluster-wide, so each webhook event is
produced exactly once. Implementations own the delay-and-cancel rule of section 7.4, batching, retries
and delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.config import AppConfig

log = logging.getLogger("herald.webhooks")

CHANNEL_OCCUPIED = "channel_occupied"
CHANNEL_VACATED = "channel_vacated"
MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"
CLIENT_EVENT = "client_event"
CACHE_MISS = "cache_miss"
SUBSCRIPTION_COUNT = "subscription_count"

_UNSET = object()


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    name: str
    channel: str
    user_id: Any = None  # member_added / member_removed / client_event on presence channels
    event: str | None = None  # client_event: the client event's name
    data: Any = _UNSET  # client_event: the data as received (string or object)
    socket_id: str | None = None  # client_event: the sender
    subscription_count: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "channel": self.channel}
        if self.event is not None:
            out["event"] = self.event
        if self.data is not _UNSET:
            out["data"] = self.data
        if self.socket_id is not None:
            out["socket_id"] = self.socket_id
        if self.user_id is not None:
            # Pusher documents ids as strings in webhooks.
            out["user_id"] = self.user_id if isinstance(self.user_id, str) else str(self.user_id)
        if self.subscription_count is not None:
            out["subscription_count"] = self.subscription_count
        return out


# An occupy/add cancels a pending vacate/remove (section 7.4), so it must reach the queue whenever the
# app wants the event it cancels, even if no webhook takes the occupy/add itself.
_CANCELS = {CHANNEL_OCCUPIED: CHANNEL_VACATED, MEMBER_ADDED: MEMBER_REMOVED}


def wants(app: AppConfig, name: str) -> bool:
    """Cheap check producers make before building events: does the queue need `name` for this app?"""
    cancels = _CANCELS.get(name)
    return any(name in hook.event_types or (cancels is not None and cancels in hook.event_types)
               for hook in app.webhooks)


class WebhookQueue(Protocol):
    async def enqueue(self, app: AppConfig, events: Sequence[WebhookEvent]) -> None:
        """Queue events for the app's matching webhooks. Must not block on delivery; raises
        BusUnavailable/StoreUnavailable only when the queue itself can't be reached."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def queue_webhooks(queue: WebhookQueue, app: AppConfig, events: Sequence[WebhookEvent]) -> None:
    """Queue the events the app's webhooks need; a queue failure is logged, never raised, so it can't
    fail the protocol action or repair that produced the events."""
    if not app.webhooks:
        return
    wanted = [e for e in events if wants(app, e.name)]
    if not wanted:
        return
    try:
        await queue.enqueue(app, wanted)
    except Exception:
        log.warning("could not queue %d webhook events for app %s", len(wanted), app.id, exc_info=True)


class NullWebhookQueue:
    """Drops everything: for nodes and tests that don't deliver webhooks."""

    async def enqueue(self, app: AppConfig, events: Sequence[WebhookEvent]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
