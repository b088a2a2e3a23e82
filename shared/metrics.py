"""Prometheus metrics of every process (GET /metrics): one home for each metric's name, type, labels
and meaning; docs/metrics.md is the reference for operators. The HTTP API's own metrics are in
trigger_api/metrics.py.

Rules: `herald_` prefix, base units (seconds, bytes), bounded labels (`app_id` where it helps, close
codes and reasons from fixed sets; never a channel or a socket). Hot paths count per broadcast or per
write batch, never per socket; gauges that would cost a walk over sockets are kept as running counts,
and the few computed at scrape time (`SampledGauge`) read something already counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shared.redis.health import RedisHealth

# `_created` series double every counter's series count and no dashboard here uses them.
disable_created_metrics()

# Buckets (seconds) for things that should take well under a millisecond and may take seconds.
FAST_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)
# For requests that cross the network (HTTP API calls, webhook requests).
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SampledGauge(Collector):
    """A gauge read at scrape time from a source the process assembly registers, for values already
    counted elsewhere (so nothing extra runs on the hot path). The source returns {label values: value}."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._source: Callable[[], Mapping[tuple[str, ...], float]] | None = None
        REGISTRY.register(self)

    def set_source(self, source: Callable[[], Mapping[tuple[str, ...], float]] | None) -> None:
        self._source = source

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if self._source is not None:
            for labels, value in self._source().items():
                family.add_metric(list(labels), value)
        yield family


class Tally(Collector):
    """A counter for the hottest paths (bytes per write, per-app counts per broadcast): `values` is a
    plain dict the caller adds to (`v[key] = v.get(key, 0) + n`, ~0.05 us, no lock), exported at scrape.
    Keys are tuples of label values (`()` without labels)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}
        REGISTRY.register(self)

    def describe(self) -> Iterable[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):  # one C-level copy: safe against the loop thread
            family.add_metric(list(labels), value)
        yield family


# -- connections (gateway) --------------------------------------------------------------------------

CONNECTIONS = Gauge("herald_connections", "Open WebSocket connections on this node", ["app_id"])
CONNECTIONS_OPENED = Counter(
    "herald_connections_opened_total", "WebSocket connections accepted (after the handshake checks)", ["app_id"]
)
CONNECTIONS_CLOSED = Counter(
    "herald_connections_closed_total",
    "Accepted WebSocket connections that ended, by close code: Herald's when it closed first, else the "
    "client's; 1006 when the connection ended without a close frame; 'other' for codes Herald doesn't know",
    ["code"],
)
CONNECTIONS_REFUSED = Counter(
    "herald_connections_refused_total", "WebSocket handshakes refused, by reason", ["reason"]
)
SLOW_READER_DISCONNECTS = Counter(
    "herald_slow_reader_disconnects_total",
    "Connections dropped because the client did not read: more unsent bytes than the bound",
)

# -- frames and deliveries (gateway): counted per broadcast and per write, never per socket object --

MESSAGES_IN = Tally("herald_ws_messages_received_total", "WebSocket messages received from clients", ["app_id"])
MESSAGES_OUT = Tally("herald_ws_messages_sent_total", "WebSocket messages sent to connected clients", ["app_id"])
BYTES_IN = Tally(
    "herald_ws_received_bytes_total", "Bytes of WebSocket frames received from clients (headers and masks included)"
)
BYTES_OUT = Tally(
    "herald_ws_sent_bytes_total",
    "Bytes of WebSocket frames queued to clients, counted per broadcast and per frame (headers and close "
    "frames included; not the HTTP upgrade)",
)
PROTOCOL_ERRORS = Counter("herald_ws_protocol_errors_total", "pusher:error frames sent, by error code", ["code"])
DELIVERIES = Tally(
    "herald_deliveries_total", "Channel events queued to local sockets (one per socket and event)", ["app_id"]
)
CLIENT_EVENTS = Tally("herald_client_events_total", "Client events accepted and relayed", ["app_id"])
RECOVERIES = Counter(
    "herald_recoveries_total", "herald:recover requests answered, by result (recovered, or the reason not)",
    ["result"],
)
RECOVERED_EVENTS = Counter("herald_recovered_events_total", "Events replayed to recovering sockets")
RECOVERY_SOURCE = Counter(
    "herald_recovery_reads_total", "Where recoveries found the missed events: the node's cache or the store",
    ["source"],
)
MEMBER_EVENTS_DROPPED = Counter(
    "herald_member_events_dropped_total",
    "Member events from the bus not sent to subscribers: overtaken by a newer one, or no change to what "
    "they were told (docs/cluster.md, \"Ordering\")",
)
PRESENCE_CORRECTIONS = Counter(
    "herald_presence_corrections_total",
    "Member events sent to subscribers after a roster re-read found they had missed a change",
)
BUS_LAG = Histogram(
    "herald_bus_lag_seconds",
    "Delay from publish to a gateway's receipt of a bus message",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

# -- subscriptions and channels (gateway) ------------------------------------------------------------

SUBSCRIPTIONS = Counter(
    "herald_subscriptions_total", "Subscription attempts, by result ('ok' or the error type)", ["result"]
)
CHANNEL_SUBSCRIPTIONS = Gauge(
    "herald_channel_subscriptions",
    "Socket subscriptions on this node, by channel type (internal: sign-in and watchlist topics)",
    ["type"],
)
CHANNELS = Gauge("herald_channels", "Channels with at least one socket on this node, by channel type", ["type"])
PRESENCE_MEMBERS = SampledGauge(
    "herald_presence_members",
    "Presence members (one per user and channel) held by this node's sockets",
    ["app_id"],
)

# -- drain (gateway) ---------------------------------------------------------------------------------

DRAINING = Gauge("herald_draining", "1 once this gateway drains its connections (after SIGTERM), else 0")
DRAIN_PENDING = Gauge(
    "herald_drain_pending_connections", "Connections the drain has still to close (0 when not draining)"
)

# -- Redis ---------------------------------------------------------------------------------------------

REDIS_COMMAND_DURATION = Histogram(
    "herald_redis_command_duration_seconds",
    "Time of Herald's Redis operations, by operation (a script's name, or publish)",
    ["command"],
    buckets=FAST_BUCKETS_S,
)

# -- node leases and the reaper -------------------------------------------------------------------------

REAPER_RUNS = Counter("herald_reaper_runs_total", "Reaper passes run by this node while holding the reaper lock")
REAPED_NODES = Counter("herald_reaped_nodes_total", "Dead nodes (lease expired) whose state this node removed")
REAPED_MEMBERS = Counter(
    "herald_reaped_members_total", "Presence members removed because their node died (member_removed sent)"
)
REAPED_USERS = Counter(
    "herald_reaped_users_total", "Signed-in users who went offline because their node died"
)

# -- webhooks ---------------------------------------------------------------------------------------------

WEBHOOKS_ENQUEUED = Counter(
    "herald_webhooks_enqueued_total", "Webhook jobs queued (one per event and webhook)", ["event"]
)
WEBHOOKS_DELIVERED = Counter(
    "herald_webhooks_delivered_total", "Webhook events delivered with a 2xx answer", ["event"]
)
WEBHOOK_REQUESTS = Counter(
    "herald_webhooks_requests_total",
    "Webhook HTTP requests, by outcome: ok (2xx), http_<status>, timeout or network",
    ["app_id", "outcome"],
)
WEBHOOK_REQUEST_DURATION = Histogram(
    "herald_webhooks_request_duration_seconds", "Time of webhook HTTP requests", buckets=REQUEST_BUCKETS_S
)
WEBHOOKS_RETRIES = Counter(
    "herald_webhooks_retries_total", "Webhook jobs scheduled for another attempt after a failed request"
)
WEBHOOKS_DROPPED = Counter("herald_webhooks_dropped_total", "Webhook jobs given up on", ["event", "reason"])
WEBHOOKS_CANCELLED = Counter(
    "herald_webhooks_cancelled_total",
    "Webhook jobs not sent under the delay-and-cancel rule (the withdrawn vacate/remove and the "
    "occupy/add that withdrew it)",
    ["event"],
)
WEBHOOK_QUEUE_JOBS = Gauge(
    "herald_webhooks_queue_jobs",
    "Webhook jobs in the queue (waiting, delayed, in flight or waiting to be retried); cluster-wide "
    "with Redis, so every process reports the same value",
    ["app_id"],
)
WEBHOOK_QUEUE_OLDEST_AGE = Gauge(
    "herald_webhooks_queue_oldest_age_seconds",
    "How long the longest-waiting due webhook job has waited for a worker (0 when none is overdue)",
    ["app_id"],
)

# -- the process -------------------------------------------------------------------------------------------

EVENT_LOOP_LAG = Histogram(
    "herald_event_loop_lag_seconds",
    "How late the event loop ran a timer (time every socket and request waited behind other work)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# -- Redis health (shared/redis/health.py) ---------------------------------------------------------


class RedisHealthCollector:
    """`herald_redis_*`: read at scrape time from the process's `RedisHealth` (shared/redis/health.py),
    so the outage counter includes an outage still going on. Nothing is exported without Redis."""

    def __init__(self) -> None:
        self._health: RedisHealth | None = None

    def watch(self, health: RedisHealth) -> None:
        self._health = health

    def describe(self) -> Iterator[Metric]:
        # The names, so the registry (and tests/unit/test_metrics_reference.py) know them without Redis.
        yield GaugeMetricFamily("herald_redis_up", "")
        yield CounterMetricFamily("herald_redis_reconnects", "")
        yield CounterMetricFamily("herald_redis_outage_seconds", "")

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
