"""The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json` (docs/http-api.md).

Built from the same rules the handlers enforce (channel names, info attributes, limits of the default
app), so a client generator or a fuzzer (tests/reliability/test_schemathesis.py) sees what the server
accepts and every answer it can give. Signing can't be expressed in OpenAPI: the auth_* parameters
are listed, and the description says how to compute them.
"""

from __future__ import annotations

from typing import Any

from shared.apps.config import AppConfig
from shared.protocol.channels import NAME_CHARACTERS
from shared.protocol.users import MAX_USER_ID_LENGTH
from trigger_api.validation import CHANNEL_INFO, CHANNELS_INFO, HISTORY_LIMIT_MAX, TRIGGER_INFO

_DEFAULTS = AppConfig(id="-", key="-", secret="-")
# JSON Schema patterns are ECMA-262: `$` ends the string (no newline before it, unlike Python's re).
CHANNEL_PATTERN = rf"^[{NAME_CHARACTERS}]+$"
PRESENCE_PATTERN = rf"^presence-[{NAME_CHARACTERS}]+$"
SIGNED_IN_USER_PATTERN = rf"^[{NAME_CHARACTERS}]+$"
POSITION_PATTERN = r"^[1-9][0-9]{0,19}-(0|[1-9][0-9]{0,19})$"

_ERRORS = {
    "400": "Invalid request: the message names the field or parameter at fault",
    "401": "Missing or invalid signature, key or timestamp",
    "403": "The app is disabled",
    "404": "Unknown app id (or endpoint)",
    "405": "Method not allowed on this path",
    "410": "The history no longer holds that position (trimmed, or started over)",
    "413": "Body or data too large",
    "503": "The event bus or the channel state is unavailable (Redis away, or re-syncing after a restart); "
           "nothing was published",
}


def _error_ref() -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _responses(ok: dict[str, Any], codes: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    for code in codes:
        out[code] = {"description": _ERRORS[code], **_error_ref()}
        if code == "405":
            out[code]["headers"] = {"Allow": {"schema": {"type": "string"}, "required": True}}
    return out


def _auth_params(with_body: bool) -> list[dict[str, Any]]:
    params = [
        {"name": "auth_key", "in": "query", "required": True, "schema": {"type": "string"},
         "description": "The app key"},
        {"name": "auth_timestamp", "in": "query", "required": True, "schema": {"type": "string"},
         "description": "Unix time in seconds, within 600 s of the server's"},
        {"name": "auth_version", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1.0"]}},
        {"name": "auth_signature", "in": "query", "required": True,
         "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
         "description": "HMAC-SHA256 hex, keyed with the app secret, of `METHOD\\nPATH\\nQUERY` where QUERY "
                        "is every other parameter, lowercased names, sorted, `k=v` joined by `&`"},
    ]
    if with_body:
        params.append({"name": "body_md5", "in": "query", "required": True,
                       "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                       "description": "MD5 hex of the request body"})
    return params


def _app_id() -> dict[str, Any]:
    return {"name": "app_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _channel_name(pattern: str = CHANNEL_PATTERN) -> dict[str, Any]:
    return {"name": "channel_name", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": pattern, "minLength": 1,
                       "maxLength": _DEFAULTS.max_channel_name_length}}


def _info(allowed: tuple[str, ...]) -> dict[str, Any]:
    return {"name": "info", "in": "query", "required": False,
            "schema": {"type": "string", "pattern": rf"^(({'|'.join(allowed)}),)*({'|'.join(allowed)})?$"},
            "description": f"Comma-separated attributes: {', '.join(allowed)}"}


def _user_id() -> dict[str, Any]:
    return {"name": "user_id", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": SIGNED_IN_USER_PATTERN, "maxLength": MAX_USER_ID_LENGTH}}


def _event_schema(batch_item: bool) -> dict[str, Any]:
    channel = {"$ref": "#/components/schemas/ChannelName"}
    props: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1, "maxLength": _DEFAULTS.max_event_name_length},
        "data": {"type": "string", "description": "The event data, as a string (JSON-encode objects); "
                                                  f"at most {_DEFAULTS.max_event_payload_bytes} bytes by default"},
        "socket_id": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+$",
                      "description": "A socket that must not receive the event"},
        "info": {"type": "string", "pattern": rf"^(({'|'.join(TRIGGER_INFO)}),)*({'|'.join(TRIGGER_INFO)})?$"},
        "channel": channel,
    }
    if batch_item:
        return {"type": "object", "properties": props, "required": ["name", "data", "channel"]}
    props["channels"] = {"type": "array", "items": channel, "minItems": 1, "uniqueItems": True,
                         "maxItems": _DEFAULTS.max_event_channels_at_once}
    # One of `channel` or `channels`, not both.
    return {"type": "object", "properties": props, "required": ["name", "data"],
            "oneOf": [{"required": ["channel"], "not": {"required": ["channels"]}},
                      {"required": ["channels"], "not": {"required": ["channel"]}}]}


def _attributes() -> dict[str, Any]:
    return {"type": "object", "properties": {"user_count": {"type": "integer", "minimum": 0},
                                              "subscription_count": {"type": "integer", "minimum": 0}},
            "additionalProperties": False}


def openapi_document() -> dict[str, Any]:
    body_codes = ("400", "401", "403", "404", "405", "413", "503")
    query_codes = ("400", "401", "403", "404", "405", "503")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Herald HTTP API", "version": "1",
                 "description": "Pusher Channels' HTTP API as Herald serves it (docs/http-api.md)."},
        "paths": {
            "/apps/{app_id}/events": {"post": {
                "operationId": "trigger", "summary": "Publish an event to one or more channels",
                "parameters": [_app_id(), *_auth_params(with_body=True)],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _event_schema(False)}}},
                "responses": _responses({"type": "object", "properties": {"channels": {
                    "type": "object", "additionalProperties": _attributes()}}, "additionalProperties": False},
                    body_codes),
            }},
            "/apps/{app_id}/batch_events": {"post": {
                "operationId": "triggerBatch", "summary": "Publish several events",
                "parameters": [_app_id(), *_auth_params(with_body=True)],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["batch"],
                    "properties": {"batch": {"type": "array", "items": _event_schema(True),
                                             "maxItems": _DEFAULTS.max_event_batch_size}}}}}},
                "responses": _responses({"type": "object", "properties": {"batch": {
                    "type": "array", "items": _attributes()}}, "additionalProperties": False}, body_codes),
            }},
            "/apps/{app_id}/channels": {"get": {
                "operationId": "channels", "summary": "Occupied channels",
                "parameters": [_app_id(), *_auth_params(with_body=False), _info(CHANNELS_INFO),
                               {"name": "filter_by_prefix", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": _responses({"type": "object", "required": ["channels"], "properties": {
                    "channels": {"type": "object", "additionalProperties": _attributes()}},
                    "additionalProperties": False}, query_codes),
            }},
            "/apps/{app_id}/channels/{channel_name}": {"get": {
                "operationId": "channel", "summary": "One channel's state",
                "parameters": [_app_id(), _channel_name(), *_auth_params(with_body=False), _info(CHANNEL_INFO)],
                "responses": _responses({"type": "object", "required": ["occupied"], "properties": {
                    "occupied": {"type": "boolean"},
                    "user_count": {"type": "integer", "minimum": 0},
                    "subscription_count": {"type": "integer", "minimum": 0},
                    "cache": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["event", "data", "ttl"],
                                                           "properties": {"event": {"type": "string"},
                                                                          "data": {"type": "string"},
                                                                          "ttl": {"type": "integer"}}}]}},
                    "additionalProperties": False}, query_codes),
            }},
            "/apps/{app_id}/channels/{channel_name}/users": {"get": {
                "operationId": "users", "summary": "Users of a presence channel",
                "parameters": [_app_id(), _channel_name(PRESENCE_PATTERN), *_auth_params(with_body=False)],
                "responses": _responses({"type": "object", "required": ["users"], "properties": {"users": {
                    "type": "array", "items": {"type": "object", "required": ["id"],
                                               "properties": {"id": {"type": "string"}}}}},
                    "additionalProperties": False}, query_codes),
            }},
            "/apps/{app_id}/channels/{channel_name}/history": {"get": {
                "operationId": "history", "summary": "A channel's kept events (Herald extension, docs/history.md)",
                "parameters": [_app_id(), _channel_name(), *_auth_params(with_body=False),
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": HISTORY_LIMIT_MAX}},
                               {"name": "since", "in": "query", "required": False,
                                "schema": {"type": "string", "pattern": POSITION_PATTERN}}],
                "responses": _responses({"type": "object", "required": ["events", "position", "more"], "properties": {
                    "events": {"type": "array", "items": {
                        "type": "object", "required": ["event", "data", "position"],
                        "properties": {"event": {"type": "string"}, "data": {"type": "string"},
                                       "position": {"type": "string", "pattern": POSITION_PATTERN}}}},
                    "position": {"type": ["string", "null"]},
                    "more": {"type": "boolean"}}, "additionalProperties": False},
                    ("400", "401", "403", "404", "405", "410", "503")),
            }},
            "/apps/{app_id}/users/{user_id}/terminate_connections": {"post": {
                "operationId": "terminateConnections", "summary": "Close every connection of a signed-in user",
                "parameters": [_app_id(), _user_id(), *_auth_params(with_body=True)],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}},
                "responses": _responses({"type": "object", "additionalProperties": False}, body_codes),
            }},
            "/users/{user_id}/terminate_connections": {"post": {
                "operationId": "terminateConnectionsByKey",
                "summary": "As above, the app found by auth_key (pusher-http-python's path)",
                "parameters": [_user_id(), *_auth_params(with_body=True)],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}},
                "responses": _responses({"type": "object", "additionalProperties": False},
                                        ("400", "401", "403", "405", "413", "503")),
            }},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "code"],
                      "properties": {"error": {"type": "string"}, "code": {"type": "integer"}},
                      "additionalProperties": False},
            "ChannelName": {"type": "string", "pattern": CHANNEL_PATTERN, "minLength": 1,
                            "maxLength": _DEFAULTS.max_channel_name_length},
        }},
    }
