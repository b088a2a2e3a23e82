"""User authentication (pusher:signin), server-to-user delivery, watchlists and terminate
(reference sections 2.11, 2.12, 6.8).

A signed-in socket joins two kinds of internal bus topics on its node's hub: `#server-to-user-{id}`
(events the HTTP API sends to the user, and terminate requests) and `#watch-{id}` for each id in its
watchlist (online/offline transitions, which are decided cluster-wide by the UserStore).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.connection import Connection
from shared import protocol
from shared.backend import Backend
from shared.bus import watch_status_envelope
from shared.channels import SERVER_TO_USER_PREFIX
from shared.protocol import WATCH_PREFIX, WATCHLIST_EVENT, watchlist_events
from shared.signatures import auth_token_error

if TYPE_CHECKING:
    from gateway.handler import ProtocolHandler

log = logging.getLogger("herald.gateway")

MAX_WATCHLIST = 100
MAX_USER_ID_CHARS = 200
# User ids end up in `#server-to-user-{id}`, so they share the channel-name alphabet.
USER_ID_RE = re.compile(r"^[-a-zA-Z0-9_=@,.;]+$")


@dataclass(frozen=True, slots=True)
class SignedInUser:
    id: str
    info: Any
    watchlist: tuple[str, ...]
    user_data: str


def parse_user_data(user_data: Any) -> SignedInUser | str:
    """The signed-in user from `user_data`, or why it is unacceptable."""
    if not isinstance(user_data, str):
        return "user_data must be a JSON-encoded string"
    try:
        parsed = orjson.loads(user_data)
    except orjson.JSONDecodeError:
        return "user_data is not valid JSON"
    if not isinstance(parsed, dict):
        return "user_data must be a JSON object"
    user_id = parsed.get("id")
    if not isinstance(user_id, str) or not user_id:
        return "user_data.id must be a non-empty string"
    if len(user_id) > MAX_USER_ID_CHARS or not USER_ID_RE.match(user_id):
        return f"user_data.id must be at most {MAX_USER_ID_CHARS} characters of A-Z a-z 0-9 _ - = @ , . ;"
    watchlist = parsed.get("watchlist") or []
    if not isinstance(watchlist, list) or not all(isinstance(w, str) and w for w in watchlist):
        return "user_data.watchlist must be a list of user ids"
    return SignedInUser(user_id, parsed.get("user_info"), tuple(dict.fromkeys(watchlist)), user_data)


class UserSessions:
    def __init__(self, handler: ProtocolHandler) -> None:
        self.handler = handler

    @property
    def backend(self) -> Backend:
        return self.handler.backend

    async def signin(self, conn: Connection, data: Any) -> None:
        error = self.handler.error
        if not isinstance(data, dict):
            return error(conn, "pusher:signin requires a data object", protocol.UNAUTHORIZED)
        user_data = data.get("user_data")
        if not isinstance(user_data, str):
            return error(conn, "Sign-in refused: user_data must be a JSON-encoded string", protocol.UNAUTHORIZED)
        app = conn.app
        problem = auth_token_error(data.get("auth"), app.key, app.secret, f"{conn.socket_id}::user::{user_data}")
        if problem:
            return error(conn, f"Sign-in refused: {problem}", protocol.UNAUTHORIZED)
        user = parse_user_data(user_data)
        if isinstance(user, str):
            return error(conn, f"Sign-in refused: {user}", protocol.UNAUTHORIZED)
        current: SignedInUser | None = conn.user
        if current is not None:
            if current.id != user.id:
                return error(conn, f"Sign-in refused: this connection is already signed in as {current.id}",
                             protocol.UNAUTHORIZED)
            # Same user again: confirm without counting the socket twice.
            conn.send(protocol.event("pusher:signin_success", {"user_data": user_data}))
            return None
        truncated = len(user.watchlist) > MAX_WATCHLIST
        if truncated:
            user = SignedInUser(user.id, user.info, user.watchlist[:MAX_WATCHLIST], user.user_data)
        conn.user = user
        conn.authorized = True
        hub = self.handler.hub
        await hub.join(conn, SERVER_TO_USER_PREFIX + user.id, hold=False)
        conn.send(protocol.event("pusher:signin_success", {"user_data": user_data}))
        if truncated:
            error(conn, f"Watchlist limit exceeded. Only the first {MAX_WATCHLIST} user IDs are accepted.",
                  protocol.WATCHLIST_LIMIT)
        if await self.backend.users.signin(app.id, user.id, conn.socket_id):
            await self.publish_status(app.id, user.id, online=True)
        if user.watchlist and app.enable_watchlist_events:
            for watched in user.watchlist:
                await hub.join(conn, WATCH_PREFIX + watched, hold=False)
            status = await self.backend.users.online(app.id, list(user.watchlist))
            online = [w for w, up in zip(user.watchlist, status, strict=True) if up]
            offline = [w for w, up in zip(user.watchlist, status, strict=True) if not up]
            conn.send(protocol.event(WATCHLIST_EVENT, watchlist_events(online, offline)))
        return None

    async def publish_status(self, app_id: str, user_id: str, online: bool) -> None:
        await self.backend.bus.publish(watch_status_envelope(app_id, user_id, online, self.backend.node_id))

    async def close(self, conn: Connection) -> None:
        """The socket is gone: leave the user's internal topics and count it out."""
        user: SignedInUser | None = conn.user
        if user is None:
            return
        hub = self.handler.hub
        await hub.leave(conn, SERVER_TO_USER_PREFIX + user.id)
        if conn.app.enable_watchlist_events:
            for watched in user.watchlist:
                await hub.leave(conn, WATCH_PREFIX + watched)
        if await self.backend.users.signout(conn.app.id, user.id, conn.socket_id):
            await self.publish_status(conn.app.id, user.id, online=False)
