"""Prometheus metrics of the HTTP API (module-level, registered once in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter

REQUESTS = Counter(
    "herald_http_requests",
    "HTTP API requests by endpoint and response status",
    ["endpoint", "status"],
)

EVENTS_PUBLISHED = Counter(
    "herald_http_events_published",
    "Events published to the bus by the HTTP API (one per channel)",
)


# Labelled children by (endpoint, status): `labels()` costs more than the increment on the hot path.
_REQUEST_COUNTERS: dict[tuple[str, int], Counter] = {}


def count_request(endpoint: str, status: int) -> None:
    counter = _REQUEST_COUNTERS.get((endpoint, status))
    if counter is None:
        counter = _REQUEST_COUNTERS[(endpoint, status)] = REQUESTS.labels(endpoint, str(status))
    counter.inc()
