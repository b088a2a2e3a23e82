"""Prometheus metrics of the HTTP API (the rest are in shared/metrics.py; docs/metrics.md lists both).

The functions below are the hooks the request path calls: one call per request, none per channel.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import REQUEST_BUCKETS_S

REQUESTS = Counter(
    "herald_http_requests",
    "HTTP API requests by endpoint and response status",
    ["endpoint", "status"],
)
REQUEST_DURATION = Histogram(
    "herald_http_request_duration_seconds",
    "Time to answer a request once its body was in (signature, validation, reads, publishing), by endpoint",
    ["endpoint"],
    buckets=REQUEST_BUCKETS_S,
)
EVENTS_PUBLISHED = Counter(
    "herald_http_events_published",
    "Events published to the bus by the HTTP API (one per channel)",
    ["app_id"],
)
RATE_LIMITED = Counter(
    "herald_http_rate_limited",
    "HTTP API requests refused with 429 by an app's rate limit, by limit",
    ["app_id", "limit"],
)


# Labelled children by (endpoint, status) and by endpoint: `labels()` costs more than the increment on
# the hot path.
_REQUEST_COUNTERS: dict[tuple[str, int], Counter] = {}
_REQUEST_TIMERS: dict[str, Histogram] = {}


def count_request(endpoint: str, status: int, duration_s: float | None = None) -> None:
    """One answered request; `duration_s` from when its body was in (None: not timed)."""
    counter = _REQUEST_COUNTERS.get((endpoint, status))
    if counter is None:
        counter = _REQUEST_COUNTERS[(endpoint, status)] = REQUESTS.labels(endpoint, str(status))
    counter.inc()
    if duration_s is not None:
        timer = _REQUEST_TIMERS.get(endpoint)
        if timer is None:
            timer = _REQUEST_TIMERS[endpoint] = REQUEST_DURATION.labels(endpoint)
        timer.observe(duration_s)


def count_published(app_id: str, channel_events: int) -> None:
    EVENTS_PUBLISHED.labels(app_id).inc(channel_events)


def count_rate_limited(app_id: str, limit: str) -> None:
    """A request refused with 429; `limit` names the limit that refused it (`events`: the app's
    max_backend_events_per_sec, `reads`: its max_read_req_per_sec; shared/ratelimit/base.py)."""
    RATE_LIMITED.labels(app_id, limit).inc()
