"""The bus: how an event published anywhere reaches the gateways whose sockets are in its channel.

Delivery guarantee (both implementations): at most once, in publish order per channel and publisher,
to every node that had completed `subscribe()` for the channel before the message was published.
A gateway subscribes a channel when its first local socket joins and unsubscribes after the last
leaves, so a node only receives traffic for channels it serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from shared import protocol


class BusUnavailable(Exception):
    """The bus cannot publish right now (for example Redis is down); the event was not sent.

    From `publish_many`, `sent` says how many envelopes went out before the failure (None: unknown).
    """

    sent: int | None = 0


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

    def pack(self) -> bytes:
        return msgpack.packb(
            (self.app_id, self.channel, self.event, self.data, self.exclude, self.user_id, self.origin,
             self.ts),
            use_bin_type=True,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Envelope:
        fields = msgpack.unpackb(raw, raw=False, use_list=True)
        return cls(*fields)


def watch_status_envelope(app_id: str, user_id: str, online: bool, origin: str) -> Envelope:
    """A user's online/offline change, for the sockets watching it (on the `#watch-{user}` topic)."""
    data = protocol.watchlist_events([user_id], []) if online else protocol.watchlist_events([], [user_id])
    return Envelope(app_id, protocol.WATCH_PREFIX + user_id, protocol.WATCHLIST_EVENT, data, origin=origin,
                    ts=time.time())


Receiver = Callable[[Envelope], None]


class Bus(Protocol):
    """Pub/sub of envelopes by (app_id, channel) topic."""

    def set_receiver(self, receiver: Receiver) -> None:
        """The single callback that gets every envelope for a subscribed topic, in order."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, envelope: Envelope) -> None:
        """Send to every node subscribed to the envelope's channel; raises BusUnavailable."""

    async def publish_many(self, envelopes: Sequence[Envelope]) -> None:
        """Publish in order, in one round trip where the bus allows; BusUnavailable carries `sent`."""

    async def subscribe(self, app_id: str, channel: str) -> None:
        """Returns once envelopes published afterwards on this topic will be received."""

    async def unsubscribe(self, app_id: str, channel: str) -> None: ...
