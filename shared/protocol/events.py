"""Every event name Herald sends, receives, routes on the bus or posts in a webhook: one home each.

Client <-> server names are Pusher's (docs/protocol.md).
"""

from __future__ import annotations

# Client -> server.
PING = "pusher:ping"
PONG = "pusher:pong"
SUBSCRIBE = "pusher:subscribe"
UNSUBSCRIBE = "pusher:unsubscribe"
SIGNIN = "pusher:signin"
CLIENT_EVENT_PREFIX = "client-"

# Names only the server may send: apps can't publish them (pusher-js acts on them, e.g. member events).
RESERVED_PREFIXES = ("pusher:", "pusher_internal:")

# Server -> client.
CONNECTION_ESTABLISHED = "pusher:connection_established"
ERROR = "pusher:error"
SUBSCRIPTION_ERROR = "pusher:subscription_error"
SIGNIN_SUCCESS = "pusher:signin_success"
CACHE_MISS = "pusher:cache_miss"
SUBSCRIPTION_SUCCEEDED = "pusher_internal:subscription_succeeded"
MEMBER_ADDED = "pusher_internal:member_added"
MEMBER_REMOVED = "pusher_internal:member_removed"
SUBSCRIPTION_COUNT = "pusher_internal:subscription_count"
WATCHLIST_EVENTS = "pusher_internal:watchlist_events"

# Herald's history extension (docs/history.md). A client asks to recover a channel's missed events;
# the answer and the position markers use the `pusher_internal:` prefix because pusher-js hands events
# with that prefix to no app callback (and laravel-echo sees none either), so apps that do not use
# recovery never see them.
RECOVER = "herald:recover"
RECOVERED = "pusher_internal:herald_recovered"
# To the socket a trigger excluded, on a channel with history: the position it did not receive.
SKIPPED = "pusher_internal:herald_skipped"

# Bus-only control message on a user's `#server-to-user-` topic: gateways close that user's signed-in
# sockets with 4009 instead of relaying it (it never reaches a client).
TERMINATE_CONNECTIONS = "pusher_internal:terminate_connections"

# Bus-only check that messages reach this node's subscriber (shared.bus.redis_impl, RedisBus.probe): a
# node publishes one on its own control topic and waits for it to come back. Never relayed.
BUS_PROBE = "herald:bus_probe"

# Bus-only debug console messages (docs/console.md): a console server announces that it watches an app
# on the control topic; while it does, nodes copy that app's traffic to the app's console topic.
CONSOLE_WATCH = "herald:console_watch"
CONSOLE_EVENT = "herald:console_event"  # a copy of an envelope published on one of the app's channels
CONSOLE_WEBHOOK = "herald:console_webhook"  # a webhook request and its outcome
CONSOLE_STATS = "herald:console_stats"  # a node's open connections of the watched app

# Webhook event types (the `name` of each event in a webhook body; apps subscribe to them by name).
WEBHOOK_CHANNEL_OCCUPIED = "channel_occupied"
WEBHOOK_CHANNEL_VACATED = "channel_vacated"
WEBHOOK_MEMBER_ADDED = "member_added"
WEBHOOK_MEMBER_REMOVED = "member_removed"
WEBHOOK_CLIENT_EVENT = "client_event"
WEBHOOK_CACHE_MISS = "cache_miss"
WEBHOOK_SUBSCRIPTION_COUNT = "subscription_count"
WEBHOOK_EVENT_TYPES = frozenset({
    WEBHOOK_CHANNEL_OCCUPIED,
    WEBHOOK_CHANNEL_VACATED,
    WEBHOOK_MEMBER_ADDED,
    WEBHOOK_MEMBER_REMOVED,
    WEBHOOK_CLIENT_EVENT,
    WEBHOOK_CACHE_MISS,
    WEBHOOK_SUBSCRIPTION_COUNT,
})
