"""Herald's Grafana dashboard, generated from the panel list below into
deploy/helm/herald/dashboards/herald.json (importable into Grafana as is, and shipped by the chart as
a ConfigMap for Grafana's dashboard sidecar when grafanaDashboard.enabled is set).

    python deploy/helm/dashboard.py --write    # regenerate the JSON
    python deploy/helm/dashboard.py --check    # exit 1 when the committed JSON is out of date

The metrics are described in docs/metrics.md; tests/e2e/test_metrics.py checks that every expression
here parses (promtool) and names only metrics a real Herald scrape has.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "herald" / "dashboards" / "herald.json"
UID = "herald-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
APP = f'{NS}, app_id=~"$app_id"'
RATE = "$__rate_interval"


@dataclass
class Panel:
    title: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    description: str = ""
    stacked: bool = False


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def p99(metric: str, by: str = "", where: str = NS) -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.99, sum by ({group}) (rate({metric}_bucket{{{where}}}[{RATE}])))"


ROWS = [
    Row("Connections", [
        Panel("Open connections", [(f"sum(herald_connections{{{NS}}})", "all")], kind="stat", width=4,
              description="WebSocket connections open on all gateways"),
        Panel("Connections per gateway", [(f"sum by (instance) (herald_connections{{{NS}}})", "{{instance}}")],
              width=10, description="Open sockets per gateway process (what the HPA scales on)"),
        Panel("Connections by app", [(f"sum by (app_id) (herald_connections{{{APP}}})", "app {{app_id}}")],
              width=10, stacked=True),
        Panel("Opened and closed per second", [
            (f"sum(rate(herald_connections_opened_total{{{NS}}}[{RATE}]))", "opened"),
            (f"sum by (code) (rate(herald_connections_closed_total{{{NS}}}[{RATE}]))", "closed {{code}}"),
        ], unit="ops", width=8, description="Closes by close code: 1000/1001 clients leaving, 1006 dropped, "
                                           "4100 slow readers or a full node, 4200 drain, 4201 pong timeout"),
        Panel("Refused handshakes per second",
              [(f"sum by (reason) (rate(herald_connections_refused_total{{{NS}}}[{RATE}]))", "{{reason}}")],
              unit="ops", width=8),
        Panel("Slow-reader disconnects and drain", [
            (f"sum by (instance) (rate(herald_slow_reader_disconnects_total{{{NS}}}[{RATE}]))",
             "slow readers {{instance}}"),
            (f"sum by (instance) (herald_drain_pending_connections{{{NS}}})", "drain pending {{instance}}"),
        ], width=8),
    ]),
    Row("Traffic", [
        Panel("Deliveries per second by app",
              [(f"sum by (app_id) (rate(herald_deliveries_total{{{APP}}}[{RATE}]))", "app {{app_id}}")],
              unit="ops", stacked=True, description="Channel events queued to sockets (one per socket and event)"),
        Panel("Published per second by app",
              [(f"sum by (app_id) (rate(herald_http_events_published_total{{{APP}}}[{RATE}]))", "API app {{app_id}}"),
               (f"sum by (app_id) (rate(herald_client_events_total{{{APP}}}[{RATE}]))", "client app {{app_id}}")],
              unit="ops", description="Events published through the HTTP API (one per channel) and client events"),
        Panel("WebSocket messages per second", [
            (f"sum(rate(herald_ws_messages_sent_total{{{NS}}}[{RATE}]))", "out"),
            (f"sum(rate(herald_ws_messages_received_total{{{NS}}}[{RATE}]))", "in"),
        ], unit="ops"),
        Panel("WebSocket bytes per second", [
            (f"sum(rate(herald_ws_sent_bytes_total{{{NS}}}[{RATE}]))", "out"),
            (f"sum(rate(herald_ws_received_bytes_total{{{NS}}}[{RATE}]))", "in"),
        ], unit="Bps"),
        Panel("Subscriptions by channel type",
              [(f"sum by (type) (herald_channel_subscriptions{{{NS}}})", "{{type}}")], stacked=True),
        Panel("Presence members by app",
              [(f"sum by (app_id) (herald_presence_members{{{APP}}})", "app {{app_id}}")],
              description="Members held per node, summed: a user in one channel on two nodes counts twice"),
    ]),
    Row("HTTP API", [
        Panel("Requests per second by status", [
            (f"sum by (status) (rate(herald_http_requests_total{{{NS}}}[{RATE}]))", "{{status}}"),
        ], unit="reqps"),
        Panel("Latency p99 by endpoint", [(p99("herald_http_request_duration_seconds", "endpoint"), "{{endpoint}}")],
              unit="s"),
        Panel("5xx ratio", [
            (f'sum(rate(herald_http_requests_total{{{NS}, status=~"5.."}}[{RATE}])) '
             f"/ sum(rate(herald_http_requests_total{{{NS}}}[{RATE}]))", "5xx share of requests"),
        ], unit="percentunit", width=4),
        Panel("Rate-limited per second by app", [
            (f"sum by (app_id, limit) (rate(herald_http_rate_limited_total{{{APP}}}[{RATE}]))",
             "app {{app_id}} {{limit}}"),
        ], unit="reqps", width=4, description="Requests refused with 429 by an app's rate limit"),
    ]),
    Row("Bus and Redis", [
        Panel("Redis reachable", [(f"min by (instance) (herald_redis_up{{{NS}}})", "{{instance}}")],
              description="1 while a process reaches Redis (commands and pub/sub)"),
        Panel("Bus lag p99", [(p99("herald_bus_lag_seconds"), "publish to gateway")], unit="s"),
        Panel("Redis operation latency p99", [(p99("herald_redis_command_duration_seconds", "command"), "{{command}}")],
              unit="s"),
        Panel("Redis reconnects and outage", [
            (f"sum by (instance) (increase(herald_redis_reconnects_total{{{NS}}}[{RATE}]))", "reconnects {{instance}}"),
            (f"sum by (instance) (rate(herald_redis_outage_seconds_total{{{NS}}}[{RATE}]))",
             "share of time down {{instance}}"),
        ], width=12),
        Panel("Reaper", [
            (f"sum(increase(herald_reaped_nodes_total{{{NS}}}[{RATE}]))", "nodes reaped"),
            (f"sum(increase(herald_reaped_members_total{{{NS}}}[{RATE}]))", "members removed"),
            (f"sum(increase(herald_reaped_users_total{{{NS}}}[{RATE}]))", "users signed out"),
        ], width=12, description="A node reaped is a gateway that died without a clean shutdown"),
    ]),
    Row("Webhooks", [
        Panel("Requests per second by outcome",
              [(f"sum by (outcome) (rate(herald_webhooks_requests_total{{{APP}}}[{RATE}]))", "{{outcome}}")],
              unit="reqps"),
        Panel("Queue by app", [
            (f"max by (app_id) (herald_webhooks_queue_jobs{{{APP}}})", "jobs app {{app_id}}"),
        ], description="Cluster-wide, reported by every process with workers (max, not sum)"),
        Panel("Oldest overdue job", [
            (f"max by (app_id) (herald_webhooks_queue_oldest_age_seconds{{{APP}}})", "oldest overdue app {{app_id}}"),
        ], unit="s"),
        Panel("Request latency p99", [(p99("herald_webhooks_request_duration_seconds"), "p99")], unit="s"),
        Panel("Retries and dropped jobs per second", [
            (f"sum(rate(herald_webhooks_retries_total{{{NS}}}[{RATE}]))", "retries"),
            (f"sum by (reason) (rate(herald_webhooks_dropped_total{{{NS}}}[{RATE}]))", "dropped {{reason}}"),
        ], unit="ops"),
    ]),
    Row("Processes", [
        Panel("Event-loop lag p99", [(p99("herald_event_loop_lag_seconds", "instance"), "{{instance}}")], unit="s"),
        Panel("CPU", [(f"sum by (instance) (rate(process_cpu_seconds_total{{{NS}}}[{RATE}]))", "{{instance}}")],
              unit="percentunit", description="Cores used per process"),
        Panel("Resident memory", [(f"sum by (instance) (process_resident_memory_bytes{{{NS}}})", "{{instance}}")],
              unit="bytes"),
    ]),
]


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
               for i, (expr, legend) in enumerate(panel.exprs)]
    out: dict[str, Any] = {
        "id": pid, "type": panel.kind, "title": panel.title, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    if panel.description:
        out["description"] = panel.description
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area"}
    else:
        out["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal" if panel.stacked else "none"},
                                                    "fillOpacity": 10 if panel.stacked else 0}
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    return out


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": name}, "definition": query, "refresh": 2,
        "includeAll": True, "multi": True, "allValue": ".*", "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    pid = 1
    for row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, pid, x, y))
            pid += 1
            x += panel.width
        y += 8
    return {
        "uid": UID,
        "title": "Herald",
        "description": "Herald (Pusher Channels protocol server): connections, deliveries, HTTP API, bus and "
                       "Redis, webhooks, processes. Metrics: docs/metrics.md in the Herald repository.",
        "tags": ["herald", "pusher", "websocket"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "includeAll": False, "multi": False},
            _variable("namespace", "Namespace", "label_values(herald_event_loop_lag_seconds_count, namespace)"),
            _variable("app_id", "App", "label_values(herald_connections, app_id)"),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a dashboard (panel targets and query variables)."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--write"]:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        return 0
    if argv == ["--check"]:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: python deploy/helm/dashboard.py --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
