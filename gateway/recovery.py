"""`herald:recover`: replaying what a socket missed on a channel with history (docs/history.md).

A client that resubscribed asks with the last position it processed. The socket's live events for the
channel are held while the missed ones are found (in the node's replay cache, else in the history
store); those are sent in order, then `pusher_internal:herald_recovered` with `recovered: true`, the
count and the position the socket is now at, then the held live events minus those already replayed.
When the history no longer reaches back to the position (trimmed, or started over under a new
epoch), or the gap is over the bounds below, nothing is replayed and the answer says `recovered:
false` with a reason and the position the socket is now at: never a silent partial replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.connection import Connection
from gateway.frames import text_frame
from gateway.hub import event_payload
from gateway.replay_cache import Frame, ReplayCache
from shared import metrics
from shared.backend import Backend
from shared.bus.base import Envelope
from shared.clock import Clock
from shared.history.base import HistoryPolicy, format_position, history_policy, offset_of, parse_position
from shared.protocol import codes, messages
from shared.protocol.socket_ids import is_socket_id
from shared.state.base import StoreUnavailable

log = logging.getLogger("herald.gateway")

# Bounds of one request: events and bytes replayed (under the slow-reader bound of the socket's
# outbound buffer), and events per history-store read.
MAX_REPLAY_EVENTS = 10_000
MAX_REPLAY_BYTES = 2 * 1024 * 1024
READ_PAGE_EVENTS = 1000
# Per socket: a budget of replayed events that refills at a steady rate; each request costs
# REQUEST_COST on top of what it replays. An exhausted budget answers `rate_limited`.
BUDGET_EVENTS = 2 * MAX_REPLAY_EVENTS
REFILL_EVENTS_PER_S = 1000.0
REQUEST_COST = 20
# Earlier socket ids of the client (whose trigger exclusions still apply to it) taken per request.
MAX_EARLIER_SOCKETS = 8

# Reasons of `recovered: false`.
NO_HISTORY = "no_history"  # the channel keeps no history
NO_POSITION = "no_position"  # the request named no position to recover from
HISTORY_LOST = "history_lost"  # trimmed past the position, or the history started over (new epoch)
TOO_MANY = "too_many"  # more missed events than one request may replay
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"  # the history store can't be reached
BUSY = "busy"  # a recovery of this channel is already running for this socket


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class Recovery:
    def __init__(self, backend: Backend, cache: ReplayCache, clock: Clock = time.monotonic) -> None:
        self.backend = backend
        self.cache = cache
        self.clock = clock
        # Topic -> the store read filling the cache for it, so that sockets recovering the same channel
        # at once (a node's share of a restarted node's clients) wait for one read instead of each
        # reading and encoding the same events.
        self._reading: dict[tuple[str, str], asyncio.Future[None]] = {}

    # -- positions ------------------------------------------------------------------------------

    async def current_position(self, conn: Connection, channel: str, policy: HistoryPolicy) -> str | None:
        """Where the socket stands on the channel while its frames are held: just before the first held
        event, else the channel's latest position (None if the history store can't be reached)."""
        try:
            head: str | None = await self.backend.history.head(conn.app.id, channel, policy)
        except StoreUnavailable:
            log.warning("history head of %s unavailable", channel)
            head = None
        # Checked after the read: events held while it ran come after the head it returned.
        for _, _, position in conn.held.get(channel, ()):
            parsed = parse_position(position)
            if parsed is not None:
                return format_position(parsed[0], parsed[1] - 1)
        return head

    # -- herald:recover -------------------------------------------------------------------------

    async def handle(self, conn: Connection, msg: dict[str, Any], data: Any) -> None:
        if not isinstance(data, dict):
            data = {}
        channel = msg.get("channel") or data.get("channel")
        if not isinstance(channel, str) or not channel:
            return conn.error("herald:recover requires a channel", codes.INVALID_MESSAGE)
        if channel not in conn.channels:
            return conn.error(f"herald:recover: not subscribed to {channel[:64]}", codes.INVALID_MESSAGE)
        since = data.get("position")
        if since is not None and parse_position(since) is None:
            return conn.error("herald:recover: position must be '<epoch>-<offset>' as events carry it",
                              codes.INVALID_MESSAGE)
        policy = history_policy(conn.app, channel)
        if policy is None:
            return self._answer(conn, channel, False, 0, None, NO_HISTORY)
        if channel in conn.held:
            return self._answer(conn, channel, False, 0, None, BUSY)
        skip = {conn.socket_id}
        earlier = data.get("socket_ids")
        if isinstance(earlier, list):
            skip.update(s for s in earlier[:MAX_EARLIER_SOCKETS] if is_socket_id(s))

        held: list[tuple[bytes, bytes | None, str | None]] = []
        conn.held[channel] = held
        try:
            reason: str | None = None
            frames: list[Frame] = []
            last = since
            if since is None:
                reason = NO_POSITION
            elif not self._spend(conn, REQUEST_COST):
                reason = RATE_LIMITED
            else:
                try:
                    frames, last = await self._missed(conn.app.id, channel, since)
                except _Refused as refused:
                    reason = refused.reason
                except StoreUnavailable:
                    reason = UNAVAILABLE
            if conn.closed or conn.held.get(channel) is not held:
                return  # unsubscribed or closed meanwhile; nothing to answer
            if reason is None:
                count = 0
                for payload, wire, exclude in frames:
                    if exclude not in skip:
                        conn.send(payload, wire)
                        count += 1
                self._spend(conn, count)
                metrics.RECOVERIES.labels("recovered").inc()
                metrics.RECOVERED_EVENTS.inc(count)
                self._answer(conn, channel, True, count, last)
                conn.release(channel, through=last)
                return
            metrics.RECOVERIES.labels(reason).inc()
            position = await self.current_position(conn, channel, policy)
            if conn.held.get(channel) is held:
                self._answer(conn, channel, False, 0, position, reason)
                conn.release(channel)
        finally:
            if conn.held.get(channel) is held:
                conn.release(channel)

    def _answer(self, conn: Connection, channel: str, ok: bool, count: int, position: str | None,
                reason: str | None = None) -> None:
        conn.send(messages.recovered(channel, ok, count, position, reason))

    def _spend(self, conn: Connection, cost: int) -> bool:
        """Take `cost` from the socket's budget (refilled first); False, taking nothing, when the
        budget is spent."""
        now = self.clock()
        budget = min(BUDGET_EVENTS, conn.recover_budget + (now - conn.recover_at) * REFILL_EVENTS_PER_S)
        conn.recover_at = now
        if budget < REQUEST_COST:
            conn.recover_budget = budget
            return False
        conn.recover_budget = budget - cost
        return True

    async def _missed(self, app_id: str, channel: str, since: str) -> tuple[list[Frame], str]:
        """The frames after `since` up to the newest this node knows of, and the position after them."""
        parsed = parse_position(since)
        assert parsed is not None
        epoch, offset = parsed
        topic = (app_id, channel)
        frames = self.cache.after(topic, epoch, offset)
        reading = self._reading.get(topic)
        if frames is None and reading is not None:
            await asyncio.shield(reading)  # its outcome is not ours: only the cache it filled matters
            frames = self.cache.after(topic, epoch, offset)
        if frames is not None:
            metrics.RECOVERY_SOURCE.labels("cache").inc()
        else:
            metrics.RECOVERY_SOURCE.labels("store").inc()
            done = self._reading[topic] = asyncio.get_running_loop().create_future()
            try:
                frames = [(payload, text_frame(payload), env.exclude)
                          for env in await self._read_missed(app_id, channel, since, offset)
                          for payload in (event_payload(env),)]
                self.cache.fill(topic, epoch, offset + 1, frames)
            finally:
                if self._reading.get(topic) is done:
                    del self._reading[topic]
                done.set_result(None)
        if len(frames) > MAX_REPLAY_EVENTS or sum(len(f[0]) for f in frames) > MAX_REPLAY_BYTES:
            raise _Refused(TOO_MANY)
        return frames, format_position(epoch, offset + len(frames))

    async def _read_missed(self, app_id: str, channel: str, since: str, offset: int) -> list[Envelope]:
        """The events after `since` (at `offset`) from the history store, page by page."""
        events: list[Envelope] = []
        cursor = since
        size = 0
        while True:
            read = await self.backend.history.read(app_id, channel, cursor, READ_PAGE_EVENTS)
            if not read.continuous:
                raise _Refused(HISTORY_LOST)
            if read.head is not None and offset_of(read.head) - offset > MAX_REPLAY_EVENTS:
                raise _Refused(TOO_MANY)
            events.extend(read.events)
            # The data dominates a frame's size; stop reading early when it is over the bound anyway.
            size += sum(len(e.data) for e in read.events if isinstance(e.data, str))
            if size > MAX_REPLAY_BYTES:
                raise _Refused(TOO_MANY)
            if read.complete or not read.events:
                return events
            cursor = read.events[-1].position or cursor
