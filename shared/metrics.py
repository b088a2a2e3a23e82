"""Prometheus metrics of every process (exposed at GET /metrics): one home for each metric's name and meaning."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from shared.redis.health import RedisHealth

CONNECTIONS = Gauge("herald_connections", "Open WebSocket connections on this node")
CONNECTIONS_TOTAL = Counter("herald_connections_opened_total", "WebSocket connections accepted")
CONNECTIONS_REFUSED = Counter(
    "herald_connections_refused_total", "WebSocket connections refused at handshake", ["code"]
)
MESSAGES_IN = Counter("herald_ws_messages_received_total", "Frames received from clients")
PROTOCOL_ERRORS = Counter("herald_ws_protocol_errors_total", "pusher:error frames sent", ["code"])
SUBSCRIPTIONS = Counter("herald_subscriptions_total", "Subscription attempts", ["result"])
CLIENT_EVENTS = Counter("herald_client_events_total", "Client events relayed")
DELIVERIES = Counter("herald_deliveries_total", "Channel events queued to local sockets")
RECOVERIES = Counter(
    "herald_recoveries_total", "herald:recover requests answered, by result (recovered, or the reason not)",
    ["result"],
)
RECOVERED_EVENTS = Counter("herald_recovered_events_total", "Events replayed to recovering sockets")
RECOVERY_SOURCE = Counter(
    "herald_recovery_reads_total", "Where recoveries found the missed events: the node's cache or the store",
    ["source"],
)
BUS_LAG = Histogram(
    "herald_bus_lag_seconds",
    "Publish-to-gateway delay of bus messages",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

WEBHOOKS_ENQUEUED = Counter(
    "herald_webhooks_enqueued_total", "Webhook jobs queued (one per event and webhook)", ["event"]
)
WEBHOOKS_DELIVERED = Counter(
    "herald_webhooks_delivered_total", "Webhook events delivered with a 2xx answer", ["event"]
)
WEBHOOKS_FAILED_ATTEMPTS = Counter(
    "herald_webhooks_failed_attempts_total", "Webhook requests answered with non-2xx or failed", ["reason"]
)
WEBHOOKS_DROPPED = Counter("herald_webhooks_dropped_total", "Webhook jobs given up on", ["event", "reason"])
WEBHOOKS_CANCELLED = Counter(
    "herald_webhooks_cancelled_total",
    "Webhook jobs not sent under the delay-and-cancel rule (the withdrawn vacate/remove and the "
    "occupy/add that withdrew it)",
    ["event"],
)


class RedisHealthCollector:
    """`herald_redis_*`: read at scrape time from the process's `RedisHealth` (shared/redis/health.py),
    so the outage counter includes an outage still going on. Nothing is exported without Redis."""

    def __init__(self) -> None:
        self._health: RedisHealth | None = None

    def watch(self, health: RedisHealth) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        health = self._health
        if health is None:
            return
        yield GaugeMetricFamily("herald_redis_up", "1 while this process reaches Redis (commands and every "
                                "pub/sub subscriber connection), else 0", value=1 if health.up else 0)
        yield CounterMetricFamily("herald_redis_reconnects", "Times this process got Redis back after losing it",
                                  value=health.reconnects)
        yield CounterMetricFamily("herald_redis_outage_seconds", "Seconds this process could not reach Redis, "
                                  "counted from its first connection", value=health.outage_s_total())


REDIS = RedisHealthCollector()
REGISTRY.register(REDIS)
