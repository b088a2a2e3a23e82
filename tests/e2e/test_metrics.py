"""GET /metrics: what an operator's Prometheus scrapes moves with real traffic."""

from __future__ import annotations

import asyncio

import httpx
import pusher
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import HeraldProcess
from tests.rawclient import open_raw, unique

KEY = "key-1"


async def scrape(herald: HeraldProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{herald.http_url}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


async def test_metrics_follow_connections_deliveries_and_api_requests(herald_server: HeraldProcess) -> None:
    app = next(a for a in herald_server.apps if a["key"] == KEY)
    before = await scrape(herald_server)
    channel = unique("metered")
    clients = [await open_raw(herald_server.port, KEY) for _ in range(3)]
    for client in clients:
        await client.subscribe_ok(channel)
    sdk = pusher.Pusher(app_id=app["id"], key=KEY, secret=app["secret"], host="127.0.0.1",
                        port=herald_server.port, ssl=False)
    await asyncio.to_thread(sdk.trigger, channel, "tick", {"n": 1})
    for client in clients:
        await client.expect("tick", channel)
    during = await scrape(herald_server)
    for client in clients:
        await client.close()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return during.get(key, 0.0) - before.get(key, 0.0)

    assert during[("herald_connections", ())] >= 3
    assert delta("herald_connections_opened_total") >= 3
    assert delta("herald_deliveries_total") >= 3
    assert delta("herald_subscriptions_total", result="ok") >= 3
    assert delta("herald_http_requests_total", endpoint="events", status="200") >= 1
    assert delta("herald_http_events_published_total") >= 1
