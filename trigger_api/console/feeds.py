"""The console server's live feeds (docs/console.md): one per open page, fed from the app's console
topic, which this process subscribes (like a gateway subscribes a channel) while any page watches the
app, and keeps announced to every node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from shared.backend import Backend
from shared.bus.base import Envelope
from shared.console.tap import ANNOUNCE_EVERY_S, STATS_EVERY_S
from shared.protocol import events
from shared.protocol.channels import CONSOLE_CHANNEL

log = logging.getLogger("herald.console")

# Records a page may fall behind by before older ones are dropped (it is told how many).
FEED_MAX_RECORDS = 1000
# A gateway's connection report counts this long (a gateway that stopped reporting is gone).
STATS_FRESH_S = 3 * STATS_EVERY_S


def record(env: Envelope) -> dict[str, Any]:
    """What the page shows for one console envelope: its kind, and the fields the kind has."""
    data = env.data if isinstance(env.data, dict) else {}
    base: dict[str, Any] = {"ts": env.ts, "node": env.origin}
    if env.event == events.CONSOLE_WEBHOOK:
        return {**base, "kind": "webhook", **data}
    name = str(data.get("event", ""))
    channel = str(data.get("channel", ""))
    if name.startswith(events.CLIENT_EVENT_PREFIX):
        kind = "client_event"
    elif name in (events.MEMBER_ADDED, events.MEMBER_REMOVED):
        kind = "member"
    elif name.startswith(events.RESERVED_PREFIXES) or channel.startswith("#watch-"):
        kind = "internal"
    else:
        kind = "api_event"  # published through the HTTP API (or the console's test form)
    return {**base, "kind": kind, "channel": channel, "event": name, "data": data.get("data"),
            "user_id": data.get("user_id"), "socket_id": data.get("socket_id")}


@dataclass(eq=False)
class Feed:
    """One page's stream of records."""

    app_id: str
    # Resolved once the nodes heard this feed's watch announcement.
    live: asyncio.Future[None]
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(FEED_MAX_RECORDS))
    dropped: int = 0

    def put(self, item: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1


class ConsoleFeeds:
    """This process's open feeds by app."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._feeds: dict[str, set[Feed]] = {}
        self._lock = asyncio.Lock()
        self._announcer: asyncio.Task[None] | None = None
        # app -> node -> (its open connections of the app, when it said so): gateways report them while
        # the app is watched.
        self._node_counts: dict[str, dict[str, tuple[int, float]]] = {}
        backend.bus.set_receiver(self.receive)

    def connections(self, app_id: str) -> int | None:
        """The app's open connections summed over the gateways that reported lately; None: no report."""
        now = time.monotonic()
        fresh = [n for n, at in self._node_counts.get(app_id, {}).values() if now - at <= STATS_FRESH_S]
        return sum(fresh) if fresh else None

    def receive(self, env: Envelope) -> None:
        if env.channel != CONSOLE_CHANNEL:
            return
        if env.event == events.CONSOLE_STATS:
            if isinstance(env.data, dict) and isinstance(env.data.get("connections"), int):
                self._node_counts.setdefault(env.app_id, {})[env.origin] = (env.data["connections"], time.monotonic())
            return
        feeds = self._feeds.get(env.app_id)
        if feeds:
            item = record(env)
            for feed in feeds:
                feed.put(item)

    async def open(self, app_id: str) -> Feed:
        """A new feed for `app_id`; raises BusUnavailable when the console topic can't be subscribed."""
        async with self._lock:
            feeds = self._feeds.get(app_id)
            if not feeds:
                await self.backend.bus.subscribe(app_id, CONSOLE_CHANNEL)
                feeds = self._feeds[app_id] = set()
            feed = Feed(app_id, self.backend.tap.expect(app_id))
            feeds.add(feed)
            if self._announcer is None:
                self._announcer = asyncio.create_task(self._announce_forever(), name="console-announcer")
        await self.backend.tap.announce(app_id)
        return feed

    async def close(self, feed: Feed) -> None:
        async with self._lock:
            feeds = self._feeds.get(feed.app_id)
            if feeds is None:
                return
            feeds.discard(feed)
            if not feeds:
                del self._feeds[feed.app_id]
                with contextlib.suppress(Exception):
                    await self.backend.bus.unsubscribe(feed.app_id, CONSOLE_CHANNEL)
            if not self._feeds and self._announcer is not None:
                self._announcer.cancel()
                self._announcer = None

    async def _announce_forever(self) -> None:
        """Keep every watched app announced; the watch lapses on the nodes once nobody announces it."""
        while True:
            await asyncio.sleep(ANNOUNCE_EVERY_S)
            for app_id in list(self._feeds):
                try:
                    await self.backend.tap.announce(app_id)
                except Exception as exc:
                    log.debug("console announcement for %s failed: %s", app_id, exc)
