"""Per-socket state, kept small: one instance per connected client."""

from __future__ import annotations

from gateway.frames import frame_size
from gateway.outbound import Sink
from shared import metrics
from shared.apps.config import AppConfig
from shared.history.base import offset_of
from shared.protocol import messages
from shared.protocol.users import SignedInUser
from shared.state.base import Member

_MESSAGES_OUT = metrics.MESSAGES_OUT.values
_BYTES_OUT = metrics.BYTES_OUT.values


class Connection:
    __slots__ = (
        "app",
        "authorized",
        "channels",
        "client_event_count",
        "client_event_window",
        "closed",
        "held",
        "last_seen",
        "opened_at",
        "ping_sent_at",
        "recover_at",
        "recover_budget",
        "sink",
        "socket_id",
        "user",
    )

    def __init__(self, socket_id: str, app: AppConfig, sink: Sink, now: float) -> None:
        self.socket_id = socket_id
        self.app = app
        self.sink = sink
        # channel -> presence member (None on non-presence channels)
        self.channels: dict[str, Member | None] = {}
        # channel -> frames (with their history positions) that arrived while the subscription was being
        # confirmed, or while a recovery of the channel was being read
        self.held: dict[str, list[tuple[bytes, bytes | None, str | None]]] = {}
        self.last_seen = now
        self.opened_at = now
        # Signed in, or subscribed to a private/presence channel (apps may require it: docs/protocol.md,
        # "Authorized connections").
        self.authorized = False
        self.ping_sent_at: float | None = None
        self.client_event_window = 0.0
        self.client_event_count = 0
        self.user: SignedInUser | None = None
        self.closed = False
        # herald:recover budget (gateway/recovery.py), refilled from recover_at.
        self.recover_budget = 0.0
        self.recover_at = float("-inf")

    def send(self, payload: bytes, wire: bytes | None = None) -> None:
        """A frame for this socket alone (broadcasts go through `deliver` and are counted by the hub)."""
        messages_out = _MESSAGES_OUT
        key = (self.app.id,)
        messages_out[key] = messages_out.get(key, 0) + 1
        _BYTES_OUT[()] += len(wire) if wire is not None else frame_size(len(payload))
        self.sink.send(payload, wire)

    def error(self, message: str, code: int | None) -> None:
        """A `pusher:error`; the connection stays open."""
        metrics.PROTOCOL_ERRORS.labels(str(code)).inc()
        self.send(messages.error(message, code))

    def subscription_error(self, channel: str, type_: str, message: str, status: int) -> None:
        """A `pusher:subscription_error` on the channel; the socket is not subscribed and stays open."""
        metrics.SUBSCRIPTIONS.labels(type_).inc()
        self.send(messages.subscription_error(channel, type_, message, status))

    def deliver(self, channel: str, payload: bytes, wire: bytes | None, position: str | None = None) -> None:
        """A channel event: held back while this socket's subscription to it is still pending."""
        held = self.held.get(channel)
        if held is not None:
            held.append((payload, wire, position))
        else:
            self.sink.send(payload, wire)

    def release(self, channel: str, through: str | None = None) -> None:
        """Send the held frames, except those at or before the position `through` (already replayed)."""
        held = self.held.pop(channel, ())
        if through is None:
            for payload, wire, _ in held:
                self.sink.send(payload, wire)
            return
        epoch = through[: through.rindex("-") + 1]
        last = offset_of(through)
        for payload, wire, position in held:
            if position is None or not position.startswith(epoch) or offset_of(position) > last:
                self.sink.send(payload, wire)
