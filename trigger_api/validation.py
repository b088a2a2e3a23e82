"""Validation of HTTP API request bodies and query parameters (docs/http-api.md).

Every function raises ApiError with a message naming the field at fault; nothing here touches the
backend, so a request is fully validated before anything is published.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared.apps.config import AppConfig
from shared.history.base import parse_position
from shared.protocol import events
from shared.protocol.channels import channel_name_error, channel_type, is_encrypted
from shared.protocol.socket_ids import is_socket_id
from shared.protocol.users import signed_in_user_id_error
from trigger_api.errors import ApiError, bad_request

USER_COUNT = "user_count"
SUBSCRIPTION_COUNT = "subscription_count"
CACHE = "cache"

TRIGGER_INFO = (USER_COUNT, SUBSCRIPTION_COUNT)
CHANNELS_INFO = (USER_COUNT,)
CHANNEL_INFO = (USER_COUNT, SUBSCRIPTION_COUNT, CACHE)



@dataclass(frozen=True, slots=True)
class EventSpec:
    """One validated event: published once to each of `channels` (unique, in request order)."""

    name: str
    data: str
    channels: tuple[str, ...]
    socket_id: str | None
    info: tuple[str, ...]


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("Request body is empty; expected a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad_request(f"Request body must be a JSON object, got {_json_type(doc)}")
    return doc


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_info(value: object, allowed: Collection[str], where: str = "info") -> tuple[str, ...]:
    """A comma-separated attribute list; unknown attributes are refused."""
    if value is None:
        return ()
    if not isinstance(value, str):
        raise bad_request(f"{where} must be a comma-separated string, got {_json_type(value)}")
    attrs: list[str] = []
    for raw in value.split(","):
        attr = raw.strip()
        if not attr:
            continue
        if attr not in allowed:
            raise bad_request(
                f"{where}: unknown attribute '{attr}' (supported here: {', '.join(allowed)})"
            )
        if attr not in attrs:
            attrs.append(attr)
    return tuple(attrs)


def check_channel_name(name: object, app: AppConfig, what: str = "channel", at: str = "") -> str:
    error = channel_name_error(name, app.max_channel_name_length)
    if error is not None:
        shown = f" '{name}'" if isinstance(name, str) and len(name) <= 300 else ""
        raise bad_request(f"{at}Invalid {what}{shown}: {error}")
    assert isinstance(name, str)
    return name


def require_presence(channel: str, attribute: str) -> None:
    if not channel_type(channel).is_presence:
        raise bad_request(f"{attribute} is only available for presence channels, not '{channel}'")


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def parse_event(
    doc: Mapping[str, Any], app: AppConfig, *, batch_item: bool = False, where: str = ""
) -> EventSpec:
    """Validate one trigger body (`batch_item`: one `batch_events` item, which takes a single `channel`)."""
    at = _prefix(where)
    if not isinstance(doc, Mapping):
        raise bad_request(f"{at}each batch item must be a JSON object, got {_json_type(doc)}")

    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{at}name is required and must be a non-empty string")
    if len(name) > app.max_event_name_length:
        raise bad_request(
            f"{at}name is {len(name)} characters long; the limit is {app.max_event_name_length}"
        )
    if name.startswith(events.RESERVED_PREFIXES):
        raise bad_request(f"{at}event names starting with {' or '.join(events.RESERVED_PREFIXES)} are reserved")

    data = doc.get("data")
    if not isinstance(data, str):
        what = "missing" if data is None else f"{_json_type(data)}"
        raise bad_request(f"{at}data is required and must be a string (JSON-encode it), got {what}")
    size = len(data.encode())
    if size > app.max_event_payload_bytes:
        raise ApiError(
            413, f"{at}data is {size} bytes; the limit is {app.max_event_payload_bytes} bytes"
        )

    channels = _parse_channels(doc, app, batch_item=batch_item, at=at)

    socket_id = doc.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise bad_request(
            f"{at}Invalid socket_id {_short(socket_id)}: expected digits.digits, like '1234.5678'"
        )

    info = parse_info(doc.get("info"), TRIGGER_INFO, f"{at}info")
    if USER_COUNT in info and not any(channel_type(c).is_presence for c in channels):
        raise bad_request(f"{at}info user_count is only available for presence channels")

    return EventSpec(name, data, channels, socket_id, info)


def _short(value: object) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_channels(doc: Mapping[str, Any], app: AppConfig, *, batch_item: bool, at: str) -> tuple[str, ...]:
    if batch_item:
        if "channels" in doc and "channel" not in doc:
            raise bad_request(f"{at}a batch item takes a single 'channel', not 'channels'")
        return (check_channel_name(doc.get("channel"), app, at=at),)

    has_list, has_single = doc.get("channels") is not None, doc.get("channel") is not None
    if has_list and has_single:
        raise bad_request(f"{at}send either 'channels' or 'channel', not both")
    if has_single:
        return (check_channel_name(doc["channel"], app, at=at),)
    names = doc.get("channels")
    if not has_list:
        raise bad_request(f"{at}channels is required: a list of channel names")
    if not isinstance(names, list):
        raise bad_request(f"{at}channels must be a list of channel names, got {_json_type(names)}")
    if not names:
        raise bad_request(f"{at}channels must contain at least one channel")
    limit = app.max_event_channels_at_once
    if len(names) > limit:
        raise bad_request(f"{at}channels has {len(names)} entries; at most {limit} channels at once")
    channels = tuple(dict.fromkeys(check_channel_name(n, app, "channel name", at) for n in names))
    if len(channels) > 1 and any(is_encrypted(c) for c in channels):
        raise bad_request(f"{at}an encrypted channel cannot be triggered together with other channels")
    return channels


def parse_batch(doc: Mapping[str, Any], app: AppConfig) -> list[EventSpec]:
    """All items are validated before any is published; the first invalid one fails the request."""
    batch = doc.get("batch")
    if not isinstance(batch, list):
        what = "missing" if batch is None else _json_type(batch)
        raise bad_request(f"batch is required and must be a list of events, got {what}")
    if len(batch) > app.max_event_batch_size:
        raise bad_request(f"Cannot batch-send more than {app.max_event_batch_size} messages at once")
    return [parse_event(item, app, batch_item=True, where=f"batch[{i}]") for i, item in enumerate(batch)]


# GET .../history (docs/history.md, "HTTP API"): events per response by default and at most.
HISTORY_LIMIT_DEFAULT = 100
HISTORY_LIMIT_MAX = 1000


def parse_history_limit(value: str | None) -> int:
    if value is None:
        return HISTORY_LIMIT_DEFAULT
    if not value.isdigit() or not 1 <= int(value) <= HISTORY_LIMIT_MAX:
        raise bad_request(f"limit must be a whole number from 1 to {HISTORY_LIMIT_MAX}, got {_short(value)}")
    return int(value)


def parse_history_since(value: str | None) -> str | None:
    if value is not None and parse_position(value) is None:
        raise bad_request(f"since must be a position '<epoch>-<offset>' as events carry it, got {_short(value)}")
    return value


def check_user_id(user_id: str) -> str:
    """A signed-in user's id, by the same rule as `pusher:signin` (only such users can be terminated)."""
    problem = signed_in_user_id_error(user_id)
    if problem is not None:
        raise bad_request(f"Invalid user_id {_short(user_id)}: {problem}")
    return user_id
