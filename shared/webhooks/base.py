"""Webhooks (docs/webhooks.md): the events producers queue, the queue interface, and the job store
interface the queue runs on.

Producers (the gateway's protocol handler, the node's repair and reaper, both through
`shared.transitions`) call `WebhookQueue.enqueue` once per transition; the transitions themselves are
decided atomically cluster-wide, so each webhook event is produced exactly once. Implementations own
the delay-and-cancel rule, batching, retries and delivery (`shared.webhooks.queue`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.apps.config import AppConfig
from shared.protocol.events import (
    WEBHOOK_CHANNEL_OCCUPIED,
    WEBHOOK_CHANNEL_VACATED,
    WEBHOOK_MEMBER_ADDED,
    WEBHOOK_MEMBER_REMOVED,
)
from shared.protocol.users import user_key

log = logging.getLogger("herald.webhooks")

# A delayed event -> the event that cancels it while it is pending (docs/webhooks.md, "Delay and
# cancel"): a channel re-occupied or a member back within the delay causes no webhooks at all.
DELAYED = {WEBHOOK_CHANNEL_VACATED: WEBHOOK_CHANNEL_OCCUPIED, WEBHOOK_MEMBER_REMOVED: WEBHOOK_MEMBER_ADDED}
CANCELLING = {v: k for k, v in DELAYED.items()}

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
    # Occupied/vacated and member added/removed: the transition's stamp, and for occupied/added the
    # stamp of the recent vacate/removal it follows (`shared.state.base.Stamp`); they pair a delayed
    # event with the one that cancels it whatever order the two reach the queue in. Not sent.
    stamp: int = 0
    after: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "channel": self.channel}
        if self.event is not None:
            out["event"] = self.event
        if self.data is not _UNSET:
            out["data"] = self.data
        if self.socket_id is not None:
            out["socket_id"] = self.socket_id
        if self.user_id is not None:
            # Pusher documents ids as strings in webhooks; a number's string is its JSON text.
            out["user_id"] = user_key(self.user_id)
        if self.subscription_count is not None:
            out["subscription_count"] = self.subscription_count
        return out


def wants(app: AppConfig, name: str) -> bool:
    """Cheap check producers make before building events: does the queue need `name` for this app?

    An occupy/add must reach the queue whenever the app wants the vacate/remove it cancels, even if no
    webhook takes the occupy/add itself.
    """
    cancels = CANCELLING.get(name)  # the delayed event this one withdraws, if any
    return any(name in hook.event_types or (cancels is not None and cancels in hook.event_types)
               for hook in app.webhooks)


class WebhookQueue(Protocol):
    async def enqueue(self, app: AppConfig, events: Sequence[WebhookEvent]) -> None:
        """Queue events for the app's matching webhooks, in order. Must not block on delivery; raises
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


# -- the job store --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing `JobStore.add` does, atomically with the others of the same call, in order."""

    job: bytes | None  # the encoded job to queue, or None (only a cancel check)
    due_ms: int
    set_cancel: str | None = None  # delayed job: a later check on this key withdraws it while pending
    check_cancel: str | None = None  # withdraw the pending job under this key; if there was one, skip `job`
    # Pairing by transition order (docs/webhooks.md, "Delay and cancel"): a delayed entry's `stamp`,
    # and on a cancelling entry `after`, the stamp of the delayed event it follows (0: pair with
    # whatever is pending, as without stamps).
    stamp: int = 0
    after: int = 0


ADDED = 1
NOTHING = 0
CANCELLED_PAIR = -1
CANCELLED = -2

# How long the queue remembers a delayed event's stamp (and a cancelling event that came first):
# longer than any job lives (shared.webhooks.queue.MAX_AGE_S).
PAIR_MEMORY_S = 360.0


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    raw: bytes
    attempts: int  # including this one


class JobStore(Protocol):
    async def add(self, app_id: str, entries: Sequence[Entry]) -> list[int]:
        """Apply the entries; per entry ADDED, NOTHING, CANCELLED_PAIR (a pending job was withdrawn
        and this entry's job was not queued) or CANCELLED (this entry's job was not queued).

        Pairing: a delayed entry remembers its `stamp` under its key (for PAIR_MEMORY_S). A cancelling
        entry with `after` withdraws the pending job only when that job is the delayed event with
        stamp `after`; when that event has not arrived yet (transitions made on two nodes can reach
        the queue in either order), the cancelling entry is not queued and the delayed event is
        dropped when it comes (both CANCELLED); when it came and was already claimed, the cancelling
        entry is queued. Without `after` any pending job under the key is withdrawn.
        """

    async def claim(
        self, app_id: str, now_ms: int, visibility_ms: int, limit: int
    ) -> tuple[list[Claimed], int | None]:
        """Take up to `limit` jobs due at `now_ms`, making them due again at now + visibility; also
        return the earliest due time left (None when the app has no jobs)."""

    async def ack(self, app_id: str, ids: Sequence[str]) -> None:
        """Delete jobs (delivered or dropped)."""

    async def reschedule(self, app_id: str, job_id: str, due_ms: int) -> None:
        """Make a claimed job due at `due_ms` (no-op when it was deleted meanwhile)."""

    async def pending(self, app_id: str) -> int:
        """Number of queued jobs (tests and diagnostics)."""

    async def backlog(self, app_id: str) -> tuple[int, int | None]:
        """For the queue gauges: the number of queued jobs and the earliest due time (ms; None when
        there are none). One round trip."""

    async def close(self) -> None: ...


def _conforms(queue: NullWebhookQueue) -> WebhookQueue:
    return queue  # checked by mypy: NullWebhookQueue implements WebhookQueue
