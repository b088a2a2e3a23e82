"""Pusher protocol 7 wire messages (server side) and codes.

Encoding follows Herald's decision 4: `data` is a JSON string on `pusher:` and `pusher_internal:` events
(hosted Pusher's form), `pusher:error` and `pusher:subscription_error` carry an object.
"""

from __future__ import annotations

from typing import Any

import orjson

PROTOCOL_MIN = 4
PROTOCOL_MAX = 7
ACTIVITY_TIMEOUT_S = 120
PONG_TIMEOUT_S = 30

# Close / error codes (reference section 3).
APP_NOT_FOUND = 4001
APP_DISABLED = 4003
OVER_QUOTA = 4004
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
UNAUTHORIZED = 4009
OVER_CAPACITY = 4100
RECONNECT = 4200
PONG_NOT_RECEIVED = 4201
CLIENT_EVENT_REJECTED = 4301
WATCHLIST_LIMIT = 4302
# Reverb's code for an unparseable message; sent as an event, never as a close.
INVALID_MESSAGE = 4200


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def event(name: str, data: Any = None, channel: str | None = None, **extra: Any) -> bytes:
    """A server->client frame payload as UTF-8 JSON bytes."""
    msg: dict[str, Any] = {"event": name}
    if channel is not None:
        msg["channel"] = channel
    if data is not None:
        msg["data"] = data
    msg.update(extra)
    return orjson.dumps(msg)


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    return event(
        "pusher:connection_established",
        dumps({"socket_id": socket_id, "activity_timeout": activity_timeout}),
    )


def error(message: str, code: int | None) -> bytes:
    return event("pusher:error", {"code": code, "message": message})


def subscription_error(channel: str, type_: str, message: str, status: int) -> bytes:
    return event("pusher:subscription_error", {"type": type_, "error": message, "status": status}, channel)


PONG = event("pusher:pong", "{}")
PING = event("pusher:ping", "{}")


def subscription_succeeded(channel: str, data: str = "{}") -> bytes:
    return event("pusher_internal:subscription_succeeded", data, channel)


def presence_roster(members: list[tuple[Any, Any]]) -> str:
    """Roster payload from (user_id, user_info) pairs with user_id as sent in channel_data."""
    ids = [uid for uid, _ in members]
    hash_ = {str(uid): info for uid, info in members}
    return dumps({"presence": {"ids": ids, "hash": hash_, "count": len(hash_)}})


def member_added_data(user_id: Any, user_info: Any) -> str:
    return dumps({"user_id": user_id, "user_info": user_info})


def member_removed_data(user_id: Any) -> str:
    return dumps({"user_id": user_id})


# Watchlists (section 2.12): connection-level events; nodes route them on internal `#watch-{user}` topics.
WATCH_PREFIX = "#watch-"
WATCHLIST_EVENT = "pusher_internal:watchlist_events"


def watchlist_events(online: list[str], offline: list[str]) -> str:
    events: list[dict[str, Any]] = []
    if online:
        events.append({"name": "online", "user_ids": online})
    if offline:
        events.append({"name": "offline", "user_ids": offline})
    return dumps({"events": events})
