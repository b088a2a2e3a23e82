"""Close and `pusher:error` codes, protocol versions and liveness timings (docs/protocol.md, "Close
codes").

4000-4099 close without reconnecting, 4100-4199 reconnect after a back-off, 4200-4299 reconnect at
once; pusher-js acts on these ranges, so the code a server picks decides what every client does.
"""

from __future__ import annotations

PROTOCOL_MIN = 4
PROTOCOL_MAX = 7
ACTIVITY_TIMEOUT_S = 120
PONG_TIMEOUT_S = 30

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
# Reverb's code for an unparseable message; sent as a `pusher:error`, never as a close.
INVALID_MESSAGE = 4200
