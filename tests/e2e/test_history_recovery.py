"""No message lost (docs/history.md): clients with herald-channels-recovery on unmodified pusher-js 8, pusher-js 7
and laravel-echo, spread over a real cluster (redis-server, three `herald gateway`, one `herald
trigger-api`), while numbered events are published at 100 per second. Each scenario disturbs the
clients' connections and then counts, per client, the events missing, duplicated and out of order.

- a network cut (the socket is not closed, it stops carrying anything) of 8 s; 30 s with
  HERALD_LONG_TESTS=1,
- `kill -9` of the gateway the clients are on,
- a rolling restart of every gateway (each drains, is started again, and the next follows),
- a Redis restart that loses the history: the clients must be told `recovered: false`.

Each scenario prints one line per client (received, missing, duplicates, out-of-order, recoveries and
the time from resubscription to the end of recovery): run with -s to see them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pusher.http import GET, Request

from tests.clusterutil import Cluster, restart_gateway, running_cluster, start_cluster
from tests.pusherjs import NodeDriver, node_available
from tests.rawclient import unique
from tests.recovering import BUILDS, Follower, Publisher, Tally, follow, recovery_driver, settle, tally
from tests.redis_server import RedisClusterFixture, RedisServer
from tests.tcpproxy import FailoverProxy

APP: dict[str, Any] = {"id": "31", "key": "history-key", "secret": "history-secret", "history_size": 10_000,
                       "history_ttl_s": 600}
LONG = os.environ.get("HERALD_LONG_TESTS") == "1"
# pusher-js notices a dead connection after activityTimeout without traffic plus pongTimeout.
DEAD_CONNECTION_OPTIONS = {"activityTimeout": 2000, "pongTimeout": 2000}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, [APP]) as made:
        yield made


@pytest.fixture
async def driver() -> AsyncIterator[NodeDriver]:
    reason = node_available()
    if reason:
        pytest.fail(reason)
    async with recovery_driver() as node:
        yield node


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[FailoverProxy]:
    """The clients' way in: the first gateway that accepts, as behind a load balancer."""
    made = await FailoverProxy(cluster.ports, check_ready=True).start()
    try:
        yield made
    finally:
        await made.stop()


async def run_scenario(name: str, cluster: Cluster, driver: NodeDriver, proxy: FailoverProxy,
                       disturb: Callable[[Publisher], Awaitable[None]],
                       builds: tuple[str, ...] = BUILDS) -> tuple[list[Tally], Publisher]:
    """Followers of one channel (one per client build), events at 100/s, `disturb`, then the tally."""
    channel = unique("history-run")
    followers: list[Follower] = []
    for build in builds:
        followers.append(await follow(driver, f"{name}-{build}", build, APP["key"], proxy.port, channel,
                                      DEAD_CONNECTION_OPTIONS))
    publisher = Publisher(cluster.api.port, APP, channel).start()
    try:
        await publisher.wait_published(100)
        for follower in followers:
            await follower.until_seq(publisher.published[-1])
        await disturb(publisher)
        # Events flow again, and every client is past its recovery (if any).
        await publisher.wait_published(200)
        for follower in followers:
            await follower.until_seq(publisher.published[-1], timeout=60)
    finally:
        await publisher.stop()
    await settle(followers, publisher)
    tallies = [tally(f, publisher.published) for f in followers]
    print(f"\n{name}: {len(publisher.published)} events published at 100/s ({len(publisher.refused)} refused, "
          f"{len(publisher.unknown)} without an answer)")
    for t in tallies:
        print(t.line(name))
    return tallies, publisher


def assert_nothing_lost(tallies: list[Tally], publisher: Publisher) -> None:
    assert not publisher.unknown and not publisher.refused, (publisher.unknown, publisher.refused)
    for t in tallies:
        assert (t.missing, t.duplicates, t.out_of_order) == (0, 0, 0), t
        assert t.recoveries, f"{t.build}: no recovery happened (was the connection disturbed?)"
        assert all(ok for ok, _, _ in t.recoveries), t


@pytest.mark.parametrize("seconds", [8, 30], ids=["8s", "30s"])
async def test_network_cut(cluster: Cluster, driver: NodeDriver, proxy: FailoverProxy, seconds: int) -> None:
    if seconds > 10 and not LONG:
        pytest.skip("the 30 s cut runs with HERALD_LONG_TESTS=1 (the 8 s one covers the same path)")

    async def cut(publisher: Publisher) -> None:
        proxy.cut()
        await asyncio.sleep(seconds)  # the length of the outage is what this test is about
        proxy.resume()

    tallies, publisher = await run_scenario(f"network cut {seconds}s", cluster, driver, proxy, cut)
    assert_nothing_lost(tallies, publisher)
    for t in tallies:
        # The gap is the whole outage (100/s), recovered in one go after the resubscription.
        assert any(ok and count >= seconds * 50 for ok, _, count in t.recoveries), t


async def test_gateway_kill_9(cluster: Cluster, driver: NodeDriver, proxy: FailoverProxy) -> None:
    async def kill(publisher: Publisher) -> None:
        # The proxy sends every client to the first gateway.
        await asyncio.to_thread(cluster.gateways[0].stop, signal.SIGKILL)

    tallies, publisher = await run_scenario("gateway kill -9", cluster, driver, proxy, kill)
    assert_nothing_lost(tallies, publisher)


async def test_rolling_restart_of_every_gateway(cluster: Cluster, driver: NodeDriver, proxy: FailoverProxy) -> None:
    async def roll(publisher: Publisher) -> None:
        for index in range(len(cluster.gateways)):
            await asyncio.to_thread(restart_gateway, cluster, index)
            await publisher.wait_published(50)

    # Not pusher-js 7 here: its Node build gives up ("failed") after two connections that closed
    # within 2 x activityTimeout of opening, because its WebSocket library (faye-websocket) reports no
    # `wasClean` on close events (pusher-js 7 counts each as a dead transport; pusher-js 8 does not).
    # In browsers a drain's close is clean. One node death (kill -9 above) it survives.
    tallies, publisher = await run_scenario("rolling restart", cluster, driver, proxy, roll,
                                            builds=("pusher8", "echo"))
    assert_nothing_lost(tallies, publisher)
    for t in tallies:
        assert len(t.recoveries) >= 2, f"{t.build}: moved fewer than twice: {t}"


async def test_redis_restart_loses_history_and_clients_are_told(cluster: Cluster, driver: NodeDriver,
                                                                proxy: FailoverProxy) -> None:
    redis = cluster.redis
    assert isinstance(redis, RedisServer)

    async def restart(publisher: Publisher) -> None:
        await asyncio.to_thread(redis.stop)
        await publisher.wait_refused()
        await asyncio.to_thread(redis.start)  # empty: no persistence

    tallies, _ = await run_scenario("redis restart", cluster, driver, proxy, restart)
    for t in tallies:
        # What is promised here: never a silent gap, and still once and in order. (While Redis is back
        # but not yet reachable by a gateway, the helper is told `unavailable` and asks again.)
        assert any(not ok and reason == "history_lost" for ok, reason, _ in t.recoveries), t
        assert (t.duplicates, t.out_of_order) == (0, 0), t


async def test_on_a_redis_cluster(tmp_path: Path, driver: NodeDriver) -> None:
    """The history script appends and SPUBLISHes in one slot (the stream key's hash tag is the topic):
    channels spread over the masters, a batch across them (one pipelined round trip per master), and a
    recovery after a disconnection."""
    redis = RedisClusterFixture(tmp_path).start()
    cluster = start_cluster(tmp_path, redis, [APP], gateways=2, prefix="hh")
    try:
        channels = [unique(f"history-shard{i}") for i in range(4)]
        followers = [await follow(driver, f"shard{i}", "pusher8", APP["key"], cluster.ports[i % 2], channel)
                     for i, channel in enumerate(channels)]
        sdk = cluster.sdk()

        def batch(seq: int) -> None:
            sdk.trigger_batch([{"channel": c, "name": "seq", "data": json.dumps({"seq": seq})} for c in channels])

        await asyncio.to_thread(batch, 0)
        for follower in followers:
            await follower.until(lambda f=follower: f.seqs() == [0], "the first batch")
        for follower in followers:
            await driver.command("disconnect", client=follower.name)
            await follower.client.wait_state("disconnected")
        for seq in range(1, 6):
            await asyncio.to_thread(batch, seq)
        for follower in followers:
            await driver.command("connect_again", client=follower.name)
        for follower in followers:
            await follower.until(lambda f=follower: bool(f.recoveries()), "the recovery")
            assert follower.seqs() == list(range(6))
            assert [(r["recovered"], r["count"]) for r in follower.recoveries()] == [(True, 5)]
        # Each channel's stream sits on the master where its gateways' shard channel subscription is.
        by_port = {server.port: server for server in redis.servers}
        for channel in channels:
            topic = f"hh:ev:{APP['id']}:{channel}"
            holders = []
            for port, server in by_port.items():
                client = server.client()
                try:
                    if client.execute_command("CLUSTER", "COUNTKEYSINSLOT", client.cluster("KEYSLOT", topic)) > 0:
                        subscribers = client.execute_command("PUBSUB", "SHARDNUMSUB", topic)
                        holders.append((port, int(subscribers[1])))
                finally:
                    client.close()
            assert len(holders) == 1 and holders[0][1] >= 1, (channel, holders)
        assert len({(await asyncio.to_thread(lambda c=c: history_head(cluster, c))) for c in channels}) == 4
    finally:
        cluster.stop()


def history_head(cluster: Cluster, channel: str) -> str:
    """The channel's history over the HTTP API (it holds the six events); its latest position."""
    client = cluster.sdk()._pusher_client
    answer = client.http.send_request(Request(client, GET, f"/apps/{APP['id']}/channels/{channel}/history", {}))
    assert [json.loads(e["data"])["seq"] for e in answer["events"]] == list(range(6))
    return str(answer["position"])
