"""soketi's names for app fields, so its apps lists, config files and SQL tables work unchanged
(docs/apps.md, "soketi's names").

soketi stores one app under three spellings: snake_case SQL columns (Herald's own names), camelCase
keys in its JSON config (`appManager.array.apps`) and PascalCase DynamoDB attributes. This module is
the one home of that mapping and of the soketi fields and keys Herald accepts without implementing.
"""

from __future__ import annotations

# Herald field -> soketi's other spellings (camelCase JSON config, PascalCase DynamoDB).
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("AppId",),
    "key": ("AppKey",),
    "secret": ("AppSecret",),
    "max_connections": ("maxConnections", "MaxConnections"),
    "enable_client_messages": ("enableClientMessages", "EnableClientMessages"),
    "enabled": ("Enabled",),
    "max_backend_events_per_sec": ("maxBackendEventsPerSecond", "MaxBackendEventsPerSecond"),
    "max_client_events_per_sec": ("maxClientEventsPerSecond", "MaxClientEventsPerSecond"),
    "max_read_req_per_sec": ("maxReadRequestsPerSecond", "MaxReadRequestsPerSecond"),
    "webhooks": ("Webhooks",),
    "max_presence_members_per_channel": ("maxPresenceMembersPerChannel", "MaxPresenceMembersPerChannel"),
    "max_presence_member_size_in_kb": ("maxPresenceMemberSizeInKb", "MaxPresenceMemberSizeInKb"),
    "max_channel_name_length": ("maxChannelNameLength", "MaxChannelNameLength"),
    "max_event_channels_at_once": ("maxEventChannelsAtOnce", "MaxEventChannelsAtOnce"),
    "max_event_name_length": ("maxEventNameLength", "MaxEventNameLength"),
    "max_event_payload_in_kb": ("maxEventPayloadInKb", "MaxEventPayloadInKb"),
    "max_event_batch_size": ("maxEventBatchSize", "MaxEventBatchSize"),
    "enable_user_authentication": ("enableUserAuthentication", "EnableUserAuthentication"),
}

CANONICAL: dict[str, str] = {alias: name for name, aliases in ALIASES.items() for alias in aliases}

# What soketi computes from `webhooks` and writes into dumps of its app objects; Herald derives the
# same from `webhooks`, so these are ignored without a warning.
DERIVED = frozenset({
    "hasClientEventWebhooks", "hasChannelOccupiedWebhooks", "hasChannelVacatedWebhooks",
    "hasMemberAddedWebhooks", "hasMemberRemovedWebhooks", "hasCacheMissedWebhooks",
})

# Webhook keys soketi has and Herald does not implement: key -> what happens instead.
UNSUPPORTED_WEBHOOK_KEYS: dict[str, str] = {
    "lambda_function": "AWS Lambda webhooks are not supported; a webhook without 'url' is skipped",
    "lambda": "AWS Lambda options are ignored",
}

# Where a soketi config file keeps its apps: the dotted key its CLI reads, or the nested form.
CONFIG_APPS_KEY = "appManager.array.apps"
