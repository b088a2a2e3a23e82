"""The pub/sub subscriber's protocol without I/O: bytes from Redis go in, messages come out through a
callback, other replies come out as events, and every method that changes the subscriptions returns
the bytes to send. `shared.bus.redis_impl` moves the bytes; tests feed bytes directly.

RESP2, one connection: (S)SUBSCRIBE/(S)UNSUBSCRIBE replies and the replies to other commands (AUTH,
PING) come back in the order the commands were sent, so each reply is matched to the oldest command
still waiting for one. Messages are pushes, matched to nothing.

Hand-written for speed (replies parsed by hiredis): a message costs one type check, one comparison and
the callback (`loadtest/fanout.py` measures the whole path).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis

# What a sent command waits for: a subscription confirmation, an unsubscription confirmation, or the
# reply to a plain command.
_SUB, _UNSUB, _COMMAND = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Redis confirmed the subscription to `topic`."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class SubscribeRefused:
    """Redis answered the subscription to `topic` with an error (an ACL refusing the channel, a
    cluster node that does not own its slot)."""

    topic: bytes
    error: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """Redis ended a subscription nobody asked to end (a Redis Cluster slot moved to another node)."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """The reply to a plain command (`command` is its name); `error` when Redis refused it."""

    command: bytes
    value: Any
    error: str | None = None


Event = Subscribed | SubscribeRefused | Dropped | Reply


def encode_command(*parts: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class SubscriberState:
    """The topics this connection wants and the replies it waits for.

    `topics` outlives connections: `connection_made` starts a new one and returns the bytes that
    authenticate and re-subscribe every wanted topic.
    """

    def __init__(self, sharded: bool, on_message: Callable[[bytes], None]) -> None:
        self.sharded = sharded
        self.on_message = on_message
        self.topics: set[bytes] = set()
        self.events: list[Event] = []
        self._reader = hiredis.Reader()
        # Per command sent and not fully answered: what it waits for, and the topics (or the command's
        # name) still unanswered. (S)SUBSCRIBE a b answers once per topic, or once with an error.
        self._waiting: deque[tuple[int, list[bytes]]] = deque()
        self._sub = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsub = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self._message = b"smessage" if sharded else b"message"
        self._sub_ack = b"ssubscribe" if sharded else b"subscribe"
        self._unsub_ack = b"sunsubscribe" if sharded else b"unsubscribe"

    # -- what to send ------------------------------------------------------------------------------

    def connection_made(self, username: str | None = None, password: str | None = None) -> bytes:
        """A new connection: forget the old one's partial replies; AUTH, then subscribe every topic."""
        self._reader = hiredis.Reader()
        self._waiting.clear()
        self.events.clear()
        out = []
        if password:
            out.append(self._command(b"AUTH", *([username, password] if username else [password])))
        topics = sorted(self.topics)
        if self.sharded:
            # SSUBSCRIBE takes several channels only within one slot; one command each is always valid.
            out += [self._subscribe([t]) for t in topics]
        elif topics:
            out.append(self._subscribe(topics))
        return b"".join(out)

    def subscribe(self, topic: bytes) -> bytes:
        self.topics.add(topic)
        return self._subscribe([topic])

    def unsubscribe(self, topic: bytes) -> bytes:
        """Bytes to send, or b"" when `topic` was not wanted."""
        if topic not in self.topics:
            return b""
        self.topics.discard(topic)
        self._waiting.append((_UNSUB, [topic]))
        return encode_command(self._unsub, topic)

    def ping(self) -> bytes:
        return self._command(b"PING")

    def _command(self, name: bytes, *args: bytes | str) -> bytes:
        self._waiting.append((_COMMAND, [name]))
        return encode_command(name, *args)

    def _subscribe(self, topics: list[bytes]) -> bytes:
        self._waiting.append((_SUB, list(topics)))
        return encode_command(self._sub, *topics)

    # -- what was received ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> bool:
        """Parse `data`; messages go to `on_message` at once. True when `events` has new entries."""
        reader = self._reader
        reader.feed(data)
        message = self._message
        on_message = self.on_message
        found = False
        while True:
            reply = reader.gets()
            if reply is False:
                return found
            if type(reply) is list and reply[0] == message:
                on_message(reply[2])
            else:
                self._control(reply)
                found = True

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def _answered(self, expects: int) -> list[bytes] | None:
        """The oldest waiting command if it waits for `expects`; one of its topics is now answered."""
        waiting = self._waiting
        if not waiting or waiting[0][0] != expects:
            return None
        names = waiting[0][1]
        if len(names) <= 1:
            waiting.popleft()
        else:
            names.pop(0)
        return names

    def _control(self, reply: Any) -> None:
        if type(reply) is list and reply:
            kind = reply[0]
            if kind == self._sub_ack:
                self._answered(_SUB)
                self.events.append(Subscribed(reply[1]))
                return
            if kind == self._unsub_ack:
                if self._answered(_UNSUB) is None and reply[1] in self.topics:
                    # Not an answer to our UNSUBSCRIBE: the server ended it (Redis Cluster resharding).
                    self.topics.discard(reply[1])
                    self.events.append(Dropped(reply[1]))
                return
            if kind == b"pong":  # PING inside a subscribed session answers ["pong", ""]
                reply = b"PONG"
        error = str(reply) if isinstance(reply, hiredis.ReplyError) else None
        if not self._waiting:
            if error is not None:
                self.events.append(Reply(b"", None, error))
            return
        expects, names = self._waiting.popleft()
        if expects == _SUB:
            # An error answers the whole (S)SUBSCRIBE: none of its topics is subscribed.
            for topic in names:
                self.topics.discard(topic)
                self.events.append(SubscribeRefused(topic, error or f"unexpected reply {reply!r}"))
        elif expects == _COMMAND:
            self.events.append(Reply(names[0], None if error else reply, error))
        # _UNSUB answered with an error: nothing was subscribed, nothing to do.
