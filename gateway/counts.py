"""Subscription counts (docs/protocol.md, "Subscription counts"): `pusher_internal:subscription_count`
to a channel's subscribers and the `subscription_count` webhook, on every change of a non-presence
channel.

Above THROTTLE_ABOVE subscribers a channel gets at most one count per THROTTLE_S from each node, and a
trailing one when the window closes, so the last word is always the current count. The throttle is
per node: with N gateways a busy channel sees up to N counts per window (documented trade-off: no extra
Redis round trip per subscribe).
"""

from __future__ import annotations

import asyncio
import logging

from shared import transitions
from shared.apps.config import AppConfig
from shared.backend import Backend
from shared.clock import Clock
from shared.webhooks.base import queue_webhooks

log = logging.getLogger("herald.gateway")

THROTTLE_ABOVE = 100
THROTTLE_S = 5.0


class SubscriptionCounts:
    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.backend = backend
        self.clock = clock  # monotonic seconds
        self._last_sent: dict[tuple[str, str], float] = {}
        self._trailing: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._apps: dict[str, AppConfig] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    async def changed(self, app: AppConfig, channel: str, count: int) -> None:
        if not (transitions.counts_event(app, channel) or transitions.counts_webhook(app, channel)):
            return
        key = (app.id, channel)
        now = self.clock()
        if count > THROTTLE_ABOVE:
            last = self._last_sent.get(key, 0.0)
            if now - last < THROTTLE_S:
                if key not in self._trailing:
                    self._apps[app.id] = app
                    loop = asyncio.get_running_loop()
                    self._trailing[key] = loop.call_later(THROTTLE_S - (now - last), self._start_trailing, key)
                return
        self._last_sent[key] = now
        if count == 0:
            self._last_sent.pop(key, None)
        await self._send(app, channel, count)

    def _start_trailing(self, key: tuple[str, str]) -> None:
        task = asyncio.ensure_future(self._send_trailing(key))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _send_trailing(self, key: tuple[str, str]) -> None:
        self._trailing.pop(key, None)
        app = self._apps.get(key[0])
        if app is None:
            return
        try:
            (count,) = await self.backend.occupancy.counts(app.id, [key[1]])
        except Exception:
            log.warning("subscription count read failed for %s", key[1], exc_info=True)
            return
        self._last_sent[key] = self.clock()
        await self._send(app, key[1], count)

    async def _send(self, app: AppConfig, channel: str, count: int) -> None:
        backend = self.backend
        message = transitions.subscription_count_message(app, channel, count, backend.node_id)
        if message is not None:
            try:
                await backend.bus.publish(message)
            except Exception:
                log.warning("subscription count publish failed for %s", channel, exc_info=True)
        if transitions.counts_webhook(app, channel):
            await queue_webhooks(backend.webhooks, app, [transitions.subscription_count_webhook(channel, count)])
