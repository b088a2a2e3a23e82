"""Cluster mode end to end: a real redis-server, three `herald gateway` processes and one
`herald trigger-api`, driven by pusher-js clients spread over the gateways and the PyPI pusher SDK.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pusher
import pusher.errors
import pytest

from shared.protocol.channels import CONSOLE_CONTROL_APP, CONSOLE_CONTROL_CHANNEL
from tests import clusterutil
from tests.authserver import AuthServer
from tests.clusterutil import (
    REAP_DEADLINE_S,
    Cluster,
    knowing,
    running_cluster,
    start_cluster,
    trigger_with_info,
    until,
    users_of,
)
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import open_raw, unique
from tests.redis_server import RedisClusterFixture, RedisServer
from tests.tcpproxy import FailoverProxy

pytest_plugins = ["tests.wsfixtures"]

APP = {"id": "21", "key": "cluster-key", "secret": "cluster-secret", "enable_client_messages": True}
QUOTA_APP = {"id": "22", "key": "quota-key", "secret": "quota-secret", "max_connections": 2}
APPS = [APP, QUOTA_APP]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, APPS) as made:
        yield made


@pytest.fixture
def cluster_auth(auth_server: AuthServer) -> AuthServer:
    return knowing(auth_server, APPS)


async def join_presence(node: NodeDriver, auth: AuthServer, name: str, port: int, user: str,
                        channel: str) -> PusherJsClient:
    return await clusterutil.join_presence(node, auth, name, port, user, channel, APP["key"])


async def test_presence_is_cluster_wide_and_a_user_on_two_nodes_counts_once(
    cluster: Cluster, node: NodeDriver, cluster_auth: AuthServer
) -> None:
    channel = unique("presence-room")
    g = [gw.port for gw in cluster.gateways]
    alice = await join_presence(node, cluster_auth, "alice", g[0], "alice", channel)
    bob = await join_presence(node, cluster_auth, "bob", g[1], "bob", channel)
    added = await alice.wait_event(channel, "pusher:member_added")
    assert added["data"]["id"] == "bob"
    assert (await bob.members(channel))["count"] == 2

    # Alice's second tab on a third node: nobody hears member_added, counts stay at two users.
    alice2 = await join_presence(node, cluster_auth, "alice2", g[2], "alice", channel)
    assert (await alice2.members(channel))["count"] == 2
    await bob.trigger(channel, "client-marker", {"n": 1})
    marker = await alice.next_message()
    assert marker["event"] == "client-marker", f"alice got {marker} instead of the marker"
    info = cluster.sdk().channel_info(channel, ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
    assert users_of(cluster, channel) == ["alice", "bob"]

    # Closing one of alice's tabs removes nobody; closing the last one removes her everywhere.
    await alice.disconnect()
    await alice2.trigger(channel, "client-marker", {"n": 2})
    assert (await bob.next_message())["event"] == "client-marker"
    await alice2.disconnect()
    removed = await bob.wait_event(channel, "pusher:member_removed")
    assert removed["data"]["id"] == "alice"
    assert users_of(cluster, channel) == ["bob"]


async def test_events_client_events_and_exclusion_cross_nodes(
    cluster: Cluster, node: NodeDriver, cluster_auth: AuthServer
) -> None:
    channel = unique("private-chat")
    g = [gw.port for gw in cluster.gateways]
    clients = []
    for i, port in enumerate(g):
        cluster_auth.set_user(f"c{i}", f"user{i}")
        client = await node.connect(f"c{i}", APP["key"], port, auth=cluster_auth)
        await client.subscribe(channel)
        clients.append(client)

    # HTTP event excluding the socket on node 0 reaches nodes 1 and 2 only.
    cluster.sdk().trigger(channel, "news", {"n": 1}, socket_id=clients[0].socket_id)
    for client in clients[1:]:
        got = await client.wait_event(channel, "news")
        assert got["data"] == {"n": 1}
    cluster.sdk().trigger(channel, "news", {"n": 2})
    first = await clients[0].next_message()
    assert first["event"] == "news" and first["data"] == {"n": 2}, f"excluded socket got {first}"

    # A client event from node 2 reaches nodes 0 and 1, not the sender.
    await clients[2].trigger(channel, "client-typing", {"who": "c2"})
    for client in clients[:2]:
        got = await client.wait_event(channel, "client-typing")
        assert got["data"] == {"who": "c2"}
    cluster.sdk().trigger(channel, "news", {"n": 3})
    assert (await clients[2].next_message(skip_liveness=True))["data"] == {"n": 2}


async def test_queries_agree_with_connected_clients(
    cluster: Cluster, node: NodeDriver, cluster_auth: AuthServer
) -> None:
    public = unique("feed")
    presence = unique("presence-q")
    g = [gw.port for gw in cluster.gateways]
    for i in range(4):
        client = await node.connect(f"p{i}", APP["key"], g[i % 3], auth=cluster_auth)
        await client.subscribe(public)
    for i, user in enumerate(["u1", "u2", "u1"]):
        await join_presence(node, cluster_auth, f"q{i}", g[i], user, presence)

    sdk = cluster.sdk()
    assert sdk.channel_info(public, ["subscription_count"]) == {"occupied": True, "subscription_count": 4}
    listed = sdk.channels_info(prefix_filter="presence-", attributes=["user_count"])["channels"]
    assert listed[presence] == {"user_count": 2}
    everything = sdk.channels_info()["channels"]
    assert public in everything and presence in everything
    answer = trigger_with_info(sdk, [public, presence], "e", "x", "user_count,subscription_count")
    assert answer == {"channels": {public: {"subscription_count": 4},
                                   presence: {"user_count": 2, "subscription_count": 3}}}


async def test_connection_quota_holds_across_nodes(cluster: Cluster) -> None:
    g = [gw.port for gw in cluster.gateways]
    first = await open_raw(g[0], QUOTA_APP["key"])
    second = await open_raw(g[1], QUOTA_APP["key"])
    third = await open_raw(g[2], QUOTA_APP["key"], expect_established=False)
    code, _reason, frames = await third.closed()
    assert code == 4004
    assert frames and frames[0]["event"] == "pusher:error" and frames[0]["data"]["code"] == 4004
    await first.close()

    # The slot frees once node 0 has processed the close; a new connection elsewhere then fits.
    async def fits() -> bool:
        client = await open_raw(g[2], QUOTA_APP["key"], expect_established=False)
        msg = await client.recv()
        await client.close()
        return bool(msg["event"] == "pusher:connection_established")

    await until(fits, 10, "the freed connection slot")
    await second.close()


async def test_kill_9_gateway_members_are_reaped_and_clients_fail_over(
    cluster: Cluster, node: NodeDriver, cluster_auth: AuthServer
) -> None:
    channel = unique("presence-k")
    g = [gw.port for gw in cluster.gateways]
    proxy = await FailoverProxy([g[0], g[1], g[2]]).start()
    try:
        # Survivor on node 1; carol only on node 0 (direct); dave on node 0 through the balancer.
        survivor = await join_presence(node, cluster_auth, "survivor", g[1], "survivor", channel)
        carol = await join_presence(node, cluster_auth, "carol", g[0], "carol", channel)
        dave = await join_presence(node, cluster_auth, "dave", proxy.port, "dave", channel)
        for name in ("carol", "dave"):
            got = await survivor.wait_for(
                lambda r, n=name: r.get("event") == "pusher:member_added" and r["data"]["id"] == n,
                what=f"member_added {name}")
            assert got
        assert users_of(cluster, channel) == ["carol", "dave", "survivor"]

        killed_at = time.monotonic()
        cluster.gateways[0].stop(signal.SIGKILL)

        # carol can't come back (her node is gone): the reaper must remove her.
        await survivor.wait_for(
            lambda r: r.get("event") == "pusher:member_removed" and r["data"]["id"] == "carol",
            timeout=REAP_DEADLINE_S, what="member_removed carol")
        reaped_after = time.monotonic() - killed_at
        print(f"member_removed reached the survivor {reaped_after:.1f}s after kill -9 "
              f"(lease {clusterutil.LEASE_S}s, reaper every {clusterutil.REAPER_S}s)")
        # dave reconnects through the balancer to a live node and is back in the channel.
        await dave.wait_state("connected", timeout=REAP_DEADLINE_S)
        await dave.wait_event(channel, "pusher:subscription_succeeded", timeout=REAP_DEADLINE_S)
        await until(lambda: users_of(cluster, channel) == ["dave", "survivor"], REAP_DEADLINE_S,
                    "the HTTP API to drop carol and keep dave")
        info = cluster.sdk().channel_info(channel, ["user_count"])
        assert info["user_count"] == 2
        # Nothing of the dead node stays in Redis.
        r = cluster.redis.client()  # type: ignore[union-attr]
        leftovers = [k.decode() for k in r.keys("*") if b"nodeapps" in k or b":occn:" in k or b":presn:" in k]
        live_ids = {m.decode() for m in r.zrange("herald:nodes", 0, -1)}
        assert all(any(n in k for n in live_ids) for k in leftovers), leftovers
        assert reaped_after < REAP_DEADLINE_S
        # Delivery still works to the failed-over client.
        cluster.sdk().trigger(channel, "after", {"ok": True})
        assert (await dave.wait_event(channel, "after"))["data"] == {"ok": True}
        del carol
    finally:
        await proxy.stop()


async def test_redis_outage_keeps_clients_and_repairs_presence(
    cluster: Cluster, node: NodeDriver, cluster_auth: AuthServer
) -> None:
    channel = unique("presence-outage")
    g = [gw.port for gw in cluster.gateways]
    alice = await join_presence(node, cluster_auth, "alice", g[0], "alice", channel)
    bob = await join_presence(node, cluster_auth, "bob", g[1], "bob", channel)
    carol = await join_presence(node, cluster_auth, "carol", g[2], "carol", channel)
    await alice.wait_for(lambda r: r.get("event") == "pusher:member_added" and r["data"]["id"] == "carol",
                         what="member_added carol")
    sdk = cluster.sdk()

    assert isinstance(cluster.redis, RedisServer)
    cluster.redis.stop()
    # The HTTP API refuses to pretend: 503 with a message while it cannot publish.
    with pytest.raises(pusher.errors.PusherBadStatus) as refused:
        await asyncio.to_thread(sdk.trigger, channel, "lost", {"n": 0})
    assert "503" in str(refused.value)
    # bob leaves while Redis is away; nobody can be told yet.
    await bob.disconnect()

    # Redis comes back empty (no persistence), on the same address.
    cluster.redis.start()

    async def publishes() -> bool:
        try:
            await asyncio.to_thread(sdk.trigger, channel, "probe", {"n": 1})
            return True
        except pusher.errors.PusherError:
            return False

    await until(publishes, 20, "the trigger API to publish again")
    # The gateways re-registered what they hold: bob's leave is reported, the others are back.
    for client in (alice, carol):
        await client.wait_for(lambda r: r.get("event") == "pusher:member_removed" and r["data"]["id"] == "bob",
                              timeout=20, what="member_removed bob after the outage")
    def repaired() -> bool:
        try:
            return users_of(cluster, channel) == ["alice", "carol"]
        except pusher.errors.PusherBadStatus as exc:  # 503 while the cluster re-syncs after the outage
            assert "503" in str(exc), exc
            return False

    await until(repaired, 20, "presence to be repaired")
    # Delivery works again on every node's subscription, and no client was disconnected.
    await asyncio.to_thread(sdk.trigger, channel, "after", {"n": 2})
    for client in (alice, carol):
        got = await client.wait_event(channel, "after", timeout=20)
        assert got["data"] == {"n": 2}
        assert client.state == "connected"
        assert not [r for r in client.reports if r.get("type") == "state" and r.get("current") != "connected"
                    and r.get("previous") == "connected"], client.history()
    for gw in cluster.gateways:
        assert gw.proc.poll() is None, gw.log()
    assert cluster.api.proc.poll() is None


@pytest.fixture
def redis_cluster_herald(tmp_path: Path) -> Iterator[Cluster]:
    redis = RedisClusterFixture(tmp_path).start()
    made = start_cluster(tmp_path, redis, APPS, gateways=2, prefix="hc")
    try:
        yield made
    finally:
        made.stop()


async def test_redis_cluster_sharded_pubsub_and_presence(
    redis_cluster_herald: Cluster, node: NodeDriver, cluster_auth: AuthServer
) -> None:
    cluster = redis_cluster_herald
    g = [gw.port for gw in cluster.gateways]
    channels = [unique(f"presence-shard{i}") for i in range(4)]
    for i, channel in enumerate(channels):
        a = await join_presence(node, cluster_auth, f"a{i}", g[0], f"a{i}", channel)
        await join_presence(node, cluster_auth, f"b{i}", g[1], f"b{i}", channel)
        await a.wait_event(channel, "pusher:member_added")
        assert users_of(cluster, channel) == [f"a{i}", f"b{i}"]
        await asyncio.to_thread(cluster.sdk().trigger, channel, "hello", {"i": i})
        assert (await a.wait_event(channel, "hello"))["data"] == {"i": i}
        assert (await node.clients[f"b{i}"].wait_event(channel, "hello"))["data"] == {"i": i}
    # Fan-out used sharded pub/sub, spread over the masters by topic slot.
    assert isinstance(cluster.redis, RedisClusterFixture)
    shard_topics = []
    for server in cluster.redis.servers:
        client = server.client()
        shard_topics += [t.decode() for t in client.execute_command("PUBSUB", "SHARDCHANNELS", "hc:ev:*")]
        assert client.execute_command("PUBSUB", "CHANNELS", "hc:*") == []
        client.close()
    # Every node also holds the debug console's control topic (docs/console.md), on the shard of its slot.
    control = f"hc:ev:{CONSOLE_CONTROL_APP}:{CONSOLE_CONTROL_CHANNEL}"
    assert sorted(shard_topics) == sorted([control, *(f"hc:ev:{APP['id']}:{c}" for c in channels)])
