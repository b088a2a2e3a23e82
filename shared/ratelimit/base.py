"""Rates per app, cluster-wide: the HTTP API's events and read requests per second (docs/apps.md, "API rates").

The rule is GCRA (a token bucket kept as one timestamp): an app with a limit of N per second may
spend N points at once and regains one point every 1/N s. Compared with soketi's fixed one-second
windows it never lets 2N through around a window boundary, and it needs one number per app and kind.
A refused request spends nothing. The same arithmetic runs in `shared/redis/lua/ratelimit_take.lua`
(atomic for the whole cluster) and in `Gcra` here (one process); the behaviour suite in
tests/unit/test_ratelimit.py holds both to the same results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# The bucket holds one second's worth of points.
BURST_S = 1.0
# What the limits count (one bucket per app and kind).
EVENTS = "events"
READS = "reads"


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int  # points per second
    remaining: int  # points that could be spent right now (after this request, when allowed)
    retry_after_s: float  # when refused: until this request's points are available (0 when allowed)
    reset_s: float  # until the bucket is full again

    def headers(self) -> dict[str, str]:
        """The response headers: X-RateLimit-* always, Retry-After (whole seconds) when refused."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


def never(limit: int, points: int) -> RateDecision | None:
    """The decision when no bucket could ever allow it (a limit of 0, or more points than the limit
    holds), so no store is asked; None otherwise."""
    if limit == 0 or points > limit:
        return RateDecision(False, limit, limit, BURST_S, 0.0)
    return None


class RateLimiter(Protocol):
    async def take(self, app_id: str, kind: str, points: int, limit: int) -> RateDecision:
        """Spend `points` of the app's `kind` bucket (`limit` per second, >= 0) if they are there.

        Changing `limit` applies from the next call. The Redis implementation fails open (allows,
        with a warning) while Redis is unreachable: an outage must not block the API on top.
        """


class Gcra:
    """The rule on one process's clock: theoretical arrival times per bucket."""

    def __init__(self) -> None:
        self._tat: dict[tuple[str, str], float] = {}

    def take(self, bucket: tuple[str, str], points: int, limit: int, now: float) -> RateDecision:
        refused = never(limit, points)
        if refused is not None:
            return refused
        interval = 1.0 / limit
        tat = max(self._tat.get(bucket, now), now)
        new_tat = tat + points * interval
        allow_at = new_tat - BURST_S
        if allow_at > now + 1e-9:
            return RateDecision(False, limit, int((now + BURST_S - tat) / interval + 1e-9), allow_at - now, tat - now)
        self._tat[bucket] = new_tat
        if len(self._tat) > 4096:
            # Buckets whose time is past are full: forgetting them changes nothing.
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        return RateDecision(True, limit, int((now + BURST_S - new_tat) / interval + 1e-9), 0.0, new_tat - now)
