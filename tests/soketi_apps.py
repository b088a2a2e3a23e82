"""soketi apps with every field of its schema, in each of its spellings, for the apps-file and
database tests. Field names and shapes follow soketi's `App` class, its SQL test schema and its
DynamoDB fixture (read for facts; nothing copied)."""

from __future__ import annotations

from typing import Any

# snake_case: soketi's SQL columns (its PostgreSQL / MySQL `apps` table), in the table's order.
SQL_COLUMNS = [
    "id", "key", "secret", "max_connections", "enable_client_messages", "enabled",
    "max_backend_events_per_sec", "max_client_events_per_sec", "max_read_req_per_sec", "webhooks",
    "max_presence_members_per_channel", "max_presence_member_size_in_kb", "max_channel_name_length",
    "max_event_channels_at_once", "max_event_name_length", "max_event_payload_in_kb",
    "max_event_batch_size", "enable_user_authentication",
]


def camel_app(app_id: str, key: str, secret: str, webhook_url: str, **overrides: Any) -> dict[str, Any]:
    """An app as soketi's JSON config writes it: every camelCase field, a URL webhook with soketi's
    filter and a Lambda-only webhook (which Herald skips with a warning), and the flags soketi
    derives from the webhooks."""
    app: dict[str, Any] = {
        "id": app_id, "key": key, "secret": secret,
        "maxConnections": 3,
        "enableClientMessages": True,
        "enabled": True,
        "maxBackendEventsPerSecond": 4,
        "maxClientEventsPerSecond": 5,
        "maxReadRequestsPerSecond": 6,
        "webhooks": [
            {"url": webhook_url, "event_types": ["channel_occupied", "channel_vacated"],
             "headers": {"X-From": "soketi-config"}, "filter": {"channel_name_starts_with": "hooked-"}},
            {"lambda_function": "my-function", "event_types": ["member_added"],
             "lambda": {"async": True, "region": "us-east-1"}},
        ],
        "maxPresenceMembersPerChannel": 7,
        "maxPresenceMemberSizeInKb": 2,
        "maxChannelNameLength": 60,
        "maxEventChannelsAtOnce": 8,
        "maxEventNameLength": 50,
        "maxEventPayloadInKb": 20,
        "maxEventBatchSize": 9,
        "enableUserAuthentication": False,
        "hasClientEventWebhooks": False,
        "hasChannelOccupiedWebhooks": True,
        "hasChannelVacatedWebhooks": True,
        "hasMemberAddedWebhooks": True,
        "hasMemberRemovedWebhooks": False,
        "hasCacheMissedWebhooks": False,
    }
    app.update(overrides)
    return app


def pascal_app(app_id: str, key: str, secret: str) -> dict[str, Any]:
    """An item of soketi's DynamoDB table, unmarshalled (every PascalCase attribute)."""
    return {
        "AppId": app_id, "AppKey": key, "AppSecret": secret, "MaxConnections": 3,
        "EnableClientMessages": True, "Enabled": True, "MaxBackendEventsPerSecond": 4,
        "MaxClientEventsPerSecond": 5, "MaxReadRequestsPerSecond": 6, "Webhooks": "[]",
        "MaxPresenceMembersPerChannel": 7, "MaxPresenceMemberSizeInKb": 2, "MaxChannelNameLength": 60,
        "MaxEventChannelsAtOnce": 8, "MaxEventNameLength": 50, "MaxEventPayloadInKb": 20,
        "MaxEventBatchSize": 9, "EnableUserAuthentication": False,
    }
