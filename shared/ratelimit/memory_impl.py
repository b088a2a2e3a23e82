"""`RateLimiter` for one process (`herald serve` without Redis)."""

from __future__ import annotations

import time

from shared.clock import Clock
from shared.ratelimit.base import Gcra, RateDecision


class MemoryRateLimiter:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._gcra = Gcra()

    async def take(self, app_id: str, kind: str, points: int, limit: int) -> RateDecision:
        return self._gcra.take((app_id, kind), points, limit, self.clock())
