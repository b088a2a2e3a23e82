"""The Pusher protocol 7 state machine for one node: parsed client messages in, frames and state
changes out (docs/architecture.md, "The path of a subscribe").

Sockets, the clock, the bus and the stores are injected (a `Sink` per connection, a `Backend`), so the
whole protocol is tested without a network. Nothing here raises to the caller for bad input: every
problem becomes a `pusher:error` or `pusher:subscription_error` and the connection stays open.
What each transition means for clients and webhooks is decided in `shared.transitions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.connection import Connection
from gateway.counts import SubscriptionCounts
from gateway.hub import Hub
from gateway.recovery import Recovery
from gateway.users import UserSessions
from shared import metrics, transitions
from shared.apps.config import AppConfig
from shared.backend import Backend
from shared.bus.base import BusUnavailable, Envelope
from shared.clock import Clock
from shared.history.base import history_policy
from shared.protocol import codes, events, messages
from shared.protocol.channels import ChannelKind, channel_name_error, channel_type, server_to_user_channel
from shared.protocol.signatures import auth_token_error, channel_string_to_sign
from shared.protocol.users import MAX_USER_ID_LENGTH, loads_exact, user_key
from shared.state.base import Member, MemberChange, Occupancy, PresenceJoin
from shared.webhooks.base import WebhookEvent, queue_webhooks

log = logging.getLogger("herald.gateway")

CLIENT_EVENT_WINDOW_S = 1.0
# The subscription_error status of a subscribe beyond the app's max_channels_per_connection.
TOO_MANY_CHANNELS_STATUS = 429
# A presence subscription made while the cluster re-syncs after a Redis restart waits this long for it:
# the roster would otherwise lack members other nodes have not written back yet.
PRESENCE_RESYNC_WAIT_S = 5.0


def count_message_in(conn: Connection) -> None:
    messages_in = metrics.MESSAGES_IN.values
    key = (conn.app.id,)
    messages_in[key] = messages_in.get(key, 0) + 1


class ProtocolHandler:
    def __init__(self, backend: Backend, hub: Hub, clock: Clock = time.monotonic) -> None:
        self.backend = backend
        self.hub = hub
        self.clock = clock  # monotonic seconds
        self.users = UserSessions(backend, hub)
        self.counts = SubscriptionCounts(backend, clock)
        self.recovery = Recovery(backend, hub.replay, clock)
        # (app, channel) -> [lock, holders]; see serialised()
        self._transition_locks: dict[tuple[str, str], list[Any]] = {}
        backend.node.add_resynced_listener(self.refresh_presence)

    # -- entry points --------------------------------------------------------------------------

    async def handle_text(self, conn: Connection, text: str | bytes) -> None:
        conn.last_seen = self.clock()
        conn.ping_sent_at = None
        count_message_in(conn)
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return conn.error("Invalid message format: not valid JSON", codes.INVALID_MESSAGE)
        if not isinstance(msg, dict):
            return conn.error("Invalid message format: expected a JSON object", codes.INVALID_MESSAGE)
        name = msg.get("event")
        if not isinstance(name, str) or not name:
            return conn.error("Invalid message format: 'event' must be a non-empty string", codes.INVALID_MESSAGE)
        data = msg.get("data")
        if isinstance(data, str) and not name.startswith(events.CLIENT_EVENT_PREFIX):
            # Older clients send data as a JSON-encoded string; accept both forms.
            try:
                data = orjson.loads(data) if data else {}
            except orjson.JSONDecodeError:
                return conn.error(f"Invalid message format: 'data' of {name} is not valid JSON", codes.INVALID_MESSAGE)
        try:
            if name == events.PING:
                conn.send(messages.PONG)
            elif name == events.PONG:
                pass
            elif name == events.SUBSCRIBE:
                await self.subscribe(conn, data)
            elif name == events.UNSUBSCRIBE:
                await self.unsubscribe_message(conn, data)
            elif name == events.SIGNIN:
                await self.users.signin(conn, data)
            elif name.startswith(events.CLIENT_EVENT_PREFIX):
                await self.client_event(conn, msg)
            elif name == events.RECOVER:
                await self.recovery.handle(conn, msg, data)
            else:
                conn.error(f"Unsupported event: {name[:64]}", codes.INVALID_MESSAGE)
        except BusUnavailable:  # also StoreUnavailable
            conn.error("Service temporarily unavailable; try again", codes.RECONNECT)
        except Exception:
            log.exception("error handling %s from %s", name[:64], conn.socket_id)
            conn.error("Internal server error", codes.RECONNECT)

    def handle_binary(self, conn: Connection) -> None:
        count_message_in(conn)
        conn.last_seen = self.clock()
        conn.ping_sent_at = None
        conn.error("Binary frames are not supported; send JSON text frames", codes.INVALID_MESSAGE)

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
            return conn.error("pusher:subscribe requires a data object", codes.INVALID_MESSAGE)
        channel = data.get("channel")
        if not isinstance(channel, str) or not channel:
            return conn.error("pusher:subscribe requires data.channel (a non-empty string)", codes.INVALID_MESSAGE)
        app = conn.app
        problem = channel_name_error(channel, app.max_channel_name_length)
        if problem:
            kind = "LimitReached" if len(channel) > app.max_channel_name_length else "InvalidChannel"
            return conn.subscription_error(channel, kind, f"Invalid channel '{channel[:64]}': {problem}",
                                           4009 if kind == "LimitReached" else 400)
        ctype = channel_type(channel)
        if ctype.kind is ChannelKind.SERVER_TO_USER:
            # pusher-js subscribes to its own user's channel after sign-in; the socket already
            # receives it (it joined the topic when it signed in), so this only confirms.
            if conn.user is not None and channel == server_to_user_channel(conn.user.id):
                conn.send(messages.subscription_succeeded(channel))
                return None
            return conn.subscription_error(
                channel, "AuthError", "Sign in as this user before subscribing to its channel", 401
            )
        limit = app.max_channels_per_connection
        if 0 <= limit <= self.subscription_count(conn) and channel not in conn.channels and channel not in conn.held:
            return conn.subscription_error(
                channel, "LimitReached",
                f"This connection is subscribed to {limit} channels, the most allowed; unsubscribe from one first",
                TOO_MANY_CHANNELS_STATUS,
            )
        channel_data = data.get("channel_data")
        if channel_data is not None and not isinstance(channel_data, str):
            return conn.subscription_error(channel, "AuthError", "channel_data must be a JSON-encoded string", 401)
        if ctype.needs_auth:
            problem = auth_token_error(
                data.get("auth"), app.key, app.secret,
                channel_string_to_sign(conn.socket_id, channel, channel_data),
            )
            if problem:
                return conn.subscription_error(
                    channel, "AuthError", f"Subscription to {channel} refused: {problem}", 401
                )
        member: Member | None = None
        if ctype.is_presence:
            member_or_error = self.parse_member(conn, channel_data)
            if isinstance(member_or_error, tuple):
                return conn.subscription_error(channel, *member_or_error)
            member = member_or_error
        if channel in conn.channels:
            # Idempotent: confirm again without a second membership (and no member_added).
            return await self.confirm_again(conn, channel)
        if channel in conn.held:
            return  # already being subscribed; that subscription's confirmation will come
        await self.join(conn, channel, member)

    @staticmethod
    def subscription_count(conn: Connection) -> int:
        """Channels the connection is subscribed to or being subscribed to."""
        return len(conn.channels) + sum(1 for c in conn.held if c not in conn.channels)

    def parse_member(self, conn: Connection, channel_data: str | None) -> Member | tuple[str, str, int]:
        if channel_data is None:
            if conn.user is not None:
                # A signed-in socket may omit channel_data; it joins as its user (docs/protocol.md,
                # "Presence members").
                return Member(conn.user.id, conn.user.info)
            return ("AuthError", "Presence channels require channel_data with a user_id (or sign in first)", 401)
        try:
            parsed = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            return ("AuthError", "channel_data is not valid JSON", 401)
        if not isinstance(parsed, dict) or "user_id" not in parsed:
            return ("AuthError", "channel_data must be a JSON object with a user_id", 401)
        user_id = parsed["user_id"]
        if isinstance(user_id, float):
            # An integer beyond 64 bits reads as a float: keep its exact text (2**70 and 2**70 + 1 are
            # two users).
            parsed = loads_exact(channel_data)
            user_id = parsed["user_id"]
        if isinstance(user_id, bool) or not isinstance(user_id, str | int | float | orjson.Fragment) \
                or user_id == "":
            return ("AuthError", "user_id must be a non-empty string or a number", 401)
        if len(user_key(user_id)) > MAX_USER_ID_LENGTH:
            return ("LimitReached", f"user_id is longer than {MAX_USER_ID_LENGTH} characters", 413)
        info = parsed.get("user_info")
        limit = conn.app.max_presence_member_bytes
        if info is not None and len(orjson.dumps(info)) > limit:
            return ("LimitReached", f"user_info is larger than {limit} bytes", 413)
        return Member(user_id, info)

    async def join(self, conn: Connection, channel: str, member: Member | None) -> None:
        app = conn.app
        joined_hub = False
        result: PresenceJoin | None = None
        added: MemberChange | None = None
        try:
            await self.hub.join(conn, channel)
            joined_hub = True
            if member is not None and not self.backend.node.cluster_synced:
                await self.backend.node.wait_synced(PRESENCE_RESYNC_WAIT_S)
            async with self.serialised(app, channel):
                if member is not None:
                    result = await self.backend.presence.join(
                        app.id, channel, conn.socket_id, member, app.max_presence_members_per_channel
                    )
                    if not result.accepted:
                        await self.hub.leave(conn, channel)
                        limit = app.max_presence_members_per_channel
                        return conn.subscription_error(
                            channel, "LimitReached", f"Presence channel is full ({limit} members)", 4100
                        )
                    if result.added:
                        added = MemberChange(channel, member, result.stamp, result.after)
                occupancy: Occupancy = await self.backend.occupancy.add(app.id, channel, conn.socket_id)
                await self.webhook(app, transitions.joined_webhooks(occupancy.occupied(channel), added))
            # On a channel with history, where this subscription starts (docs/history.md).
            policy = history_policy(app, channel)
            position = await self.recovery.current_position(conn, channel, policy) if policy else None
        except Exception:
            if joined_hub:
                await self.hub.leave(conn, channel)
            if member is not None and result is not None and result.accepted:
                # The presence join counted this socket; undo it or the user stays in the roster.
                # Silently: member_added was not published yet, so there is nothing to retract.
                try:
                    await self.backend.presence.leave(app.id, channel, conn.socket_id, member)
                except Exception:
                    log.warning("presence leave of %s failed after a failed subscription", channel,
                                exc_info=True)
            log.warning("subscription to %s failed", channel, exc_info=True)
            return conn.subscription_error(
                channel, "ServerError", "Subscription failed on the server; try again", 500
            )
        conn.channels[channel] = member
        if conn.closed:
            # The socket went away while we waited; undo what handle_close could not see.
            await self.leave(conn, channel)
            return
        metrics.SUBSCRIPTIONS.labels("ok").inc()
        ctype = channel_type(channel)
        if ctype.needs_auth:
            conn.authorized = True
        roster = "{}"
        if result is not None:
            # The roster agrees with what this node's other subscribers were told (gateway.hub).
            roster = self.hub.presence_joined(conn, channel, result.members, result.stamp)
        conn.send(messages.subscription_succeeded(channel, roster, position, history=policy is not None))
        if ctype.cache:
            await self.replay_cache(conn, channel)
        conn.release(channel)
        if added is not None:
            await self.backend.bus.publish(
                transitions.member_added(app.id, added, self.backend.node_id, exclude=conn.socket_id)
            )
        await self.counts.changed(app, channel, occupancy.count)

    async def refresh_presence(self) -> None:
        """After this node re-synced (the cluster is synced again): re-read the roster of every presence
        channel with local subscribers and tell them what they missed meanwhile (members of a node
        that died during a Redis outage, leaves reported while they were unreachable)."""
        corrected = 0
        for app_id, channel in self.hub.presence_topics():
            try:
                roster = await self.backend.presence.roster(app_id, channel)
            except Exception:
                log.warning("roster re-read of %s failed", channel, exc_info=True)
                continue
            corrected += self.hub.presence_refresh((app_id, channel), roster.members, roster.stamp)
        if corrected:
            metrics.PRESENCE_CORRECTIONS.inc(corrected)
            log.info("presence re-read after a re-sync: %d member events sent to local subscribers", corrected)

    async def replay_cache(self, conn: Connection, channel: str) -> None:
        """Cache channels: the last event, or pusher:cache_miss, right after success (docs/protocol.md,
        "Cache")."""
        if conn.held.get(channel):
            # Events arrived while the subscription was pending: they are the newest (each was cached
            # before it was published), and they are about to be released, so replaying would repeat one.
            return
        try:
            cached = await self.backend.cache.get(conn.app.id, channel)
        except Exception:
            # Unknown is not "nothing cached", but a miss makes the client fetch fresh state, which is
            # the safe side; no cache_miss webhook, since nothing is known to be missing.
            log.warning("cache read for %s failed", channel, exc_info=True)
            conn.send(messages.cache_miss(channel))
            return
        if cached is not None:
            conn.send(messages.event(cached.event, cached.data, channel))
            return
        conn.send(messages.cache_miss(channel))
        await self.webhook(conn.app, [WebhookEvent(events.WEBHOOK_CACHE_MISS, channel)])

    async def webhook(self, app: AppConfig, hooks: list[WebhookEvent]) -> None:
        await queue_webhooks(self.backend.webhooks, app, hooks)

    async def confirm_again(self, conn: Connection, channel: str) -> None:
        if conn.channels.get(channel) is not None:
            # What this node's subscribers were told, so it agrees with the events still to come.
            conn.send(messages.subscription_succeeded(channel, self.hub.presence_roster(conn, channel)))
        else:
            conn.send(messages.subscription_succeeded(channel))

    async def unsubscribe_message(self, conn: Connection, data: Any) -> None:
        channel = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(channel, str):
            return conn.error("pusher:unsubscribe requires data.channel (a string)", codes.INVALID_MESSAGE)
        if channel in conn.channels:
            await self.leave(conn, channel)

    async def leave(self, conn: Connection, channel: str) -> None:
        if channel not in conn.channels:
            return
        member = conn.channels.pop(channel)
        app = conn.app
        await self.hub.leave(conn, channel)
        failure: Exception | None = None
        occupancy: Occupancy | None = None
        removed: MemberChange | None = None
        async with self.serialised(app, channel):
            try:
                occupancy = await self.backend.occupancy.remove(app.id, channel, conn.socket_id)
            except Exception as exc:
                # Keep going: the presence store must still record the leave (it repairs after outages).
                failure = exc
            if member is not None:
                stamp = await self.backend.presence.leave(app.id, channel, conn.socket_id, member)
                if stamp:
                    removed = MemberChange(channel, member, stamp)
            vacated = occupancy.vacated(channel) if occupancy is not None else None
            await self.webhook(app, transitions.left_webhooks(vacated, removed))
        if removed is not None:
            await self.backend.bus.publish(transitions.member_removed(app.id, removed, self.backend.node_id))
        if occupancy is not None:
            await self.counts.changed(app, channel, occupancy.count)
        if failure is not None:
            raise failure

    @contextlib.asynccontextmanager
    async def serialised(self, app: AppConfig, channel: str) -> AsyncIterator[None]:
        """Serialise a channel's transitions with their webhook enqueues on this node, so the queue sees
        vacate-then-occupy in the order Redis decided them and can apply the 3 s cancel rule.
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

    # -- client events -------------------------------------------------------------------------

    async def client_event(self, conn: Connection, msg: dict[str, Any]) -> None:
        app = conn.app
        name: str = msg["event"]
        channel = msg.get("channel")
        code = codes.CLIENT_EVENT_REJECTED
        if not app.enable_client_messages:
            return conn.error("Client events are not enabled for this app", code)
        if not isinstance(channel, str) or not channel:
            return conn.error(f"Client event {name[:64]} needs a 'channel'", code)
        if not channel_type(channel).allows_client_events:
            return conn.error(
                f"Client events are only allowed on private and presence channels, not {channel[:64]}", code
            )
        if channel not in conn.channels:
            return conn.error(f"Cannot send client event: connection not subscribed to channel {channel[:64]}", code)
        if len(name) > app.max_event_name_length:
            return conn.error(f"Client event name longer than {app.max_event_name_length}", code)
        data = msg.get("data")
        size = len(data.encode()) if isinstance(data, str) else len(orjson.dumps(data))
        if size > app.max_event_payload_bytes:
            return conn.error(f"Client event data larger than {app.max_event_payload_bytes} bytes", code)
        now = self.clock()
        if now - conn.client_event_window >= CLIENT_EVENT_WINDOW_S:
            conn.client_event_window = now
            conn.client_event_count = 0
        conn.client_event_count += 1
        if 0 <= app.max_client_events_per_sec < conn.client_event_count:
            return conn.error("Client event rejected due to rate limit", code)
        member = conn.channels[channel]
        key = (app.id,)
        client_events = metrics.CLIENT_EVENTS.values
        client_events[key] = client_events.get(key, 0) + 1
        user_id = member.user_id if member is not None else None
        await self.backend.bus.publish(
            Envelope(
                app.id, channel, name, data, exclude=conn.socket_id, user_id=user_id,
                origin=self.backend.node_id, ts=time.time(),
            )
        )
        await self.webhook(app, [WebhookEvent(events.WEBHOOK_CLIENT_EVENT, channel, user_id=user_id, event=name,
                                              data=data, socket_id=conn.socket_id)])
