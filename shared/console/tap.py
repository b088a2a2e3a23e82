"""The node side of the debug console (docs/console.md): which apps a console watches, and copies of
their traffic for it.

A console server (the trigger API with `--console`) announces "watch app A" on the node-wide control
topic when a page opens a stream, and again every `ANNOUNCE_EVERY_S` while it stays open. Every node
(gateway and API alike) hears the announcement through its own subscription to that topic and, for
`WATCH_TTL_S` after the last one, copies what it publishes for A (API events, client events, member
changes, subscription counts, user events) and the outcome of A's webhook requests to A's console
topic, which only console servers subscribe to. Nobody watching costs one idle subscription per node
and a dict check per publish; no Redis key is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared.bus.base import Bus, BusUnavailable, Envelope, PublishGuard, Receiver
from shared.clock import Clock
from shared.protocol import events
from shared.protocol.channels import CONSOLE_CHANNEL, CONSOLE_CONTROL_APP, CONSOLE_CONTROL_CHANNEL

log = logging.getLogger("herald.console")

# A watch lapses this long after its last announcement (a console that went away stops costing).
WATCH_TTL_S = 15.0
# Console servers re-announce this often while a page is open: well inside the TTL, so one lost
# announcement (a Redis blip) doesn't interrupt the stream.
ANNOUNCE_EVERY_S = 5.0
# A node that could not subscribe the control topic at start (Redis away) retries this often.
SUBSCRIBE_RETRY_S = 1.0
# While an app is watched, each gateway reports its open connections of the app this often (the
# cluster-wide count of an app without a connection quota is kept nowhere else).
STATS_EVERY_S = 2.0

_CONSOLE_TOPICS = (CONSOLE_CHANNEL, CONSOLE_CONTROL_CHANNEL)  # never copied


class ConsoleTap:
    """Per process: the watched apps (from announcements) and the copies sent for them."""

    def __init__(self, bus: Bus, clock: Clock = time.monotonic, node_id: str = "") -> None:
        self.bus = bus  # the untapped bus: copies are published straight to it
        self.clock = clock
        self.node_id = node_id
        # A gateway's open connections of an app (set by the process assembly; None: not a gateway).
        self.local_connections: Callable[[str], int] | None = None
        self._stats: asyncio.Task[None] | None = None
        self.watched: dict[str, float] = {}  # app id -> until (clock seconds)
        self._heard: dict[str, list[asyncio.Future[None]]] = {}
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = False

    # -- the control topic ------------------------------------------------------------------------

    async def start(self) -> None:
        self.bus.set_receiver(self.receive)
        if not await self._subscribe():
            self._subscriber = asyncio.create_task(self._subscribe_until_done(), name="console-control")

    async def _subscribe(self) -> bool:
        try:
            await self.bus.subscribe(CONSOLE_CONTROL_APP, CONSOLE_CONTROL_CHANNEL)
        except BusUnavailable:
            return False
        self._subscribed = True
        return True

    async def _subscribe_until_done(self) -> None:
        while not await self._subscribe():
            await asyncio.sleep(SUBSCRIBE_RETRY_S)

    async def close(self) -> None:
        if self._stats is not None:
            self._stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        if self._subscribed:
            with contextlib.suppress(Exception):
                await self.bus.unsubscribe(CONSOLE_CONTROL_APP, CONSOLE_CONTROL_CHANNEL)
            self._subscribed = False

    def receive(self, env: Envelope) -> None:
        if env.channel != CONSOLE_CONTROL_CHANNEL or env.app_id != CONSOLE_CONTROL_APP:
            return
        if env.event != events.CONSOLE_WATCH or not isinstance(env.data, dict):
            return
        app_id, ttl_s = env.data.get("app_id"), env.data.get("ttl_s")
        if not isinstance(app_id, str) or not isinstance(ttl_s, int | float):
            return
        self.watched[app_id] = self.clock() + min(float(ttl_s), WATCH_TTL_S)
        for waiter in self._heard.pop(app_id, ()):
            if not waiter.done():
                waiter.set_result(None)
        if self.local_connections is not None and self._stats is None:
            self._stats = asyncio.get_running_loop().create_task(self._report_stats(), name="console-stats")

    async def _report_stats(self) -> None:
        """While anything is watched: this node's connection count of each watched app."""
        try:
            while self.watched and self.local_connections is not None:
                count = self.local_connections
                await self.send([Envelope(app_id, CONSOLE_CHANNEL, events.CONSOLE_STATS,
                                          {"connections": count(app_id)}, origin=self.node_id, ts=time.time())
                                 for app_id in list(self.watched) if self.watching(app_id)])
                await asyncio.sleep(STATS_EVERY_S)
        finally:
            self._stats = None

    async def announce(self, app_id: str) -> None:
        """Console servers: ask every node to copy `app_id`'s traffic for the next `WATCH_TTL_S`."""
        await self.bus.publish(Envelope(CONSOLE_CONTROL_APP, CONSOLE_CONTROL_CHANNEL, events.CONSOLE_WATCH,
                                        {"app_id": app_id, "ttl_s": WATCH_TTL_S}, ts=time.time()))

    def expect(self, app_id: str) -> asyncio.Future[None]:
        """Resolved when this node next hears an announcement for `app_id`: it went out through the bus
        and came back, so the other nodes' subscriptions have it too. Call before announcing."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._heard.setdefault(app_id, []).append(waiter)
        return waiter

    # -- copies ---------------------------------------------------------------------------------

    def watching(self, app_id: str) -> bool:
        until = self.watched.get(app_id)
        if until is None:
            return False
        if until < self.clock():
            del self.watched[app_id]
            return False
        return True

    def copies(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Console copies of the envelopes of watched apps (usually none)."""
        out = []
        for env in envelopes:
            if env.channel in _CONSOLE_TOPICS or not self.watching(env.app_id):
                continue
            out.append(Envelope(env.app_id, CONSOLE_CHANNEL, events.CONSOLE_EVENT,
                                {"channel": env.channel, "event": env.event, "data": env.data,
                                 "user_id": env.user_id, "socket_id": env.exclude},
                                origin=env.origin, ts=env.ts or time.time()))
        return out

    async def note(self, app_id: str, event: str, data: dict[str, Any], origin: str = "") -> None:
        """Send a record (e.g. a webhook outcome) to the app's console if it is watched; never raises."""
        if not self.watched or not self.watching(app_id):
            return
        await self.send([Envelope(app_id, CONSOLE_CHANNEL, event, data, origin=origin, ts=time.time())])

    async def send(self, copies: Sequence[Envelope]) -> None:
        if not copies:
            return
        try:
            await self.bus.publish_many(copies)
        except Exception as exc:  # the console is best-effort: never fail the publish it copies
            log.debug("console copies not sent: %s", exc)


class TappedBus:
    """The process's bus with the console tap on its publish path: the original goes out first, then
    (only while its app is watched) the copy."""

    def __init__(self, inner: Bus, tap: ConsoleTap) -> None:
        self.inner = inner
        self.tap = tap

    def __getattr__(self, name: str) -> Any:
        # Anything else is the inner bus's (e.g. RedisBus.connections, which tests and diagnostics read).
        return getattr(self.inner, name)

    def set_receiver(self, receiver: Receiver) -> None:
        self.inner.set_receiver(receiver)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, envelope: Envelope) -> None:
        await self.inner.publish(envelope)
        if self.tap.watched:
            copies = self.tap.copies((envelope,))
            if copies:
                await self.tap.send(copies)

    async def publish_many(self, envelopes: Sequence[Envelope], guard: PublishGuard | None = None) -> None:
        await self.inner.publish_many(envelopes, guard)
        if self.tap.watched:
            copies = self.tap.copies(envelopes)
            if copies:
                await self.tap.send(copies)

    async def subscribe(self, app_id: str, channel: str) -> None:
        await self.inner.subscribe(app_id, channel)

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        await self.inner.unsubscribe(app_id, channel)


def _conforms(bus: TappedBus) -> Bus:
    return bus  # checked by mypy: TappedBus implements Bus
