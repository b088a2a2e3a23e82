"""The bus: how an event published anywhere reaches the gateways whose sockets are in its channel.

Delivery guarantee (both implementations): at most once, in publish order per channel and publisher,
to every node that had completed `subscribe()` for the channel before the message was published.
A gateway subscribes a channel when its first local socket joins and unsubscribes after the last
leaves, so a node only receives traffic for channels it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import msgpack
import orjson


class BusUnavailable(Exception):
    """The bus cannot publish right now (for example Redis is down); the event was not sent.

    From `publish_many`, `sent` says how many envelopes went out before the failure (None: unknown).
    """

    sent: int | None = 0


class GuardFailed(BusUnavailable):
    """A guarded publish was refused: the guard key no longer holds its value (Redis restarted since
    the caller checked that the cluster was synced). Nothing was published."""


@dataclass(frozen=True, slots=True)
class PublishGuard:
    """Publish only while `key` holds `value`, checked atomically with the publish (the HTTP API's
    guard against a Redis restart it has not noticed yet: shared.state.base.NodeLease)."""

    key: str
    value: str


@dataclass(slots=True)
class Envelope:
    app_id: str
    channel: str
    event: str
    # The publisher's data: the exact string from the HTTP API, or a client event's string/object.
    data: Any
    # socket_id that must not receive the event (trigger exclusion, client-event sender).
    exclude: str | None = None
    # Sender's presence user_id on client events (kept as its JSON value).
    user_id: Any = None
    origin: str = ""
    # Publish time, seconds since the epoch, for the pub/sub lag metric.
    ts: float = 0.0
    # Member events: the transition's stamp (`shared.state.base.Stamp`); gateways drop a member event
    # older than what their subscribers already have. 0 on every other event.
    order: int = 0
    # The event's place in its channel's history, "<epoch>-<offset>" (docs/history.md); None on
    # channels without history. It must stay the LAST field: the history script appends it to the
    # packed envelope (`pack_open`), so fields added later go before it.
    position: str | None = None

    def _head(self) -> tuple[Any, ...]:
        return (self.app_id, self.channel, self.event, self.data, self.exclude, self.user_id, self.origin,
                self.ts, self.order)

    def pack(self) -> bytes:
        # Spelled out (not through _head) because every published event is packed once. Without an
        # order or a position the bytes are those of envelopes from before either existed.
        if self.position is None:
            if not self.order:
                return msgpack.packb((self.app_id, self.channel, self.event, self.data, self.exclude,
                                      self.user_id, self.origin, self.ts), use_bin_type=True, default=_pack_extra)
            return msgpack.packb((self.app_id, self.channel, self.event, self.data, self.exclude, self.user_id,
                                  self.origin, self.ts, self.order), use_bin_type=True, default=_pack_extra)
        return msgpack.packb((self.app_id, self.channel, self.event, self.data, self.exclude, self.user_id,
                              self.origin, self.ts, self.order, self.position), use_bin_type=True,
                             default=_pack_extra)

    def pack_open(self) -> bytes:
        """The envelope packed without its position but with an array header that counts it: the
        packed position (a msgpack string) appended to these bytes completes a valid envelope."""
        head = msgpack.packb(self._head(), use_bin_type=True, default=_pack_extra)
        assert head[0] == _FIXARRAY | _HEAD_FIELDS, "the envelope outgrew a msgpack fixarray"
        return bytes((_FIXARRAY | (_HEAD_FIELDS + 1),)) + head[1:]

    @classmethod
    def unpack(cls, raw: bytes) -> Envelope:
        """Fields are positional: an envelope with fewer (an older node's) takes the defaults, one with
        more (a newer node's) has them ignored."""
        values = msgpack.unpackb(raw, raw=False, use_list=True, ext_hook=_unpack_extra)
        if len(values) == _HEAD_FIELDS and isinstance(values[-1], str):
            values.insert(_HEAD_FIELDS - 1, 0)  # a position right after `ts`: from before `order` existed
        return cls(*values[:_FIELD_COUNT])

    @classmethod
    def unpack_open(cls, open_: bytes, position: str) -> Envelope:
        """The envelope `pack_open` made, completed with the position it was given."""
        return cls.unpack(open_ + msgpack.packb(position))


_FIELD_COUNT = len(fields(Envelope))
# msgpack: an array of up to 15 elements is one header byte 0x90 | length.
_FIXARRAY = 0x90
_HEAD_FIELDS = 9  # every field but the position
# A user id beyond 64 bits travels as its JSON text (shared.protocol.users.loads_exact).
_EXT_JSON_FRAGMENT = 1


def _pack_extra(value: Any) -> Any:
    if isinstance(value, orjson.Fragment):
        return msgpack.ExtType(_EXT_JSON_FRAGMENT, orjson.dumps(value))
    raise TypeError(f"cannot pack {type(value).__name__}")


def _unpack_extra(code: int, data: bytes) -> Any:
    if code == _EXT_JSON_FRAGMENT:
        return orjson.Fragment(data)
    return msgpack.ExtType(code, data)


Receiver = Callable[[Envelope], None]


class Bus(Protocol):
    """Pub/sub of envelopes by (app_id, channel) topic."""

    def set_receiver(self, receiver: Receiver) -> None:
        """The single callback that gets every envelope for a subscribed topic, in order."""

    async def start(self) -> None:
        """Connect; an unreachable bus is not an error here (it keeps trying and `subscribe` raises)."""

    async def close(self) -> None: ...

    async def publish(self, envelope: Envelope) -> None:
        """Send to every node subscribed to the envelope's channel; raises BusUnavailable."""

    async def publish_many(self, envelopes: Sequence[Envelope], guard: PublishGuard | None = None) -> None:
        """Publish in order, in one round trip where the bus allows; BusUnavailable carries `sent`.

        With a `guard`, nothing is published unless it holds (GuardFailed). A bus without restarts
        (one process) ignores it; so does the Redis Cluster bus (see RedisBus.publish_many)."""

    async def subscribe(self, app_id: str, channel: str) -> None:
        """Returns once envelopes published afterwards on this topic will be received.

        Subscriptions are counted: each call needs one `unsubscribe`. Raises BusUnavailable while the
        bus is away; a failed call is not counted (the caller retries or gives up). Topics counted
        when a connection drops are re-subscribed when it is back.
        """

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        """Drop one count; the topic stops being received after the last."""
