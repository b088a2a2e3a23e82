"""GET /metrics of real processes after known traffic (docs/metrics.md).

A cluster of a redis-server, one gateway and one trigger API, both serving metrics on their own port
(`--metrics-port`): clients whose every byte is counted (tests/countingclient.py), the PyPI SDK, a
refused handshake, a client event, a terminated user, a normal close; then each scrape must pass
`promtool check metrics` and say exactly what happened (connections, messages and bytes both ways,
deliveries, closes by code, refusals by reason, API requests and their latency counts, webhook
requests), every metric the Grafana dashboard and the alert rules name must be in the scrapes, and
after the test stops Redis both processes report it down.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pusher
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared.protocol.signatures import sign_channel, sign_user
from tests.clusterutil import Cluster, start_cluster, until
from tests.countingclient import CountingClient
from tests.helpers import REPO, HeraldProcess, free_port
from tests.redis_server import RedisServer
from tests.webhook_receiver import WebhookReceiver

APP_A: dict[str, Any] = {"id": "1", "key": "metered-key", "secret": "metered-secret", "enable_client_messages": True}
APP_B: dict[str, Any] = {"id": "2", "key": "other-key", "secret": "other-secret"}
RULES = REPO / "deploy" / "helm" / "herald" / "alerts" / "herald.rules.yaml"
DASHBOARD = REPO / "deploy" / "helm" / "herald" / "dashboards" / "herald.json"
METRIC_NAME_RE = re.compile(r"\b((?:herald|process)_[a-z0-9_]+)\b")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: Samples = {}
        self.families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            if family.type == "counter":
                self.families.add(family.name + "_total")
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
                self.families.add(sample.name)

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(port: int) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return Scrape(resp.text)


def promtool() -> str:
    installer = REPO / "deploy" / "helm" / "install_promtool.py"
    out = subprocess.run([sys.executable, str(installer)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return str(Path(sys.prefix) / "bin" / "promtool")


def promtool_lint(tool: str, text: str) -> str:
    out = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).strip() if out.returncode != 0 or out.stdout.strip() else ""


def referenced_metrics() -> set[str]:
    """Every metric name in the alert rules and the dashboard's expressions."""
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    board = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return {name for expr in exprs for name in METRIC_NAME_RE.findall(expr)}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver([APP_A]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def metered(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[tuple[Cluster, int, int]]:
    """The cluster, the gateway's metrics port and the trigger API's."""
    app_a = {**APP_A, "webhooks": [{"url": receiver.url("/m"), "event_types": ["channel_occupied"]}]}
    redis = RedisServer(tmp_path).start()
    gw_metrics, api_metrics = free_port(), free_port()
    try:
        cluster = start_cluster(tmp_path, redis, [app_a, APP_B], gateways=1,
                                gateway_args=["--metrics-port", str(gw_metrics)],
                                api_args=["--metrics-port", str(api_metrics)])
    except BaseException:
        redis.stop()
        raise
    try:
        yield cluster, gw_metrics, api_metrics
    finally:
        cluster.stop()


def sdk(cluster: Cluster, app: dict[str, Any]) -> pusher.Pusher:
    return cluster.sdk(app)


@pytest.mark.timeout(180)
async def test_scrapes_say_what_the_traffic_did(metered: tuple[Cluster, int, int], receiver: WebhookReceiver) -> None:
    cluster, gw_port, api_port = metered
    gw: HeraldProcess = cluster.gateways[0]
    tool = promtool()
    async with httpx.AsyncClient(timeout=10) as http:
        for process in (gw, cluster.api):  # --metrics-port: not on the public port
            assert (await http.get(f"{process.http_url}/metrics")).status_code == 404
    gw0, api0 = await scrape(gw_port), await scrape(api_port)

    a = [await CountingClient.open(gw.port, APP_A["key"]) for _ in range(3)]
    b = await CountingClient.open(gw.port, APP_B["key"])
    for client in [*a, b]:
        await client.expect("pusher:connection_established")
    sockets = [json.loads(c.received[0]["data"])["socket_id"] for c in a]
    for client in [*a, b]:
        await client.send({"event": "pusher:subscribe", "data": {"channel": "metered"}})
        await client.expect("pusher_internal:subscription_succeeded", "metered")
    for client, socket_id in zip(a[:2], sockets, strict=False):
        auth = sign_channel(APP_A["key"], APP_A["secret"], socket_id, "private-room")
        await client.send({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": auth}})
        await client.expect("pusher_internal:subscription_succeeded", "private-room")
    await a[0].send({"event": "client-hello", "channel": "private-room", "data": {"hi": 1}})
    await a[1].expect("client-hello", "private-room")

    for n in range(2):
        await asyncio.to_thread(sdk(cluster, APP_A).trigger, "metered", "tick", {"n": n})
    await asyncio.to_thread(sdk(cluster, APP_B).trigger, "metered", "tock", {})
    for client in a:
        await client.expect("tick", "metered")
        await client.expect("tick", "metered")
    await b.expect("tock", "metered")
    async with httpx.AsyncClient(timeout=10) as http:  # one refused request: a bad signature
        bad = await http.post(f"{cluster.api.http_url}/apps/1/events?auth_key={APP_A['key']}&auth_timestamp=1"
                              "&auth_version=1.0&auth_signature=0", content=b"{}")
    assert bad.status_code == 401

    # a[2] signs in and the API terminates the user: pusher:error 4009, then close 4009.
    user_data = json.dumps({"id": "u-1"})
    await a[2].send({"event": "pusher:signin", "data": {
        "user_data": user_data, "auth": sign_user(APP_A["key"], APP_A["secret"], sockets[2], user_data)}})
    await a[2].expect("pusher:signin_success")
    await asyncio.to_thread(sdk(cluster, APP_A).terminate_user_connections, "u-1")
    await a[2].expect("pusher:error")
    await a[2].wait_closed()
    assert a[2].close_code == 4009
    await a[0].close()  # the client closes: 1000
    refused = await CountingClient.open(gw.port, "no-such-key")
    await refused.expect("pusher:error")
    await refused.wait_closed()
    assert refused.close_code == 4001

    async def settled() -> bool:
        now = await scrape(gw_port)
        closes = now.get("herald_connections_closed_total", code="4009")
        return now.get("herald_connections", app_id="1") == 1 and closes > gw0.get(
            "herald_connections_closed_total", code="4009")
    await until(settled, 20, "the gateway to count the two closes")

    async def webhooks_sent() -> bool:
        both = [await scrape(gw_port), await scrape(api_port)]
        return sum(s.get("herald_webhooks_requests_total", app_id="1", outcome="ok") for s in both) >= 2
    await until(webhooks_sent, 30, "the channel_occupied webhooks of metered and private-room")

    gw1, api1 = await scrape(gw_port), await scrape(api_port)

    def gw_delta(name: str, **labels: str) -> float:
        return gw1.get(name, **labels) - gw0.get(name, **labels)

    def api_delta(name: str, **labels: str) -> float:
        return api1.get(name, **labels) - api0.get(name, **labels)

    clients = [*a, b, refused]
    # Connections: three of app 1 and one of app 2 opened; one of app 1 left open (a[1]).
    assert gw1.get("herald_connections", app_id="1") == 1 and gw1.get("herald_connections", app_id="2") == 1
    assert gw_delta("herald_connections_opened_total", app_id="1") == 3
    assert gw_delta("herald_connections_opened_total", app_id="2") == 1
    assert gw_delta("herald_connections_closed_total", code="1000") == 1
    assert gw_delta("herald_connections_closed_total", code="4009") == 1
    assert gw_delta("herald_connections_refused_total", reason="app_not_found") == 1
    # Messages: every text frame each side sent; bytes: every byte after the handshake, both ways.
    assert gw_delta("herald_ws_messages_received_total", app_id="1") == sum(c.sent_messages for c in a)
    assert gw_delta("herald_ws_messages_received_total", app_id="2") == b.sent_messages
    assert gw_delta("herald_ws_messages_sent_total", app_id="1") == sum(len(c.received) for c in a)
    assert gw_delta("herald_ws_messages_sent_total", app_id="2") == len(b.received)
    # Every byte after the handshake, both ways (Herald's own WebSocket layer writes every frame).
    assert gw_delta("herald_ws_sent_bytes_total") == sum(c.bytes_in for c in clients)
    received = gw_delta("herald_ws_received_bytes_total")
    sent = sum(c.bytes_out for c in clients)
    # A client's reply to a close the server started may arrive after the server stopped reading.
    assert sent - sum(c.close_reply_bytes for c in clients) <= received <= sent
    # Deliveries: 2 ticks to 3 sockets and the client event to 1 (app 1); 1 tock (app 2).
    assert gw_delta("herald_deliveries_total", app_id="1") == 7
    assert gw_delta("herald_deliveries_total", app_id="2") == 1
    assert gw_delta("herald_client_events_total", app_id="1") == 1
    assert gw_delta("herald_bus_lag_seconds_count") >= 4
    assert gw1.get("herald_channel_subscriptions", type="public") == 2  # a[1] and b in metered
    assert gw1.get("herald_channel_subscriptions", type="private") == 1
    assert gw1.get("herald_channels", type="public") == 2  # metered of app 1 and of app 2
    assert gw_delta("herald_redis_command_duration_seconds_count", command="counts_add") >= 6
    assert gw1.get("herald_redis_up") == 1
    # The HTTP API: 3 triggers, 1 refused, 1 terminate; each timed.
    assert api_delta("herald_http_requests_total", endpoint="events", status="200") == 3
    assert api_delta("herald_http_requests_total", endpoint="events", status="401") == 1
    assert api_delta("herald_http_requests_total", endpoint="terminate_connections", status="200") == 1
    assert api_delta("herald_http_request_duration_seconds_count", endpoint="events") == 4
    assert api_delta("herald_http_request_duration_seconds_count", endpoint="terminate_connections") == 1
    assert api_delta("herald_http_events_published_total", app_id="1") == 2
    assert api_delta("herald_http_events_published_total", app_id="2") == 1
    assert len(receiver.requests("/m")) >= 2
    for s in (gw1, api1):
        assert s.get("herald_event_loop_lag_seconds_count") > 0
        assert s.get("process_resident_memory_bytes") > 0
        assert ("herald_webhooks_queue_jobs", (("app_id", "1"),)) in s.samples

    # Clean for promtool, and every metric the dashboard and the alerts use is there.
    assert promtool_lint(tool, gw1.text) == ""
    assert promtool_lint(tool, api1.text) == ""
    missing = sorted(referenced_metrics() - gw1.families - api1.families)
    assert missing == [], f"the dashboard or the alert rules use metrics no process exports: {missing}"

    # Redis goes away: both processes say so (and still answer scrapes).
    cluster.redis.stop()

    async def redis_down() -> bool:
        return [(await scrape(port)).get("herald_redis_up") for port in (gw_port, api_port)] == [0, 0]
    await until(redis_down, 30, "herald_redis_up 0 on the gateway and the API")
    await b.close()
    await a[1].close()
