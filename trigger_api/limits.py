"""The HTTP API's per-app rates (docs/apps.md, "API rates"): `max_backend_events_per_sec` counts one
point per channel an event goes to (as soketi counts), `max_read_req_per_sec` one per GET request.
Apps without a limit (-1) cost nothing here; a limited app costs one Redis script per request."""

from __future__ import annotations

from shared.apps.config import AppConfig
from shared.ratelimit.base import EVENTS, RateLimiter
from trigger_api.errors import ApiError
from trigger_api.metrics import count_rate_limited


async def check_rate(limiter: RateLimiter, app: AppConfig, kind: str, points: int, headers: dict[str, str]) -> None:
    """Spend the request's points or raise ApiError(429); the X-RateLimit-* headers go into `headers`."""
    limit = app.max_backend_events_per_sec if kind == EVENTS else app.max_read_req_per_sec
    if limit < 0:
        return
    decision = await limiter.take(app.id, kind, points, limit)
    headers.update(decision.headers())
    if decision.allowed:
        return
    count_rate_limited(app.id, kind)
    field = "max_backend_events_per_sec" if kind == EVENTS else "max_read_req_per_sec"
    what = "channel events (one per channel of each event)" if kind == EVENTS else "read requests"
    message = f"Too many requests: app '{app.id}' allows {limit} {what} per second ({field})"
    if points > limit:
        message += f"; this request needs {points} at once, so it can never pass: send fewer channels per request"
    else:
        message += f"; retry after {decision.headers()['Retry-After']} s"
    raise ApiError(429, message, decision.headers())

