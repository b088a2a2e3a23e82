"""The node's local fan-out: which local sockets are in which channel, and bus subscriptions.

An envelope from the bus is encoded once and framed once, then the same bytes are queued on every
local subscriber except the excluded socket. Events of channels with history also go to the node's
replay cache (docs/history.md), and the excluded socket gets a marker of the position it skips.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.connection import Connection
from gateway.frames import frame_size, text_frame
from gateway.replay_cache import ReplayCache
from shared import metrics
from shared.bus.base import Bus, Envelope
from shared.protocol import codes, events, messages
from shared.protocol.channels import SERVER_TO_USER_PREFIX, WATCH_PREFIX, channel_type

log = logging.getLogger("herald.gateway")

Topic = tuple[str, str]

_DELIVERIES = metrics.DELIVERIES.values
_MESSAGES_OUT = metrics.MESSAGES_OUT.values
_BYTES_OUT = metrics.BYTES_OUT.values

# The `type` label of the subscription and channel gauges; '#' topics (sign-in, watchlists) are "internal".
INTERNAL_TYPE = "internal"


def metric_type(channel: str) -> str:
    return INTERNAL_TYPE if channel.startswith("#") else channel_type(channel).kind.value


def event_payload(env: Envelope) -> bytes:
    """The client frame of an event published on the bus: one home for live and replay."""
    if env.channel.startswith(WATCH_PREFIX):
        # Watchlist events are connection-level: no channel field.
        return messages.event(env.event, env.data)
    if env.user_id is not None:
        return messages.event(env.event, env.data, env.channel, user_id=env.user_id)
    if env.position is not None:
        return messages.event(env.event, env.data, env.channel, position=env.position)
    return messages.event(env.event, env.data, env.channel)


class Hub:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._members: dict[Topic, dict[str, Connection]] = {}
        # Topic -> completed (or in-flight) bus subscription.
        self._ready: dict[Topic, asyncio.Future[None]] = {}
        self.replay = ReplayCache()
        bus.set_receiver(self.deliver)

    def topics(self) -> list[Topic]:
        """Topics with local sockets (tests check that nothing is left behind)."""
        return list(self._members)

    def local_count(self, app_id: str, channel: str) -> int:
        return len(self._members.get((app_id, channel), ()))

    async def join(self, conn: Connection, channel: str, hold: bool = True) -> None:
        """Add `conn` to `channel`, holding its events until `conn.release(channel)` (unless `hold` is
        False: internal topics have no subscription confirmation to wait for).

        Returns after the node's bus subscription for the channel is active, so no event published
        after this returns can be missed.
        """
        topic = (conn.app.id, channel)
        if hold:
            conn.held[channel] = []
        members = self._members.get(topic)
        kind = metric_type(channel)
        if members is None:
            members = self._members[topic] = {}
            metrics.CHANNELS.labels(kind).inc()
        if conn.socket_id not in members:
            metrics.CHANNEL_SUBSCRIPTIONS.labels(kind).inc()
        members[conn.socket_id] = conn
        ready = self._ready.get(topic)
        if ready is None:
            ready = asyncio.get_running_loop().create_future()
            self._ready[topic] = ready
            try:
                await self.bus.subscribe(*topic)
            except BaseException as exc:
                self._ready.pop(topic, None)
                ready.set_exception(exc)
                ready.exception()  # mark retrieved; waiters re-raise below
                conn.held.pop(channel, None)
                self._drop(conn, topic)
                raise
            ready.set_result(None)
        elif not ready.done():
            try:
                await asyncio.shield(ready)
            except BaseException:
                conn.held.pop(channel, None)
                self._drop(conn, topic)
                raise

    async def leave(self, conn: Connection, channel: str) -> None:
        topic = (conn.app.id, channel)
        conn.held.pop(channel, None)
        if self._drop(conn, topic):
            ready = self._ready.pop(topic, None)
            if ready is None:
                return
            try:
                # A subscribe still in flight must finish before it can be undone (the bus counts them).
                await asyncio.shield(ready)
                await self.bus.unsubscribe(*topic)
            except Exception:
                # The subscribe itself failed (it was never counted), or the bus is away: it restores
                # only the topics it still counts when it reconnects, so nothing is left behind.
                log.warning("bus unsubscribe failed for %s", topic, exc_info=True)

    def _drop(self, conn: Connection, topic: Topic) -> bool:
        """Remove conn from topic; True when the topic has no local sockets left."""
        members = self._members.get(topic)
        if members is None:
            return False
        kind = metric_type(topic[1])
        if members.pop(conn.socket_id, None) is not None:
            metrics.CHANNEL_SUBSCRIPTIONS.labels(kind).dec()
        if members:
            return False
        del self._members[topic]
        self.replay.drop(topic)
        metrics.CHANNELS.labels(kind).dec()
        return True

    def deliver(self, env: Envelope) -> None:
        members = self._members.get((env.app_id, env.channel))
        if not members:
            return
        if env.event == events.TERMINATE_CONNECTIONS and env.channel.startswith(SERVER_TO_USER_PREFIX):
            self.terminate(members)
            return
        payload = event_payload(env)
        wire = text_frame(payload)
        exclude = env.exclude
        position = env.position
        channel = env.channel
        sent = notices = 0
        # The per-socket loop is the hottest code of a gateway: channels without history keep the call
        # they always made (loadtest/history_cost.py measures both).
        if position is None:
            for socket_id, conn in members.items():
                if socket_id != exclude:
                    conn.deliver(channel, payload, wire)
                    sent += 1
        else:
            for socket_id, conn in members.items():
                if socket_id != exclude:
                    conn.deliver(channel, payload, wire, position)
                    sent += 1
            self.replay.add((env.app_id, channel), position, (payload, wire, exclude))
            skipped = members.get(exclude) if exclude is not None else None
            if skipped is not None:
                notice = messages.skipped(channel, position)
                skipped.deliver(channel, notice, None, position)
                notices = 1
                _BYTES_OUT[()] += frame_size(len(notice))
        # Counted once per broadcast (the sockets' own sends don't count these again).
        key = (env.app_id,)
        deliveries, messages_out = _DELIVERIES, _MESSAGES_OUT
        deliveries[key] = deliveries.get(key, 0) + sent
        messages_out[key] = messages_out.get(key, 0) + sent + notices
        _BYTES_OUT[()] += len(wire) * sent
        if env.ts:
            metrics.BUS_LAG.observe(max(0.0, time.time() - env.ts))

    @staticmethod
    def terminate(members: dict[str, Connection]) -> None:
        """terminate_connections: close the user's signed-in sockets with 4009."""
        for conn in list(members.values()):
            conn.send(messages.error("You got disconnected by the app.", codes.UNAUTHORIZED))
            conn.sink.close(codes.UNAUTHORIZED, "You got disconnected by the app.")
