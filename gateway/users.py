"""User authentication (`pusher:signin`), server-to-user delivery, watchlists and terminate
(docs/protocol.md, "Users").

A signed-in socket joins two kinds of internal bus topics on its node's hub: `#server-to-user-{id}`
(events the HTTP API sends to the user, and terminate requests) and `#watch-{id}` for each id in its
watchlist (online/offline transitions, which are decided cluster-wide by the UserStore).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.connection import Connection
from gateway.hub import Hub
from shared import transitions
from shared.backend import Backend
from shared.bus.base import BusUnavailable
from shared.protocol import codes, events, messages
from shared.protocol.channels import server_to_user_channel, watch_topic
from shared.protocol.signatures import auth_token_error, user_string_to_sign
from shared.protocol.users import MAX_WATCHLIST, SignedInUser, parse_user_data

log = logging.getLogger("herald.gateway")


class UserSessions:
    def __init__(self, backend: Backend, hub: Hub) -> None:
        self.backend = backend
        self.hub = hub

    async def signin(self, conn: Connection, data: Any) -> None:
        if not isinstance(data, dict):
            return conn.error("pusher:signin requires a data object", codes.UNAUTHORIZED)
        user_data = data.get("user_data")
        if not isinstance(user_data, str):
            return conn.error("Sign-in refused: user_data must be a JSON-encoded string", codes.UNAUTHORIZED)
        app = conn.app
        problem = auth_token_error(data.get("auth"), app.key, app.secret,
                                   user_string_to_sign(conn.socket_id, user_data))
        if problem:
            return conn.error(f"Sign-in refused: {problem}", codes.UNAUTHORIZED)
        user = parse_user_data(user_data)
        if isinstance(user, str):
            return conn.error(f"Sign-in refused: {user}", codes.UNAUTHORIZED)
        current = conn.user
        if current is not None:
            if current.id != user.id:
                return conn.error(f"Sign-in refused: this connection is already signed in as {current.id}",
                                  codes.UNAUTHORIZED)
            # Same user again: confirm without counting the socket twice.
            conn.send(messages.signin_success(user_data))
            return None
        truncated = len(user.watchlist) > MAX_WATCHLIST
        if truncated:
            user = SignedInUser(user.id, user.info, user.watchlist[:MAX_WATCHLIST], user.user_data)
        # The socket counts as signed in only once it receives the user's events and is counted online:
        # a failure before that leaves it signed out, so a retry is a full sign-in.
        hub = self.hub
        topic = server_to_user_channel(user.id)
        await hub.join(conn, topic, hold=False)
        try:
            came_online = await self.backend.users.signin(app.id, user.id, conn.socket_id)
        except BaseException:
            await hub.leave(conn, topic)
            raise
        conn.user = user
        conn.authorized = True
        conn.send(messages.signin_success(user_data))
        if truncated:
            conn.error(f"Watchlist limit exceeded. Only the first {MAX_WATCHLIST} user IDs are accepted.",
                       codes.WATCHLIST_LIMIT)
        if came_online:
            await self.publish_status(app.id, user.id, online=True)
        if user.watchlist and app.enable_watchlist_events:
            for watched in user.watchlist:
                await hub.join(conn, watch_topic(watched), hold=False)
            status = await self.backend.users.online(app.id, list(user.watchlist))
            online = [w for w, up in zip(user.watchlist, status, strict=True) if up]
            offline = [w for w, up in zip(user.watchlist, status, strict=True) if not up]
            conn.send(messages.event(events.WATCHLIST_EVENTS, messages.watchlist_events(online, offline)))
        return None

    async def publish_status(self, app_id: str, user_id: str, online: bool) -> None:
        """Tell the user's watchers; the sign-in or sign-out itself stands even when the bus is away."""
        try:
            await self.backend.bus.publish(transitions.user_status(app_id, user_id, online, self.backend.node_id))
        except BusUnavailable:
            log.warning("could not publish %s status of a user of app %s", "online" if online else "offline",
                        app_id)

    async def close(self, conn: Connection) -> None:
        """The socket is gone: leave the user's internal topics and count it out."""
        user = conn.user
        if user is None:
            return
        hub = self.hub
        await hub.leave(conn, server_to_user_channel(user.id))
        if conn.app.enable_watchlist_events:
            for watched in user.watchlist:
                await hub.leave(conn, watch_topic(watched))
        if await self.backend.users.signout(conn.app.id, user.id, conn.socket_id):
            await self.publish_status(conn.app.id, user.id, online=False)
