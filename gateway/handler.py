"""The Pusher protocol 7 state machine for one node: parsed client messages in, frames and state
changes out.

Sockets, the clock, the bus and the stores are injected (a `Sink` per connection, a `Backend`), so the
whole protocol is tested without a network. Nothing here raises to the caller for bad input: every
problem becomes a `pusher:error` or `pusher:subscription_error` and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from gateway.connection import Connection
from gateway.counts import SubscriptionCounts
from gateway.hub import Hub
from gateway.users import UserSessions
from shared import metrics, protocol, webhooks
from shared.backend import Backend
from shared.bus import BusUnavailable, Envelope
from shared.channels import SERVER_TO_USER_PREFIX, ChannelKind, channel_name_error, channel_type
from shared.config import AppConfig
from shared.signatures import auth_token_error, channel_string_to_sign
from shared.state import Member, user_key
from shared.webhooks import WebhookEvent, queue_webhooks

log = logging.getLogger("herald.gateway")

MAX_USER_ID_LENGTH = 128
CLIENT_EVENT_WINDOW_S = 1.0

Clock = Callable[[], float]


class ProtocolHandler:
    def __init__(self, backend: Backend, hub: Hub, clock: Clock = time.monotonic) -> None:
        self.backend = backend
        self.hub = hub
        self.clock = clock
        self.users = UserSessions(self)
        self.counts = SubscriptionCounts(self)
        # (app, channel) -> [lock, holders]; see transitions()
        self._transition_locks: dict[tuple[str, str], list[Any]] = {}

    # -- errors --------------------------------------------------------------------------------

    @staticmethod
    def error(conn: Connection, message: str, code: int | None) -> None:
        metrics.PROTOCOL_ERRORS.labels(str(code)).inc()
        conn.send(protocol.error(message, code))

    @staticmethod
    def subscription_error(conn: Connection, channel: str, type_: str, message: str, status: int) -> None:
        metrics.SUBSCRIPTIONS.labels(type_).inc()
        conn.send(protocol.subscription_error(channel, type_, message, status))

    # -- entry points --------------------------------------------------------------------------

    async def handle_text(self, conn: Connection, text: str | bytes) -> None:
        conn.last_seen = self.clock()
        conn.ping_sent_at = None
        metrics.MESSAGES_IN.inc()
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self.error(conn, "Invalid message format: not valid JSON", protocol.INVALID_MESSAGE)
        if not isinstance(msg, dict):
            return self.error(conn, "Invalid message format: expected a JSON object", protocol.INVALID_MESSAGE)
        name = msg.get("event")
        if not isinstance(name, str) or not name:
            return self.error(
                conn, "Invalid message format: 'event' must be a non-empty string", protocol.INVALID_MESSAGE
            )
        data = msg.get("data")
        if isinstance(data, str) and not name.startswith("client-"):
            # Older clients send data as a JSON-encoded string; accept both forms.
            try:
                data = orjson.loads(data) if data else {}
            except orjson.JSONDecodeError:
                return self.error(
                    conn, f"Invalid message format: 'data' of {name} is not valid JSON", protocol.INVALID_MESSAGE
                )
        try:
            if name == "pusher:ping":
                conn.send(protocol.PONG)
            elif name == "pusher:pong":
                pass
            elif name == "pusher:subscribe":
                await self.subscribe(conn, data)
            elif name == "pusher:unsubscribe":
                await self.unsubscribe_message(conn, data)
            elif name == "pusher:signin":
                await self.users.signin(conn, data)
            elif name.startswith("client-"):
                await self.client_event(conn, msg)
            else:
                self.error(conn, f"Unsupported event: {name[:64]}", protocol.INVALID_MESSAGE)
        except BusUnavailable:  # also StoreUnavailable
            self.error(conn, "Service temporarily unavailable; try again", protocol.RECONNECT)
        except Exception:
            log.exception("error handling %s from %s", name[:64], conn.socket_id)
            self.error(conn, "Internal server error", protocol.RECONNECT)

    def handle_binary(self, conn: Connection) -> None:
        conn.last_seen = self.clock()
        conn.ping_sent_at = None
        self.error(conn, "Binary frames are not supported; send JSON text frames", protocol.INVALID_MESSAGE)

    async def handle_close(self, conn: Connection) -> None:
        """The socket is gone: leave every channel as if unsubscribed."""
        conn.closed = True
        for channel in list(conn.channels):
            try:
                await self.leave(conn, channel)
            except Exception:
                # Redis trouble: the node's lease and the reaper correct the shared state later.
                log.warning("leave of %s failed on close", channel, exc_info=True)
        try:
            await self.users.close(conn)
        except Exception:
            log.warning("sign-out of %s failed on close", conn.socket_id, exc_info=True)

    # -- subscriptions -------------------------------------------------------------------------

    async def subscribe(self, conn: Connection, data: Any) -> None:
        if not isinstance(data, dict):
            return self.error(conn, "pusher:subscribe requires a data object", protocol.INVALID_MESSAGE)
        channel = data.get("channel")
        if not isinstance(channel, str) or not channel:
            return self.error(
                conn, "pusher:subscribe requires data.channel (a non-empty string)", protocol.INVALID_MESSAGE
            )
        app = conn.app
        problem = channel_name_error(channel, app.max_channel_name_length)
        if problem:
            kind = "LimitReached" if len(channel) > app.max_channel_name_length else "InvalidChannel"
            return self.subscription_error(conn, channel, kind, f"Invalid channel '{channel[:64]}': {problem}",
                                           4009 if kind == "LimitReached" else 400)
        ctype = channel_type(channel)
        if ctype.kind is ChannelKind.SERVER_TO_USER:
            # pusher-js subscribes to its own user's channel after sign-in; the socket already
            # receives it (it joined the topic when it signed in), so this only confirms.
            if conn.user is not None and channel == SERVER_TO_USER_PREFIX + conn.user.id:
                conn.send(protocol.subscription_succeeded(channel))
                return None
            return self.subscription_error(
                conn, channel, "AuthError", "Sign in as this user before subscribing to its channel", 401
            )
        channel_data = data.get("channel_data")
        if channel_data is not None and not isinstance(channel_data, str):
            return self.subscription_error(
                conn, channel, "AuthError", "channel_data must be a JSON-encoded string", 401
            )
        if ctype.needs_auth:
            problem = auth_token_error(
                data.get("auth"), app.key, app.secret,
                channel_string_to_sign(conn.socket_id, channel, channel_data),
            )
            if problem:
                return self.subscription_error(
                    conn, channel, "AuthError", f"Subscription to {channel} refused: {problem}", 401
                )
        member: Member | None = None
        if ctype.is_presence:
            member_or_error = self.parse_member(conn, channel_data)
            if isinstance(member_or_error, tuple):
                return self.subscription_error(conn, channel, *member_or_error)
            member = member_or_error
        if channel in conn.channels:
            # Idempotent: confirm again without a second membership (and no member_added).
            return await self.confirm_again(conn, channel)
        if channel in conn.held:
            return  # already being subscribed; that subscription's confirmation will come
        await self.join(conn, channel, member)

    def parse_member(self, conn: Connection, channel_data: str | None) -> Member | tuple[str, str, int]:
        if channel_data is None:
            if conn.user is not None:
                # Section 2.11: a signed-in socket may omit channel_data; it joins as its user.
                return Member(conn.user.id, conn.user.info)
            return ("AuthError", "Presence channels require channel_data with a user_id (or sign in first)", 401)
        try:
            parsed = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            return ("AuthError", "channel_data is not valid JSON", 401)
        if not isinstance(parsed, dict) or "user_id" not in parsed:
            return ("AuthError", "channel_data must be a JSON object with a user_id", 401)
        user_id = parsed["user_id"]
        if isinstance(user_id, bool) or not isinstance(user_id, str | int | float) or user_id == "":
            return ("AuthError", "user_id must be a non-empty string or a number", 401)
        if len(user_key(user_id)) > MAX_USER_ID_LENGTH:
            return ("LimitReached", f"user_id is longer than {MAX_USER_ID_LENGTH} characters", 413)
        info = parsed.get("user_info")
        limit = conn.app.max_presence_member_bytes
        if info is not None and len(orjson.dumps(info)) > limit:
            return ("LimitReached", f"user_info is larger than {limit} bytes", 413)
        return Member(user_id, info)

    async def join(self, conn: Connection, channel: str, member: Member | None) -> None:
        app_id = conn.app.id
        joined_hub = False
        result = None
        try:
            await self.hub.join(conn, channel)
            joined_hub = True
            roster = "{}"
            async with self.transitions(conn.app, channel):
                if member is not None:
                    result = await self.backend.presence.join(
                        app_id, channel, conn.socket_id, member, conn.app.max_presence_members_per_channel
                    )
                    if not result.accepted:
                        await self.hub.leave(conn, channel)
                        limit = conn.app.max_presence_members_per_channel
                        return self.subscription_error(
                            conn, channel, "LimitReached", f"Presence channel is full ({limit} members)", 4100
                        )
                    roster = protocol.presence_roster([(m.user_id, m.user_info) for m in result.members])
                count = await self.backend.occupancy.add(app_id, channel, conn.socket_id)
                events = []
                if count == 1:
                    events.append(WebhookEvent(webhooks.CHANNEL_OCCUPIED, channel))
                if member is not None and result is not None and result.added:
                    events.append(WebhookEvent(webhooks.MEMBER_ADDED, channel, user_id=member.user_id))
                await self.webhook(conn.app, events)
        except Exception:
            if joined_hub:
                await self.hub.leave(conn, channel)
            if member is not None and result is not None and result.accepted:
                # The presence join counted this socket; undo it or the user stays in the roster.
                # Silently: member_added was not published yet, so there is nothing to retract.
                try:
                    await self.backend.presence.leave(app_id, channel, conn.socket_id, member)
                except Exception:
                    log.warning("presence leave of %s failed after a failed subscription", channel,
                                exc_info=True)
            log.warning("subscription to %s failed", channel, exc_info=True)
            return self.subscription_error(
                conn, channel, "ServerError", "Subscription failed on the server; try again", 500
            )
        conn.channels[channel] = member
        if conn.closed:
            # The socket went away while we waited; undo what handle_close could not see.
            await self.leave(conn, channel)
            return
        metrics.SUBSCRIPTIONS.labels("ok").inc()
        app = conn.app
        ctype = channel_type(channel)
        if ctype.needs_auth:
            conn.authorized = True
        conn.send(protocol.subscription_succeeded(channel, roster))
        if ctype.cache:
            await self.replay_cache(conn, channel)
        conn.release(channel)
        if member is not None and result is not None and result.added:
            await self.publish_internal(
                app.id, channel, "pusher_internal:member_added",
                protocol.member_added_data(member.user_id, member.user_info), exclude=conn.socket_id,
            )
        await self.counts.changed(app, channel, count)

    async def replay_cache(self, conn: Connection, channel: str) -> None:
        """Cache channels (section 2.8): the last event, or pusher:cache_miss, right after success."""
        try:
            cached = await self.backend.cache.get(conn.app.id, channel)
        except Exception:
            log.warning("cache read for %s failed", channel, exc_info=True)
            return
        if cached is not None:
            conn.send(protocol.event(cached.event, cached.data, channel))
            return
        conn.send(protocol.event("pusher:cache_miss", None, channel))
        await self.webhook(conn.app, [WebhookEvent(webhooks.CACHE_MISS, channel)])

    async def webhook(self, app: AppConfig, events: list[WebhookEvent]) -> None:
        await queue_webhooks(self.backend.webhooks, app, events)

    async def confirm_again(self, conn: Connection, channel: str) -> None:
        if conn.channels.get(channel) is not None:
            members = await self.backend.presence.members(conn.app.id, channel)
            roster = protocol.presence_roster([(m.user_id, m.user_info) for m in members])
            conn.send(protocol.subscription_succeeded(channel, roster))
        else:
            conn.send(protocol.subscription_succeeded(channel))

    async def unsubscribe_message(self, conn: Connection, data: Any) -> None:
        channel = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(channel, str):
            return self.error(
                conn, "pusher:unsubscribe requires data.channel (a string)", protocol.INVALID_MESSAGE
            )
        if channel in conn.channels:
            await self.leave(conn, channel)

    async def leave(self, conn: Connection, channel: str) -> None:
        if channel not in conn.channels:
            return
        member = conn.channels.pop(channel)
        app_id = conn.app.id
        await self.hub.leave(conn, channel)
        failure: Exception | None = None
        count: int | None = None
        removed = False
        async with self.transitions(conn.app, channel):
            try:
                count = await self.backend.occupancy.remove(app_id, channel, conn.socket_id)
            except Exception as exc:
                # Keep going: the presence store must still record the leave (it repairs after outages).
                failure = exc
            events = []
            if count == 0:
                events.append(WebhookEvent(webhooks.CHANNEL_VACATED, channel))
            if member is not None:
                removed = await self.backend.presence.leave(app_id, channel, conn.socket_id, member)
                if removed:
                    events.append(WebhookEvent(webhooks.MEMBER_REMOVED, channel, user_id=member.user_id))
            await self.webhook(conn.app, events)
        if member is not None and removed:
            await self.publish_internal(
                app_id, channel, "pusher_internal:member_removed", protocol.member_removed_data(member.user_id)
            )
        if count is not None:
            await self.counts.changed(conn.app, channel, count)
        if failure is not None:
            raise failure

    @contextlib.asynccontextmanager
    async def transitions(self, app: AppConfig, channel: str) -> AsyncIterator[None]:
        """Serialise a channel's transitions with their webhook enqueues on this node, so the queue sees
        vacate-then-occupy in the order Redis decided them and can apply the 3 s cancel rule (7.4).
        Only apps with webhooks pay for it; without, transitions run concurrently."""
        if not app.webhooks:
            yield
            return
        key = (app.id, channel)
        entry = self._transition_locks.get(key)
        if entry is None:
            entry = self._transition_locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._transition_locks[key]

    async def publish_internal(
        self, app_id: str, channel: str, event: str, data: str, exclude: str | None = None
    ) -> None:
        await self.backend.bus.publish(
            Envelope(app_id, channel, event, data, exclude=exclude, origin=self.backend.node_id, ts=time.time())
        )

    # -- client events -------------------------------------------------------------------------

    async def client_event(self, conn: Connection, msg: dict[str, Any]) -> None:
        app = conn.app
        name: str = msg["event"]
        channel = msg.get("channel")
        code = protocol.CLIENT_EVENT_REJECTED
        if not app.enable_client_messages:
            return self.error(conn, "Client events are not enabled for this app", code)
        if not isinstance(channel, str) or not channel:
            return self.error(conn, f"Client event {name[:64]} needs a 'channel'", code)
        if not channel_type(channel).allows_client_events:
            return self.error(
                conn, f"Client events are only allowed on private and presence channels, not {channel[:64]}",
                code,
            )
        if channel not in conn.channels:
            return self.error(
                conn, f"Cannot send client event: connection not subscribed to channel {channel[:64]}", code
            )
        if len(name) > app.max_event_name_length:
            return self.error(conn, f"Client event name longer than {app.max_event_name_length}", code)
        data = msg.get("data")
        size = len(data.encode()) if isinstance(data, str) else len(orjson.dumps(data))
        if size > app.max_event_payload_bytes:
            return self.error(conn, f"Client event data larger than {app.max_event_payload_bytes} bytes", code)
        now = self.clock()
        if now - conn.client_event_window >= CLIENT_EVENT_WINDOW_S:
            conn.client_event_window = now
            conn.client_event_count = 0
        conn.client_event_count += 1
        if 0 <= app.max_client_events_per_sec < conn.client_event_count:
            return self.error(conn, "Client event rejected due to rate limit", code)
        member = conn.channels[channel]
        metrics.CLIENT_EVENTS.inc()
        user_id = member.user_id if member is not None else None
        await self.backend.bus.publish(
            Envelope(
                app.id, channel, name, data, exclude=conn.socket_id, user_id=user_id,
                origin=self.backend.node_id, ts=time.time(),
            )
        )
        await self.webhook(app, [WebhookEvent(webhooks.CLIENT_EVENT, channel, user_id=user_id, event=name,
                                              data=data, socket_id=conn.socket_id)])
