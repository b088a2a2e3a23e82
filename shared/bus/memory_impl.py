"""In-process bus: defines the bus semantics for one process (embedded mode and tests)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.bus.base import Bus, BusUnavailable, Envelope, PublishGuard, Receiver


class MemoryBus:
    """See `Bus`. Delivery is a synchronous call to the receivers, so it keeps publish order."""

    def __init__(self) -> None:
        self._receivers: list[Receiver] = []
        self._topics: dict[tuple[str, str], int] = {}

    def set_receiver(self, receiver: Receiver) -> None:
        self._receivers.append(receiver)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._topics.clear()

    async def publish(self, envelope: Envelope) -> None:
        # Synchronous hand-off keeps per-channel publish order without a queue.
        if (envelope.app_id, envelope.channel) in self._topics:
            for receiver in self._receivers:
                receiver(envelope)

    async def publish_many(self, envelopes: Sequence[Envelope], guard: PublishGuard | None = None) -> None:
        for sent, envelope in enumerate(envelopes):
            try:
                await self.publish(envelope)
            except BusUnavailable as exc:
                exc.sent = sent
                raise

    async def subscribe(self, app_id: str, channel: str) -> None:
        key = (app_id, channel)
        self._topics[key] = self._topics.get(key, 0) + 1

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        key = (app_id, channel)
        left = self._topics.get(key, 0) - 1
        if left > 0:
            self._topics[key] = left
        else:
            self._topics.pop(key, None)


def _conforms(bus: MemoryBus) -> Bus:
    return bus  # checked by mypy: MemoryBus implements Bus
