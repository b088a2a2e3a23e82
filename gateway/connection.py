"""Per-socket state, kept small: one instance per connected client."""

from __future__ import annotations

import secrets
from typing import Any

from gateway.outbound import Sink
from shared.config import AppConfig
from shared.state import Member

# Both halves random so ids are unique across the cluster without coordination, and not guessable.
SOCKET_ID_PART_MAX = 10**10


def new_socket_id() -> str:
    return f"{secrets.randbelow(SOCKET_ID_PART_MAX)}.{secrets.randbelow(SOCKET_ID_PART_MAX)}"


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
        # channel -> frames that arrived while the subscription was being confirmed
        self.held: dict[str, list[tuple[bytes, bytes | None]]] = {}
        self.last_seen = now
        self.opened_at = now
        # Signed in, or subscribed to a private/presence channel (apps may require it, section 2.11).
        self.authorized = False
        self.ping_sent_at: float | None = None
        self.client_event_window = 0.0
        self.client_event_count = 0
        self.user: Any = None  # gateway.users.SignedInUser once signed in
        self.closed = False

    def send(self, payload: bytes, wire: bytes | None = None) -> None:
        self.sink.send(payload, wire)

    def deliver(self, channel: str, payload: bytes, wire: bytes | None) -> None:
        """A channel event: held back while this socket's subscription to it is still pending."""
        held = self.held.get(channel)
        if held is not None:
            held.append((payload, wire))
        else:
            self.sink.send(payload, wire)

    def release(self, channel: str) -> None:
        for payload, wire in self.held.pop(channel, ()):
            self.sink.send(payload, wire)
