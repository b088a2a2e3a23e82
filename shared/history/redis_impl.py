"""Channel history over Redis: one capped, expiring stream per channel (see `shared.history.base`).

The stream's key carries the channel's bus topic as its hash tag (`herald:hist:{herald:ev:APP:CHANNEL}`),
so on a Redis Cluster it lives in the topic's slot and one script can append to it and SPUBLISH the
event to the shard the gateways listen on; it starts with the prefix like every key of Herald's (the
ACL's key pattern, `shared/redis/acl.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from shared.bus.base import BusUnavailable, Envelope, GuardFailed, PublishGuard
from shared.bus.redis_impl import RedisBus
from shared.history.base import HistoryPolicy, HistoryRead, HistoryStore, new_epoch, offset_of, parse_position
from shared.redis.scripts import ScriptRunner, load_script
from shared.state.base import StoreUnavailable

HISTORY_PUBLISH = load_script("history_publish")
HISTORY_HEAD = load_script("history_head")
HISTORY_READ = load_script("history_read")
_PUBLISH_SHA = hashlib.sha1(HISTORY_PUBLISH.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _guarded(position: bytes | str | None) -> str:
    """The position the publish script returned; none: its guard refused (nothing was kept or sent)."""
    if position is None:
        raise GuardFailed("Redis restarted; the cluster is re-syncing")
    return _text(position)


class RedisHistoryStore:
    """See `HistoryStore`."""

    def __init__(self, client: Any, bus: RedisBus) -> None:
        self.client = client
        self.bus = bus
        self.scripts = ScriptRunner(client)
        self._sharded = "1" if bus.cluster else "0"

    def key(self, app_id: str, channel: str) -> bytes:
        # The topic has no braces (app ids and channel names can't contain them): the whole topic is
        # the tag, and the topic's own slot is that of its whole name.
        return self.bus.prefix.encode() + b":hist:{" + self.bus.topic(app_id, channel) + b"}"

    def _publish_keys(self, envelope: Envelope, guard: PublishGuard | None) -> list[Any]:
        key = self.key(envelope.app_id, envelope.channel)
        return [key] if guard is None else [key, guard.key]

    def _publish_args(self, envelope: Envelope, policy: HistoryPolicy, guard: PublishGuard | None) -> list[Any]:
        args = [self.bus.topic(envelope.app_id, envelope.channel), policy.size, policy.ttl_s * 1000, new_epoch(),
                envelope.pack_open(), self._sharded]
        return args if guard is None else [*args, guard.value]

    async def publish(self, items: Sequence[tuple[Envelope, HistoryPolicy]], guard: PublishGuard | None = None) -> None:
        if self.bus.cluster:
            guard = None  # see Bus.publish_many: a script can't reach other slots on a Redis Cluster
        try:
            if len(items) == 1:
                envelope, policy = items[0]
                position = await self.scripts.run(HISTORY_PUBLISH, self._publish_keys(envelope, guard),
                                                  self._publish_args(envelope, policy, guard))
                envelope.position = _guarded(position)
                return
            if self.bus.cluster:
                await self._publish_per_channel(items)
            else:
                await self._publish_pipelined(items, guard)
        except (RedisError, OSError) as exc:
            error = BusUnavailable(f"Redis publish failed: {exc}")
            error.sent = 0 if len(items) == 1 else None
            raise error from exc

    async def _publish_pipelined(self, items: Sequence[tuple[Envelope, HistoryPolicy]],
                                 guard: PublishGuard | None) -> None:
        """One round trip for a request's events; in order per channel, like the bus's pipeline."""
        async with self.client.pipeline(transaction=False) as pipe:
            for envelope, policy in items:
                keys = self._publish_keys(envelope, guard)
                pipe.evalsha(_PUBLISH_SHA, len(keys), *keys, *self._publish_args(envelope, policy, guard))
            results = await pipe.execute(raise_on_error=False)
        for (envelope, policy), result in zip(items, results, strict=True):
            if isinstance(result, NoScriptError):
                # The script cache was empty (a restarted Redis) for this event and, on its server, for
                # every later one too, so sending them again in order keeps each channel's order.
                result = await self.scripts.run(HISTORY_PUBLISH, self._publish_keys(envelope, guard),
                                                self._publish_args(envelope, policy, guard))
            elif isinstance(result, Exception):
                raise result
            envelope.position = _guarded(result)

    async def _publish_per_channel(self, items: Sequence[tuple[Envelope, HistoryPolicy]]) -> None:
        """Redis Cluster (redis-py's cluster pipeline refuses scripts): each channel's events in
        order, the channels concurrently."""
        by_channel: dict[tuple[str, str], list[tuple[Envelope, HistoryPolicy]]] = {}
        for envelope, policy in items:
            by_channel.setdefault((envelope.app_id, envelope.channel), []).append((envelope, policy))

        async def one_channel(events: list[tuple[Envelope, HistoryPolicy]]) -> None:
            for envelope, policy in events:
                position = await self.scripts.run(HISTORY_PUBLISH, [self.key(envelope.app_id, envelope.channel)],
                                                  self._publish_args(envelope, policy, None))
                envelope.position = _text(position)

        await asyncio.gather(*(one_channel(events) for events in by_channel.values()))

    async def head(self, app_id: str, channel: str, policy: HistoryPolicy) -> str:
        try:
            return _text(await self.scripts.run(HISTORY_HEAD, [self.key(app_id, channel)],
                                                [new_epoch(), policy.ttl_s * 1000]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

    async def _read(self, app_id: str, channel: str, since: str, limit: int) -> tuple[str | None, list[Envelope]]:
        try:
            raw_head, entries = await self.scripts.run(HISTORY_READ, [self.key(app_id, channel)], [since, limit])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc
        head = _text(raw_head) if raw_head else None
        events = []
        for raw_id, fields in entries:
            # fields is [b'e', envelope]; the marker of an empty history has an empty envelope.
            if fields[1]:
                events.append(Envelope.unpack_open(fields[1], _text(raw_id)))
        return head, events

    async def read(self, app_id: str, channel: str, since: str, limit: int) -> HistoryRead:
        parsed = parse_position(since)
        if parsed is None:
            return HistoryRead(None)
        head, events = await self._read(app_id, channel, since, limit)
        if head is None:
            return HistoryRead(None)
        head_epoch, head_offset = parse_position(head) or ("", -1)
        epoch, offset = parsed
        if epoch != head_epoch or offset > head_offset:
            return HistoryRead(head)
        if offset == head_offset:
            return HistoryRead(head, [], continuous=True)
        if not events or offset_of(events[0].position or "") != offset + 1:
            return HistoryRead(head)  # trimmed away
        return HistoryRead(head, events, continuous=True)

    async def latest(self, app_id: str, channel: str, limit: int) -> HistoryRead:
        head, events = await self._read(app_id, channel, "", limit)
        events.reverse()
        return HistoryRead(head, events)


def _conforms(store: RedisHistoryStore) -> HistoryStore:
    return store  # checked by mypy: RedisHistoryStore implements HistoryStore
