"""Whether this process can reach Redis, since when, and how often it lost it: the facts behind
`/ready` and the `herald_redis_*` metrics (README, "Redis": "Health and readiness").

Several parts report: the node's heartbeat (commands) and each pub/sub subscriber connection. Redis
counts as up while every part that reported last said it works. No I/O here; the clock is injected.

Readiness policy (`ready`):
- Before this process has reached Redis once it is not ready: a node with a wrong URL, password or
  certificate must not take traffic, nor let a rolling update replace working nodes with it.
- Afterwards it stays ready through an outage shorter than `unready_after_s`. An outage usually hits
  every node at once (Redis restarts, a Sentinel failover); if every node turned unready the load
  balancer would have nowhere to send anyone, and readiness would come back only a probe period after
  Redis did. Only a longer outage, most likely this node alone cut off from Redis, turns it unready so
  new clients and API requests go to nodes that can serve them.
- Either way the node keeps its existing WebSocket clients (readiness only steers new traffic), and
  liveness (`GET /`) never looks at Redis: restarting a node can't bring Redis back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Long enough to ride out a Redis restart or a Sentinel failover with its default 30 s down-after
# period; short enough that a node cut off from Redis stops receiving new clients within a minute.
DEFAULT_UNREADY_AFTER_S = 60.0

COMMANDS = "commands"


class RedisHealth:
    def __init__(self, unready_after_s: float = DEFAULT_UNREADY_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.unready_after_s = unready_after_s
        self._clock = clock
        self._down: set[str] = {COMMANDS}  # parts whose last report was a failure (or no report yet)
        self.ever_up = False
        self.down_since: float | None = clock()  # clock time the current outage began; None while up
        self.reconnects = 0  # outages that ended (the first connection is not one)
        self._outages_s = 0.0  # length of the outages that ended

    @property
    def up(self) -> bool:
        return not self._down

    def report(self, part: str, ok: bool) -> None:
        """`part` (COMMANDS, or a subscriber connection's name) just worked (`ok`) or failed."""
        was_up = not self._down
        if ok:
            self._down.discard(part)
        else:
            self._down.add(part)
        now_up = not self._down
        if was_up and not now_up:
            self.down_since = self._clock()
        elif now_up and not was_up:
            if self.ever_up and self.down_since is not None:
                self.reconnects += 1
                self._outages_s += self._clock() - self.down_since
            self.ever_up = True
            self.down_since = None

    def forget(self, part: str) -> None:
        """`part` is gone (a subscriber connection closed on purpose); it no longer counts."""
        if part in self._down:
            self.report(part, True)

    def down_for_s(self) -> float:
        """How long the current outage has lasted (0 while up)."""
        return 0.0 if self.down_since is None else self._clock() - self.down_since

    def outage_s_total(self) -> float:
        """Seconds Redis was unreachable since this process first reached it, the current outage included."""
        ongoing = self.down_for_s() if self.ever_up else 0.0
        return self._outages_s + ongoing

    def ready(self) -> bool:
        """See the module docstring."""
        if self.up:
            return True
        return self.ever_up and self.down_for_s() <= self.unready_after_s

    def facts(self) -> dict[str, object]:
        """For `/ready`'s body: what a person debugging a node wants to see."""
        facts: dict[str, object] = {"up": self.up, "reconnects": self.reconnects,
                                    "outage_seconds_total": round(self.outage_s_total(), 3)}
        if not self.up:
            facts["down_for_seconds"] = round(self.down_for_s(), 3)
            facts["unready_after_seconds"] = self.unready_after_s
            facts["down"] = sorted(self._down)
        return facts
