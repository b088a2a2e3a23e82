"""Server -> client frame payloads of Pusher protocol 7, as UTF-8 JSON bytes.

Encoding (docs/protocol.md, "Encoding"): `data` is a JSON *string* on `pusher:` and `pusher_internal:`
events (hosted Pusher's form); `pusher:error`, `pusher:subscription_error` and `pusher:signin_success`
carry an object.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.protocol import events
from shared.protocol.users import user_key


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
        events.CONNECTION_ESTABLISHED,
        dumps({"socket_id": socket_id, "activity_timeout": activity_timeout}),
    )


def error(message: str, code: int | None) -> bytes:
    return event(events.ERROR, {"code": code, "message": message})


def subscription_error(channel: str, type_: str, message: str, status: int) -> bytes:
    return event(events.SUBSCRIPTION_ERROR, {"type": type_, "error": message, "status": status}, channel)


PONG = event(events.PONG, "{}")
PING = event(events.PING, "{}")


def subscription_succeeded(channel: str, data: str = "{}", position: str | None = None, history: bool = False
                           ) -> bytes:
    """On a channel with history (`history`), `position` is where this subscription starts, or null when
    it could not be read (docs/history.md); other channels get Pusher's frame unchanged."""
    if not history:
        return event(events.SUBSCRIPTION_SUCCEEDED, data, channel)
    return event(events.SUBSCRIPTION_SUCCEEDED, data, channel, position=position)


def recovered(channel: str, ok: bool, count: int, position: str | None, reason: str | None = None) -> bytes:
    """The answer to `herald:recover`: `count` events were replayed before it and the socket is now at
    `position`; `ok` False (with `reason`) means nothing was replayed and events may be missing."""
    body: dict[str, Any] = {"recovered": ok, "count": count, "position": position}
    if reason is not None:
        body["reason"] = reason
    return event(events.RECOVERED, dumps(body), channel)


def skipped(channel: str, position: str) -> bytes:
    return event(events.SKIPPED, None, channel, position=position)


def signin_success(user_data: str) -> bytes:
    return event(events.SIGNIN_SUCCESS, {"user_data": user_data})


def cache_miss(channel: str) -> bytes:
    return event(events.CACHE_MISS, None, channel)


def presence_roster(members: list[tuple[Any, Any]]) -> str:
    """Roster payload from (user_id, user_info) pairs with user_id as sent in channel_data."""
    ids = [uid for uid, _ in members]
    hash_ = {user_key(uid): info for uid, info in members}
    return dumps({"presence": {"ids": ids, "hash": hash_, "count": len(hash_)}})


def member_added_data(user_id: Any, user_info: Any) -> str:
    return dumps({"user_id": user_id, "user_info": user_info})


def member_removed_data(user_id: Any) -> str:
    return dumps({"user_id": user_id})


def subscription_count_data(count: int) -> str:
    return dumps({"subscription_count": count})


def watchlist_events(online: list[str], offline: list[str]) -> str:
    """The data of `pusher_internal:watchlist_events`, a connection-level event (no channel)."""
    changes: list[dict[str, Any]] = []
    if online:
        changes.append({"name": "online", "user_ids": online})
    if offline:
        changes.append({"name": "offline", "user_ids": offline})
    return dumps({"events": changes})
