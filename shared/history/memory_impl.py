"""Channel history in one process: defines the semantics the Redis store matches."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from shared.bus.base import BusUnavailable, Envelope, PublishGuard
from shared.bus.memory_impl import MemoryBus
from shared.clock import Clock
from shared.history.base import (
    HistoryPolicy,
    HistoryRead,
    HistoryStore,
    format_position,
    new_epoch,
    parse_position,
)

# Expired histories are dropped when touched, and all of them every this many publishes.
SWEEP_EVERY_PUBLISHES = 1000


class _Stream:
    __slots__ = ("entries", "epoch", "expires_at", "last")

    def __init__(self, epoch: str, expires_at: float) -> None:
        self.epoch = epoch
        self.last = 0  # offset of the latest event (0: none yet)
        self.entries: deque[Envelope] = deque()
        self.expires_at = expires_at

    @property
    def head(self) -> str:
        return format_position(self.epoch, self.last)


class MemoryHistoryStore:
    """See `HistoryStore`. Publishing assigns the position and hands the envelope to the in-process
    bus without awaiting in between, which makes the two one step."""

    def __init__(self, bus: MemoryBus, clock: Clock = time.monotonic) -> None:
        self.bus = bus
        self.clock = clock
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._publishes = 0

    def _live(self, key: tuple[str, str]) -> _Stream | None:
        stream = self._streams.get(key)
        if stream is not None and stream.expires_at <= self.clock():
            del self._streams[key]
            return None
        return stream

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._streams.items() if s.expires_at <= now]:
            del self._streams[key]

    async def publish(self, items: Sequence[tuple[Envelope, HistoryPolicy]], guard: PublishGuard | None = None) -> None:
        for sent, (envelope, policy) in enumerate(items):
            key = (envelope.app_id, envelope.channel)
            expires_at = self.clock() + policy.ttl_s
            stream = self._live(key)
            if stream is None:
                stream = self._streams[key] = _Stream(new_epoch(), expires_at)
            stream.last += 1
            envelope.position = stream.head
            stream.entries.append(envelope)
            while len(stream.entries) > policy.size:
                stream.entries.popleft()
            stream.expires_at = expires_at
            try:
                await self.bus.publish(envelope)
            except BusUnavailable as exc:
                exc.sent = sent
                raise
            self._publishes += 1
            if self._publishes % SWEEP_EVERY_PUBLISHES == 0:
                self._sweep()

    async def head(self, app_id: str, channel: str, policy: HistoryPolicy) -> str:
        key = (app_id, channel)
        stream = self._live(key)
        if stream is None:
            stream = self._streams[key] = _Stream(new_epoch(), self.clock() + policy.ttl_s)
        return stream.head

    async def read(self, app_id: str, channel: str, since: str, limit: int) -> HistoryRead:
        stream = self._live((app_id, channel))
        parsed = parse_position(since)
        if stream is None or parsed is None:
            return HistoryRead(stream.head if stream else None)
        epoch, offset = parsed
        if epoch != stream.epoch or offset > stream.last:
            return HistoryRead(stream.head)
        first = stream.last - len(stream.entries) + 1  # offset of entries[0]
        if offset + 1 < first:
            return HistoryRead(stream.head)  # trimmed away
        start = offset + 1 - first
        events = [stream.entries[i] for i in range(start, min(len(stream.entries), start + limit))]
        return HistoryRead(stream.head, events, continuous=True)

    async def latest(self, app_id: str, channel: str, limit: int) -> HistoryRead:
        stream = self._live((app_id, channel))
        if stream is None:
            return HistoryRead(None)
        entries = stream.entries
        return HistoryRead(stream.head, [entries[i] for i in range(max(0, len(entries) - limit), len(entries))])


def _conforms(store: MemoryHistoryStore) -> HistoryStore:
    return store  # checked by mypy: MemoryHistoryStore implements HistoryStore
