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


def count_request(endpoint: str, status: int) -> None:
    REQUESTS.labels(endpoint, str(status)).inc()
