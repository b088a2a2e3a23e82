"""`RateLimiter` over Redis: one atomic script per decision, on the Redis server's clock, so the
limit holds for the whole cluster however many HTTP API processes share it."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from shared.ratelimit.base import RateDecision, never
from shared.redis.scripts import ScriptRunner, load_script

log = logging.getLogger("herald.ratelimit")

RATELIMIT_TAKE = load_script("ratelimit_take")
# While Redis is away, one warning per this many seconds.
WARN_EVERY_S = 10.0
_US = 1_000_000


class RedisRateLimiter:
    def __init__(self, client: Any, prefix: str) -> None:
        self.prefix = prefix
        self.scripts = ScriptRunner(client)
        self._warned_at = 0.0

    async def take(self, app_id: str, kind: str, points: int, limit: int) -> RateDecision:
        refused = never(limit, points)
        if refused is not None:
            return refused
        key = f"{self.prefix}:{{{app_id}}}:rl:{kind}"
        try:
            allowed, remaining, retry_us, reset_us = await self.scripts.run(RATELIMIT_TAKE, [key], [limit, points])
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("rate limits not enforced while Redis is unavailable: %s", exc)
            return RateDecision(True, limit, limit, 0.0, 0.0)
        return RateDecision(bool(allowed), limit, int(remaining), retry_us / _US, reset_us / _US)
