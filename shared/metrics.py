"""Prometheus metrics shared by the gateway and the HTTP API (exposed at GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
BUS_LAG = Histogram(
    "herald_bus_lag_seconds",
    "Publish-to-gateway delay of bus messages",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
