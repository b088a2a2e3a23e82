"""Herald over every Redis form it supports, end to end: TLS with a client certificate, a unix socket,
only the documented ACL user, a Redis Cluster over TLS, and Sentinel through a failover. Each runs two
`herald gateway` processes and a `herald trigger-api` with pusher-js clients, the PyPI pusher SDK and
a webhook receiver: delivery across gateways, presence, and webhooks.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher.errors
import pytest
from pusher.http import GET, Request

from shared.redis.acl import acl_rule
from tests.authserver import AuthServer
from tests.clusterutil import Cluster, join_presence, start_cluster, until, users_of
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import unique
from tests.redis_server import RedisClusterFixture, RedisServer, SentinelSetup
from tests.tlscerts import Certs
from tests.webhook_receiver import WebhookReceiver

pytest_plugins = ["tests.wsfixtures"]

HERALD_PASSWORD = "herald-pw:with/odd@chars"
# Failover: the sentinels need 1 s to call the master down, then elect and promote; on a loaded
# 2-core machine that plus the subscribers' back-off can take a while.
FAILOVER_S = 40.0
PROBE_EVERY_S = 0.5


def hook_app(receiver: WebhookReceiver) -> dict[str, Any]:
    # Rate limits far above what the test sends: every API request still runs the Redis limiter. With
    # channel history, events go through the history scripts (and their stream commands) too.
    return {"id": "71", "key": "forms-key", "secret": "forms-secret", "enable_client_messages": True,
            "max_backend_events_per_sec": 1000, "max_read_req_per_sec": 1000, "history_size": 100,
            "webhooks": [{"url": receiver.url("/forms"), "event_types": ["channel_occupied", "member_added",
                                                                        "member_removed"]}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver([]).start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def hooks(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    receiver.reset()
    yield receiver
    receiver.assert_valid(node_checks=2)
    receiver.reset()


@pytest.fixture
def app(receiver: WebhookReceiver, auth_server: AuthServer) -> dict[str, Any]:
    made = hook_app(receiver)
    receiver.add_app(made)
    auth_server.add_app(made)
    return made


def acl_server(tmp: Path) -> RedisServer:
    """Only Herald's documented ACL user (and the test's admin, which only reads the ACL log)."""
    return RedisServer(tmp, acl=[f"user herald {acl_rule('herald', HERALD_PASSWORD)}"], username="herald",
                       password=HERALD_PASSWORD, db=2)


FORMS = {
    "tls": lambda tmp, certs: RedisServer(tmp, tls=certs),
    "unix": lambda tmp, certs: RedisServer(tmp, unix=True, password="unix-pw", config=["requirepass unix-pw"], db=1),
    "acl": lambda tmp, certs: acl_server(tmp),
    # A Redis Cluster over TLS, with only the documented ACL user too.
    "cluster-tls-acl": lambda tmp, certs: RedisClusterFixture(
        tmp, tls=certs, acl=[f"user herald {acl_rule('herald', HERALD_PASSWORD)}"], username="herald",
        password=HERALD_PASSWORD),
}


@pytest.fixture(params=sorted(FORMS))
def deployment(request: pytest.FixtureRequest, tmp_path: Path, redis_certs: Certs, app: dict[str, Any]
               ) -> Iterator[Cluster]:
    redis = FORMS[request.param](tmp_path, redis_certs).start()
    try:
        cluster = start_cluster(tmp_path, redis, [app], gateways=2)
    except BaseException:
        redis.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        if isinstance(redis, RedisServer):
            redis.cleanup()


async def presence_delivery_and_webhooks(cluster: Cluster, node: NodeDriver, auth: AuthServer,
                                         hooks: WebhookReceiver, app: dict[str, Any]) -> list[PusherJsClient]:
    """alice on gateway 0 and bob on gateway 1 share a presence channel: each sees the other, the HTTP
    API lists both, an event from the SDK reaches both, and the receiver gets the webhooks."""
    channel = unique("presence-forms")
    g = cluster.ports
    alice = await join_presence(node, auth, "alice", g[0], "alice", channel, app["key"])
    bob = await join_presence(node, auth, "bob", g[1], "bob", channel, app["key"])
    added = await alice.wait_event(channel, "pusher:member_added")
    assert added["data"]["id"] == "bob"
    assert (await bob.members(channel))["count"] == 2
    assert users_of(cluster, channel) == ["alice", "bob"]
    sdk = cluster.sdk(app)
    await asyncio.to_thread(sdk.trigger, channel, "news", {"n": 1})
    for client in (alice, bob):
        assert (await client.wait_event(channel, "news"))["data"] == {"n": 1}
    # The channel's history (docs/history.md) kept it.
    kept = await asyncio.to_thread(channel_history, sdk, app, channel)
    assert [(e["event"], json.loads(e["data"])) for e in kept["events"]] == [("news", {"n": 1})]
    await bob.trigger(channel, "client-hi", {"from": "bob"})
    assert (await alice.wait_event(channel, "client-hi"))["data"] == {"from": "bob"}
    info = await asyncio.to_thread(sdk.channel_info, channel, ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
    await hooks.wait_events("member_added", channel, count=2)
    await hooks.wait_events("channel_occupied", channel)
    assert sorted(e["user_id"] for e in hooks.events_named("member_added", channel)) == ["alice", "bob"]
    await bob.disconnect()
    removed = await alice.wait_event(channel, "pusher:member_removed")
    assert removed["data"]["id"] == "bob"
    # A cache channel keeps its last event in Redis: a late subscriber on the other gateway gets it.
    cache = unique("cache-forms")
    await asyncio.to_thread(sdk.trigger, cache, "headline", {"n": 3})
    late = await node.connect("late", app["key"], g[1], auth=auth)
    await late.subscribe(cache)
    assert (await late.wait_event(cache, "headline"))["data"] == {"n": 3}
    return [alice]


async def test_redis_form(deployment: Cluster, node: NodeDriver, auth_server: AuthServer,
                          hooks: WebhookReceiver, app: dict[str, Any]) -> None:
    await presence_delivery_and_webhooks(deployment, node, auth_server, hooks, app)
    redis = deployment.redis
    servers = redis.servers if isinstance(redis, RedisClusterFixture) else [redis]
    for server in servers:
        assert isinstance(server, RedisServer)
        if server.acl:
            # Herald never tried anything the ACL forbids (refusals it would have survived silently too).
            with server.admin() as admin:
                denied = [e for e in admin.acl_log() if e.get("username") == "herald"]
            assert denied == [], denied
    if isinstance(redis, RedisClusterFixture):
        # Fan-out used sharded pub/sub over TLS on the masters that own the topics' slots.
        topics = []
        for server in redis.servers:
            with server.admin() as client:
                topics += client.execute_command("PUBSUB", "SHARDCHANNELS", "herald:ev:*")
        assert len(topics) >= 1
    for proc in [*deployment.gateways, deployment.api]:
        assert proc.proc.poll() is None, proc.log()
        facts = ready_facts(proc.port)
        assert facts["ready"] is True and facts["redis"]["up"] is True, facts


def channel_history(sdk: Any, app: dict[str, Any], channel: str) -> Any:
    """GET .../history, signed and sent by the PyPI SDK's own request class."""
    client = sdk._pusher_client
    return client.http.send_request(Request(client, GET, f"/apps/{app['id']}/channels/{channel}/history", {}))


def ready_facts(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as refused:
        body = json.loads(refused.read())
    return body


# -- Sentinel ----------------------------------------------------------------------------------------


async def probe_until_delivered(sdk: Any, channel: str, clients: list[PusherJsClient]) -> None:
    """Trigger "probe" events until every client received one (publishing may fail meanwhile)."""
    deadline = time.monotonic() + FAILOVER_S
    waiting = list(clients)
    n = 0
    while waiting:
        assert time.monotonic() < deadline, f"no probe reached {[c.name for c in waiting]} in {FAILOVER_S}s"
        n += 1
        try:
            await asyncio.to_thread(sdk.trigger, channel, "probe", {"n": n})
        except pusher.errors.PusherError:
            await asyncio.sleep(PROBE_EVERY_S)
            continue
        for client in list(waiting):
            try:
                await client.wait_event(channel, "probe", timeout=PROBE_EVERY_S)
                waiting.remove(client)
            except AssertionError:
                pass


@pytest.fixture(params=["plain", "tls"])
def sentinel_cluster(request: pytest.FixtureRequest, tmp_path: Path, redis_certs: Certs, app: dict[str, Any]
                     ) -> Iterator[Cluster]:
    """Passwords on the data nodes and on the sentinels; with "tls" every connection is TLS
    (rediss+sentinel://) with a client certificate."""
    sentinel = SentinelSetup(tmp_path, tls=redis_certs if request.param == "tls" else None).start()
    try:
        # The default node lease: a failover shorter than it must not look like dead nodes.
        cluster = start_cluster(tmp_path, sentinel, [app], gateways=2, extra_args=["--node-lease", "15"])
    except BaseException:
        sentinel.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_sentinel_failover_delivery_and_presence_recover(
    sentinel_cluster: Cluster, node: NodeDriver, auth_server: AuthServer, hooks: WebhookReceiver,
    app: dict[str, Any]
) -> None:
    cluster = sentinel_cluster
    sentinel = cluster.redis
    assert isinstance(sentinel, SentinelSetup)
    channel = unique("presence-failover")
    g = cluster.ports
    alice = await join_presence(node, auth_server, "alice", g[0], "alice", channel, app["key"])
    bob = await join_presence(node, auth_server, "bob", g[1], "bob", channel, app["key"])
    carol = await join_presence(node, auth_server, "carol", g[1], "carol", channel, app["key"])
    for name in ("bob", "carol"):
        await alice.wait_for(lambda r, n=name: r.get("event") == "pusher:member_added" and r["data"]["id"] == n,
                             what=f"member_added {name}")
    await hooks.wait_events("member_added", channel, count=3)
    sdk = cluster.sdk(app)
    old_master = sentinel.master.port
    sentinel.wait_replicated()

    marks = {client.name: len(client.reports) for client in (alice, bob)}
    sentinel.master.stop(signal.SIGKILL)
    # carol leaves while there is no master; nobody can be told yet.
    await carol.disconnect()
    await until(lambda: sentinel.master_port() != old_master, FAILOVER_S, "the sentinels to promote the replica")
    assert sentinel.master_port() == sentinel.replica.port

    # The trigger API follows the new master; so does every gateway's subscriber. Events published
    # before a subscriber is back are lost (at most once), so probe until each client got one.
    await probe_until_delivered(sdk, channel, [alice, bob])
    await asyncio.to_thread(sdk.trigger, channel, "after", {"n": 2})
    for client in (alice, bob):
        assert (await client.wait_event(channel, "after", timeout=FAILOVER_S))["data"] == {"n": 2}

    # Presence recovers: carol's leave during the failover is reported (whenever the repair ran)...
    for client in (alice, bob):
        client.cursor = marks[client.name]
        await client.wait_for(lambda r: r.get("event") == "pusher:member_removed" and r["data"]["id"] == "carol",
                              timeout=FAILOVER_S, what="member_removed carol after the failover")
    await until(lambda: users_of(cluster, channel) == ["alice", "bob"], FAILOVER_S, "presence to be repaired")
    # ... and a member joining on the new master is seen everywhere.
    await join_presence(node, auth_server, "dave", g[0], "dave", channel, app["key"])
    for client in (alice, bob):
        await client.wait_for(lambda r: r.get("event") == "pusher:member_added" and r["data"]["id"] == "dave",
                              timeout=FAILOVER_S, what="member_added dave on the new master")
    assert users_of(cluster, channel) == ["alice", "bob", "dave"]
    # Nothing else changed for the clients: no live member was removed and re-added on the way.
    for client in (alice, bob):
        changes = [(r["event"], r["data"]["id"]) for r in client.reports[marks[client.name]:]
                   if r.get("type") == "event" and r.get("event", "").startswith("pusher:member_")]
        assert changes == [("pusher:member_removed", "carol"), ("pusher:member_added", "dave")], changes
    # Webhooks are queued and delivered from the new master too.
    await hooks.wait_for(lambda r: "dave" in [e.get("user_id") for e in r.events_named("member_added", channel)],
                         timeout=FAILOVER_S, what="member_added dave webhook")
    await hooks.wait_for(lambda r: "carol" in [e.get("user_id") for e in r.events_named("member_removed", channel)],
                         timeout=FAILOVER_S, what="member_removed carol webhook")

    # Nobody was disconnected, every process stayed ready (a failover is a short outage) and counts it.
    for client in (alice, bob):
        assert client.state == "connected"
        assert not [r for r in client.reports if r.get("type") == "state" and r.get("previous") == "connected"], \
            client.history()
    for proc in [*cluster.gateways, cluster.api]:
        assert ready_facts(proc.port)["ready"] is True
        # "up" once the node's next heartbeat (every lease / 3) has re-synced its records.
        await until(lambda p=proc.port: ready_facts(p)["redis"]["up"], FAILOVER_S, "the node to count Redis up")
        facts = ready_facts(proc.port)["redis"]
        assert facts["reconnects"] >= 1 and facts["outage_seconds_total"] > 0, facts
