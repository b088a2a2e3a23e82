"""Node-level admission (docs/apps.md, "Node limits"): a cap on this node's open connections and on its
new connections per second. Over either, the handshake is refused with 4100: pusher-js waits and
reconnects, and behind a load balancer may land on another node. Per-app limits are elsewhere
(`max_connections`, cluster-wide, closes with 4004).

The cap is checked against the node's registered connections, so handshakes in flight at the same
moment (a few at most, each waiting for one Redis round trip) can pass it together.
"""

from __future__ import annotations

import time

from shared.clock import Clock
from shared.ratelimit.base import Gcra

_BUCKET = ("node", "connect")
NODE_FULL = "Over capacity: this node holds its maximum of connections; reconnect later"
NODE_RATE = "Over capacity: too many new connections on this node; reconnect later"


class NodeAdmission:
    def __init__(self, max_connections: int = 0, max_rate: int = 0, clock: Clock = time.monotonic) -> None:
        """0 turns a limit off."""
        self.max_connections = max_connections
        self.max_rate = max_rate
        self.clock = clock
        self._rate = Gcra()

    def refuse(self, open_connections: int) -> str | None:
        """Why a new handshake is refused now, or None. Every handshake counts towards the rate."""
        if 0 < self.max_connections <= open_connections:
            return NODE_FULL
        if self.max_rate > 0 and not self._rate.take(_BUCKET, 1, self.max_rate, self.clock()).allowed:
            return NODE_RATE
        return None
