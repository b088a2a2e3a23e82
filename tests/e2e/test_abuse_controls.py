"""Abuse controls on real processes (README, "Abuse controls"): the HTTP API's per-app rates held
cluster-wide by two trigger-API processes over one redis-server, 429s with their headers as raw HTTP,
the PyPI and the npm `pusher` SDKs see them; the origin allow-list through pusher-js's real
handshake; the node's connection cap and rate refusing with 4100 while pusher-js backs off.

pusher-js under Node sends no Origin header; the driver (tests/node/driver.mjs) adds one to the
handshakes of a client that names it, through faye-websocket's `headers` option, as a browser would.
Raw `websockets` clients cover handshakes without an Origin header.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pusher
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pusher.errors import PusherBadStatus

from tests.clusterutil import LEASE_S, REAPER_S
from tests.e2e.test_http_api import App
from tests.e2e.test_http_api_node import node_sdk
from tests.e2e.test_ws_connection import assert_no_reconnect, pusher_error_code
from tests.helpers import HeraldProcess, running_herald, start_herald
from tests.pusherjs import NodeDriver
from tests.rawclient import open_raw
from tests.redis_server import RedisServer

pytest_plugins = ["tests.wsfixtures"]

LIMITED = {"id": "21", "key": "key-limited", "secret": "secret-limited",
           "max_backend_events_per_sec": 3, "max_read_req_per_sec": 2}
GUARDED = {"id": "22", "key": "key-guarded", "secret": "secret-guarded",
           "allowed_origins": ["https://app.example.com", "https://*.example.org"]}
OPEN = {"id": "23", "key": "key-open", "secret": "secret-open"}
APPS = [LIMITED, GUARDED, OPEN]


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path_factory.mktemp("abuse"), apps=APPS) as process:
        yield process


def signed(app: dict[str, Any], method: str, path: str, body: bytes = b"") -> str:
    """The query string of a signed request (docs/http-api.md, "Signing")."""
    query = {"auth_key": app["key"], "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
    query["auth_signature"] = hmac.new(app["secret"].encode(), f"{method}\n{path}\n{to_sign}".encode(),
                                       hashlib.sha256).hexdigest()
    return "&".join(f"{k}={v}" for k, v in query.items())


async def trigger(client: httpx.AsyncClient, port: int, app: dict[str, Any], channels: list[str]) -> httpx.Response:
    path = f"/apps/{app['id']}/events"
    body = json.dumps({"name": "e", "data": "{}", "channels": channels}).encode()
    return await client.post(f"http://127.0.0.1:{port}{path}?{signed(app, 'POST', path, body)}", content=body,
                             headers={"Content-Type": "application/json"})


async def read(client: httpx.AsyncClient, port: int, app: dict[str, Any]) -> httpx.Response:
    path = f"/apps/{app['id']}/channels"
    return await client.get(f"http://127.0.0.1:{port}{path}?{signed(app, 'GET', path)}")


async def rate_limited(client: httpx.AsyncClient, port: int, app: dict[str, Any], limit: str) -> float:
    """herald_http_rate_limited_total of the app and limit, from GET /metrics (docs/metrics.md)."""
    scrape = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == "herald_http_rate_limited_total" and sample.labels == {"app_id": app["id"],
                                                                                    "limit": limit}:
                return sample.value
    return 0.0


# -- HTTP API rates -------------------------------------------------------------------------------


async def test_event_rate_counts_channels_and_answers_429_with_headers(herald: HeraldProcess) -> None:
    app = dict(LIMITED, id="31", key="key-31")  # its own bucket: the module's server is shared
    async with running_app(herald, app), httpx.AsyncClient(timeout=10) as client:
        first = await trigger(client, herald.port, app, ["a", "b"])  # 2 points of 3
        assert first.status_code == 200, first.text
        assert first.headers["X-RateLimit-Limit"] == "3" and first.headers["X-RateLimit-Remaining"] in ("0", "1")
        assert "Retry-After" not in first.headers
        refused = await trigger(client, herald.port, app, ["c", "d"])
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["X-RateLimit-Limit"] == "3"
        assert refused.headers["X-RateLimit-Remaining"] in ("0", "1")
        assert int(refused.headers["X-RateLimit-Reset"]) >= 1
        assert refused.json() == {"code": 429, "error": refused.json()["error"]}
        assert "max_backend_events_per_sec" in refused.json()["error"]
        never = await trigger(client, herald.port, app, [f"ch-{i}" for i in range(4)])  # 4 > 3, ever
        assert never.status_code == 429 and "can never pass" in never.json()["error"]
        assert await rate_limited(client, herald.port, app, "events") == 2
        assert await rate_limited(client, herald.port, app, "reads") == 0


async def test_read_rate(herald: HeraldProcess) -> None:
    app = dict(LIMITED, id="32", key="key-32")
    async with running_app(herald, app), httpx.AsyncClient(timeout=10) as client:
        answers = [await read(client, herald.port, app) for _ in range(4)]
        assert [a.status_code for a in answers[:2]] == [200, 200]
        assert answers[0].headers["X-RateLimit-Limit"] == "2"
        assert 429 in [a.status_code for a in answers[2:]]
        refused = next(a for a in answers if a.status_code == 429)
        assert "max_read_req_per_sec" in refused.json()["error"] and int(refused.headers["Retry-After"]) >= 1
        assert await rate_limited(client, herald.port, app, "reads") == [a.status_code for a in answers].count(429)


async def test_unlimited_apps_get_no_rate_headers(herald: HeraldProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await trigger(client, herald.port, OPEN, ["x"])
        assert answer.status_code == 200 and "X-RateLimit-Limit" not in answer.headers


async def test_the_sdks_surface_429(herald: HeraldProcess) -> None:
    app = dict(LIMITED, id="33", key="key-33")
    async with running_app(herald, app):
        sdk = pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"], host="127.0.0.1",
                            port=herald.port, ssl=False, timeout=10)
        statuses = []
        for _ in range(5):
            try:
                await asyncio.to_thread(sdk.trigger, ["one"], "e", {})
                statuses.append(200)
            except PusherBadStatus as exc:  # pusher-http-python: "429: <body>"
                assert str(exc).startswith("429: ") and "max_backend_events_per_sec" in str(exc)
                statuses.append(429)
        assert statuses.count(200) >= 3 and 429 in statuses
        results = await node_sdk("node", herald, App(app["id"], app["key"], app["secret"]),
                                 [{"op": "trigger", "args": [["one"], "e", {}]} for _ in range(5)])
        refused = [r for r in results if not r["ok"]]
        assert refused, results
        assert all(r["status"] == 429 and "max_backend_events_per_sec" in r["body"] for r in refused), refused


async def test_event_rate_holds_across_two_trigger_apis(tmp_path: Path) -> None:
    """Two trigger-API processes over one redis-server together allow at most the app's rate:
    the burst (one second's worth) plus the rate for the time the requests took."""
    limit = 20
    app = {"id": "41", "key": "key-41", "secret": "secret-41", "max_backend_events_per_sec": limit}
    redis = RedisServer(tmp_path).start()
    common = ["--redis-url", redis.url, "--node-lease", str(LEASE_S), "--reaper-interval", str(REAPER_S),
              "--log-level", "warning"]
    apis = [start_herald(tmp_path, apps=[app], command="trigger-api", extra_args=common, name=f"api{i}")
            for i in range(2)]
    try:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=20)) as client:
            async def hammer(api: HeraldProcess) -> list[int]:
                return [(await trigger(client, api.port, app, ["c"])).status_code for _ in range(60)]

            started = time.monotonic()
            results = await asyncio.gather(*(hammer(api) for api in apis for _ in range(2)))
            elapsed = time.monotonic() - started
        statuses = [s for r in results for s in r]
        assert set(statuses) <= {200, 429}, statuses
        accepted = statuses.count(200)
        # Each process alone would let through its own burst plus its own rate: twice this.
        assert limit <= accepted <= limit * (1 + elapsed) + 1, (accepted, elapsed)
        assert all(429 in r for r in results)  # both processes refused once the shared bucket was empty
    finally:
        for api in apis:
            api.stop()
        redis.stop()


# -- origins --------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://eu.shop.example.org"])
async def test_pusherjs_from_an_allowed_origin_connects(herald: HeraldProcess, node: NodeDriver, origin: str) -> None:
    client = await node.connect("a", GUARDED["key"], herald.port, origin=origin)
    await client.subscribe("news")


async def test_pusherjs_from_another_origin_is_refused_and_gives_up(herald: HeraldProcess, node: NodeDriver) -> None:
    client = await node.connect("a", GUARDED["key"], herald.port, origin="https://evil.example", wait=False)
    error = await client.wait_error()
    assert pusher_error_code(error) == 4009, client.history()
    await client.wait_state("disconnected")
    await assert_no_reconnect(client)


@pytest.mark.parametrize("origin", [None, "http://app.example.com", "https://example.org"])
async def test_raw_handshakes_outside_the_allow_list_close_4009(herald: HeraldProcess, origin: str | None) -> None:
    client = await open_raw(herald.port, GUARDED["key"], expect_established=False, origin=origin)
    error = await client.recv()
    assert error == {"event": "pusher:error", "data": {"code": 4009, "message": "Origin not allowed"}}
    assert (await client.closed())[:2] == (4009, "Origin not allowed")


async def test_apps_without_an_allow_list_take_any_origin(herald: HeraldProcess, node: NodeDriver) -> None:
    await node.connect("a", OPEN["key"], herald.port, origin="https://anything.example")
    raw = await open_raw(herald.port, OPEN["key"])  # no Origin header
    await raw.close()


# -- node admission -------------------------------------------------------------------------------


async def test_connection_rate_refuses_with_4100_and_pusherjs_backs_off(tmp_path: Path, node: NodeDriver) -> None:
    with running_herald(tmp_path, apps=[OPEN], extra_args=["--max-node-connection-rate", "2"]) as herald:
        clients = [await node.connect(f"c{i}", OPEN["key"], herald.port, wait=False) for i in range(6)]
        for client in clients:
            await client.wait_state("connected", timeout=30)
        refused = [c for c in clients if any(r["type"] == "error" for r in c.reports)]
        assert refused, "6 connections at once should exceed 2 per second"
        for client in refused:
            codes = [pusher_error_code(r) for r in client.reports if r["type"] == "error"]
            assert set(codes) == {4100}, client.history()
            states = [r["current"] for r in client.reports if r["type"] == "state"]
            # pusher-js waited and tried again (4100: back off), it did not give up.
            assert "disconnected" not in states and states[-1] == "connected", states
        assert 'reason="node_rate"' in metric_lines(herald, "herald_connections_refused")  # docs/metrics.md


async def test_connection_cap_refuses_with_4100_until_a_slot_frees(tmp_path: Path, node: NodeDriver) -> None:
    with running_herald(tmp_path, apps=[OPEN], extra_args=["--max-node-connections", "2"]) as herald:
        first = [await node.connect(f"c{i}", OPEN["key"], herald.port) for i in range(2)]
        waiting = await node.connect("late", OPEN["key"], herald.port, wait=False)
        assert pusher_error_code(await waiting.wait_error()) == 4100, waiting.history()
        await first[0].disconnect()
        await waiting.wait_state("connected", timeout=30)  # its retries went on until a slot was free


# -- helpers --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_app(herald: HeraldProcess, app: dict[str, Any]) -> AsyncIterator[None]:
    """Add an app to the module's server for one test, through its apps file (a reload)."""
    await rewrite_apps(herald, [*APPS, app])
    try:
        yield
    finally:
        await rewrite_apps(herald, APPS)


async def rewrite_apps(herald: HeraldProcess, apps: list[dict[str, Any]]) -> None:
    """Write the apps file and wait until the server serves exactly those apps (its reload log line)."""
    path = next(Path(herald.log_path).parent.glob("herald-apps.json"))
    before = herald.log().count("reloaded")
    path.write_text(json.dumps({"apps": apps}))
    deadline = time.monotonic() + 20
    while herald.log().count("reloaded") == before:
        assert time.monotonic() < deadline, herald.log()
        await asyncio.sleep(0.05)


def metric_lines(herald: HeraldProcess, name: str) -> str:
    text = httpx.get(f"{herald.http_url}/metrics", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))
