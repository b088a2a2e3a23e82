"""The HTTP API's publish step for channel events, with or without history."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from shared.apps.config import AppConfig
from shared.backend import Backend
from shared.bus.base import BusUnavailable, Envelope, GuardFailed, PublishGuard
from shared.history.base import HistoryPolicy, history_policy


def publish_channel_events(backend: Backend, app: AppConfig, envelopes: Sequence[Envelope],
                           guard: PublishGuard | None = None) -> Awaitable[None]:
    """Publish a request's events (one envelope per channel); await the result. With a `guard`, each
    publish is checked against it (`Bus.publish_many`).

    Apps without history take the bus's path unchanged (the bus's own awaitable is returned, so this
    step adds no coroutine of its own). Otherwise events of channels that keep history go through the
    history store, which gives each its position as it keeps and publishes it; the others still go
    straight to the bus. A failure raises BusUnavailable with how many of the envelopes were published
    before it (None: unknown).
    """
    if app.history_size <= 0:
        return backend.bus.publish_many(envelopes, guard)
    return _publish_with_history(backend, app, envelopes, guard)


async def _publish_with_history(backend: Backend, app: AppConfig, envelopes: Sequence[Envelope],
                                guard: PublishGuard | None) -> None:
    kept: list[tuple[Envelope, HistoryPolicy]] = []
    plain: list[Envelope] = []
    for envelope in envelopes:
        policy = history_policy(app, envelope.channel)
        if policy is None:
            plain.append(envelope)
        else:
            kept.append((envelope, policy))
    if plain:
        await backend.bus.publish_many(plain, guard)
    if kept:
        try:
            await backend.history.publish(kept, guard)
        except GuardFailed:
            if not plain:
                raise
            error = BusUnavailable("Redis restarted after the request's other channels were published")
            error.sent = len(plain)
            raise error from None
        except BusUnavailable as exc:
            if exc.sent is not None:
                exc.sent += len(plain)
            raise
