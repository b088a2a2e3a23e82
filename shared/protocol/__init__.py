"""Pusher protocol 7 wire rules, one module per concern (see docs/protocol.md):

- `codes`: close and `pusher:error` codes, protocol versions, liveness timings.
- `events`: every event name on the wire, on the bus and in webhooks.
- `messages`: server -> client frame payloads.
- `channels`: channel names, their alphabet and types.
- `users`: user ids (presence members, signed-in users), the sign-in `user_data`.
- `signatures`: HMAC-SHA256 signing and constant-time checks.
"""
