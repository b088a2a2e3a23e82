"""Channel history (docs/history.md): positions, which channels keep history, and the store interface.

Every event the HTTP API publishes to a channel that keeps history gets a *position*
`"<epoch>-<offset>"`: `offset` counts the channel's events (1, 2, 3, ...) and `epoch` names the run of
the channel's history they belong to. A history that disappears (its TTL ran out, Redis restarted
without persistence) comes back under a new random epoch, so a position from before can never be
mistaken for one after. The position is assigned in the same atomic step that keeps the event and
publishes it on the bus, so positions follow the bus's order on every gateway.

In Redis the history of a channel is a stream whose entry ids are the positions themselves (the epoch
is the id's milliseconds part, the offset its sequence part), capped at the app's `history_size` and
expiring `history_ttl_s` after the channel's last event.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.bus.base import Envelope, PublishGuard
from shared.protocol.channels import channel_type

if TYPE_CHECKING:
    from shared.apps.config import AppConfig

# Upper bound of an app's `history_size` (events kept per channel).
MAX_HISTORY_SIZE = 100_000
# Epochs are random 48-bit numbers: unique enough per channel, and exact as JavaScript numbers too.
EPOCH_BITS = 48

_POSITION_RE = re.compile(r"([1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")  # used with fullmatch


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How a channel keeps its history: the last `size` events, until `ttl_s` after the last one."""

    size: int
    ttl_s: int


def history_policy(app: AppConfig, channel: str) -> HistoryPolicy | None:
    """The channel's history policy, or None when it keeps no history.

    Only channels the HTTP API publishes to can keep history: never the internal `#` topics. Cache
    channels keep their own last-event behaviour instead (docs/history.md, "Which channels").
    """
    if app.history_size <= 0 or channel.startswith("#") or channel_type(channel).cache:
        return None
    prefixes = app.history_channel_prefixes
    if prefixes and not channel.startswith(prefixes):
        return None
    return HistoryPolicy(app.history_size, app.history_ttl_s)


def new_epoch() -> str:
    return str(secrets.randbits(EPOCH_BITS) or 1)


def format_position(epoch: str, offset: int) -> str:
    return f"{epoch}-{offset}"


def parse_position(value: object) -> tuple[str, int] | None:
    """(epoch, offset) of a well-formed position string, else None."""
    if not isinstance(value, str):
        return None
    match = _POSITION_RE.fullmatch(value)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def offset_of(position: str) -> int:
    """The offset of a position Herald made (no validation)."""
    return int(position[position.rindex("-") + 1:])


@dataclass(slots=True)
class HistoryRead:
    """What a history read found.

    `head` is the channel's latest position (None: the channel has no history now). `events` are in
    order, each with its position. `continuous` is True when they start right after the position the
    read asked for: same epoch, nothing trimmed in between.
    """

    head: str | None
    events: list[Envelope] = field(default_factory=list)
    continuous: bool = False

    @property
    def complete(self) -> bool:
        """The events reach the head: nothing after them was left for a later read."""
        if self.head is None:
            return True
        if not self.events:
            return self.continuous
        return self.events[-1].position == self.head


class HistoryStore(Protocol):
    async def publish(self, items: Sequence[tuple[Envelope, HistoryPolicy]], guard: PublishGuard | None = None) -> None:
        """For each envelope in order: give it the next position of its channel, keep it in the
        channel's history (trimmed to the policy's size, expiring after its TTL) and publish it on the
        bus, all three as one atomic step. Raises BusUnavailable (with `sent`) like `Bus.publish_many`,
        and GuardFailed like it when the `guard` doesn't hold.
        """

    async def head(self, app_id: str, channel: str, policy: HistoryPolicy) -> str:
        """The channel's latest position; a channel without history gets an empty one under a new
        epoch (position `<epoch>-0`), so a subscriber has a position to recover from even before the
        channel's first event. Raises StoreUnavailable."""

    async def read(self, app_id: str, channel: str, since: str, limit: int) -> HistoryRead:
        """Up to `limit` events after the well-formed position `since`. Raises StoreUnavailable."""

    async def latest(self, app_id: str, channel: str, limit: int) -> HistoryRead:
        """The last `limit` events kept (`continuous` is False). Raises StoreUnavailable."""
