"""Webhooks end to end (docs/webhooks.md): a real redis-server, three
`herald gateway` processes and a `herald trigger-api`, pusher-js clients on different gateways, and a
real receiver that checks every request with the PyPI pusher SDK and the first ones with the npm one.

The delay of channel_vacated / member_removed is the real 3 s. "Exactly once" is checked by waiting
for the webhook and then a further QUIET_S in which nothing else for that channel may arrive.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.authserver import AuthServer
from tests.clusterutil import REAP_DEADLINE_S, Cluster, join_presence, start_cluster
from tests.helpers import HeraldProcess, running_herald
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import open_raw, unique
from tests.redis_server import RedisClusterFixture, RedisServer
from tests.webhook_receiver import WebhookReceiver

pytest_plugins = ["tests.wsfixtures"]

ALL_TYPES = ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event",
             "cache_miss", "subscription_count"]
DELAY_S = 3.0
# After the expected webhook arrived, nothing more may arrive for this long (workers poll every 0.2 s).
QUIET_S = 1.5
# The 3 s delay, worker polling and a loaded 2-core machine.
VACATE_TIMEOUT_S = DELAY_S + 7


def webhook_app(receiver: WebhookReceiver, app_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": app_id, "key": f"wh-key-{app_id}", "secret": f"wh-secret-{app_id}", "enable_client_messages": True,
        "webhooks": [
            {"url": receiver.url(f"/all/{app_id}"), "event_types": ALL_TYPES, "headers": {"X-Herald-Test": app_id}},
            {"url": receiver.url(f"/private-occupied/{app_id}"), "event_types": ["channel_occupied"],
             "filter": {"channel_name_starts_with": "private-", "channel_name_ends_with": "-x"}},
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver([]).start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def apps(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    # App 41 keeps channel history (docs/history.md): its channels' events carry positions, and every
    # webhook it causes must still pass both SDKs' validation unchanged.
    made = [webhook_app(receiver, "41", history_size=100), webhook_app(receiver, "42", webhook_batching=True)]
    for app in made:
        receiver.add_app(app)
    return made


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, apps: list[dict[str, Any]]) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("webhooks")
    made = start_cluster(tmp, RedisServer(tmp).start(), apps)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def hooks(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    """The module's receiver, answering 200 with nothing recorded; every request it got in the test
    must pass both SDKs."""
    receiver.reset()
    yield receiver
    receiver.assert_valid()
    receiver.reset()


@pytest.fixture
def auth(auth_server: AuthServer, apps: list[dict[str, Any]]) -> AuthServer:
    for app in apps:
        auth_server.add_app(app)
    return auth_server


def path(app: dict[str, Any], which: str = "all") -> str:
    return f"/{which}/{app['id']}"


def of_channel(receiver: WebhookReceiver, channel: str, app: dict[str, Any], which: str = "all"
               ) -> list[dict[str, Any]]:
    return [e for e in receiver.events(path(app, which)) if e["channel"] == channel]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in events]


async def quiet() -> None:
    await asyncio.sleep(QUIET_S)


async def resubscribed(client: PusherJsClient, channels: list[str]) -> None:
    """Wait for pusher-js's resubscriptions after a reconnect, in whatever order they succeed."""
    waiting = set(channels)
    while waiting:
        report = await client.wait_for(
            lambda r: r.get("type") == "event" and r.get("event") == "pusher:subscription_succeeded"
            and r.get("channel") in waiting, what=f"resubscription to {sorted(waiting)}")
        waiting.discard(report["channel"])


# -- each event type, exactly once ------------------------------------------------------------------


async def test_channel_occupied_and_vacated_once_across_gateways(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    channel = unique("feed")
    g = cluster.ports
    a = await node.connect("a", app["key"], g[0])
    b = await node.connect("b", app["key"], g[1])
    await a.subscribe(channel)
    await b.subscribe(channel)  # second subscriber, other gateway: no second occupied
    await hooks.wait_events("channel_occupied", channel, path=path(app))
    await a.unsubscribe(channel)  # one subscriber left: not vacated
    await a.barrier()
    await b.disconnect()
    left_at = time.time()
    vacated = await hooks.wait_events("channel_vacated", channel, timeout=VACATE_TIMEOUT_S, path=path(app))
    await quiet()
    events = [e for e in of_channel(hooks, channel, app) if e["name"] != "subscription_count"]
    assert events == [{"name": "channel_occupied", "channel": channel}, {"name": "channel_vacated", "channel": channel}]
    request = next(r for r in hooks.accepted(path(app)) if r.events == vacated)
    # 7.4: sent after the 3 s delay, stamped with the time of the leave.
    assert request.at - left_at >= DELAY_S - 0.1
    assert abs(request.time_ms / 1000 - left_at) < 1.0
    assert request.headers["x-herald-test"] == app["id"]
    assert all(len(r.events) == 1 for r in hooks.requests(path(app)))  # no batching for this app
    assert of_channel(hooks, channel, app, "private-occupied") == []  # filtered out


async def test_webhook_channel_filters(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, auth: AuthServer, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    matching, other = unique("private-f") + "-x", unique("private-f") + "-y"
    auth.set_user("f", "fred")
    client = await node.connect("f", app["key"], cluster.ports[0], auth=auth)
    for channel in (matching, other):
        await client.subscribe(channel)
    for channel in (matching, other):
        await hooks.wait_events("channel_occupied", channel, path=path(app))
    await quiet()
    assert names(of_channel(hooks, matching, app, "private-occupied")) == ["channel_occupied"]
    assert of_channel(hooks, other, app, "private-occupied") == []


async def test_member_added_and_removed_once_per_user(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, auth: AuthServer, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    channel = unique("presence-m")
    g = cluster.ports
    alice = await join_presence(node, auth, "alice", g[0], "alice", channel, app["key"])
    alice2 = await join_presence(node, auth, "alice2", g[1], "alice", channel, app["key"])  # second tab
    bob = await join_presence(node, auth, "bob", g[2], "bob", channel, app["key"])
    await hooks.wait_for(lambda r: len(r.events_named("member_added", channel, path(app))) == 2,
                         what="member_added alice and bob")
    await alice.disconnect()  # alice still has a tab: nothing
    await alice2.disconnect()
    left_at = time.time()
    removed = await hooks.wait_events("member_removed", channel, timeout=VACATE_TIMEOUT_S, path=path(app))
    assert time.time() - left_at >= DELAY_S - 0.1
    await quiet()
    members = [(e["name"], e.get("user_id")) for e in of_channel(hooks, channel, app)]
    assert sorted(members) == sorted([("channel_occupied", None), ("member_added", "alice"),
                                      ("member_added", "bob"), ("member_removed", "alice")])
    assert removed == [{"name": "member_removed", "channel": channel, "user_id": "alice"}]
    await bob.disconnect()
    await hooks.wait_events("channel_vacated", channel, timeout=VACATE_TIMEOUT_S, path=path(app))
    await quiet()
    assert names(of_channel(hooks, channel, app)).count("member_removed") == 2
    assert names(of_channel(hooks, channel, app)).count("channel_vacated") == 1


async def test_client_event_once_with_sender_socket_and_user(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, auth: AuthServer, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    private, presence = unique("private-c"), unique("presence-c")
    g = cluster.ports
    auth.set_user("s", "sender-1")
    sender = await node.connect("s", app["key"], g[0], auth=auth)
    listener = await join_presence(node, auth, "l", g[1], "listener", presence, app["key"])
    await sender.subscribe(private)
    await sender.subscribe(presence)
    await listener.subscribe(private)
    await sender.trigger(private, "client-typing", {"who": "s", "n": 1})
    await sender.trigger(presence, "client-moved", "plain string")
    await listener.wait_event(presence, "client-moved")
    got_private = await hooks.wait_events("client_event", private, path=path(app))
    got_presence = await hooks.wait_events("client_event", presence, path=path(app))
    await quiet()
    assert got_private == [{"name": "client_event", "channel": private, "event": "client-typing",
                            "data": {"who": "s", "n": 1}, "socket_id": sender.socket_id}]
    assert got_presence == [{"name": "client_event", "channel": presence, "event": "client-moved",
                             "data": "plain string", "socket_id": sender.socket_id, "user_id": "sender-1"}]
    assert len(hooks.events_named("client_event", private, path(app))) == 1


async def test_cache_miss_once_for_an_empty_cache_channel(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    channel, filled = unique("cache-w"), unique("cache-w")
    a = await node.connect("a", app["key"], cluster.ports[0])
    await a.subscribe(channel)
    await a.wait_event(channel, "pusher:cache_miss")
    got = await hooks.wait_events("cache_miss", channel, path=path(app))
    assert got == [{"name": "cache_miss", "channel": channel}]
    # A channel with a cached event: no cache_miss.
    await asyncio.to_thread(cluster.sdk(app).trigger, filled, "news", {"n": 1})
    b = await node.connect("b", app["key"], cluster.ports[1])
    await b.subscribe(filled)
    await b.wait_event(filled, "news")
    await hooks.wait_events("channel_occupied", filled, path=path(app))
    await quiet()
    assert len(hooks.events_named("cache_miss", channel, path(app))) == 1
    assert hooks.events_named("cache_miss", filled, path(app)) == []


async def test_subscription_count_once_per_change(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    channel = unique("counted")
    g = cluster.ports
    a = await node.connect("a", app["key"], g[0])
    b = await node.connect("b", app["key"], g[1])
    await a.subscribe(channel)
    await hooks.wait_events("subscription_count", channel, path=path(app))
    await b.subscribe(channel)
    await hooks.wait_events("subscription_count", channel, 2, path=path(app))
    await a.unsubscribe(channel)
    counts = await hooks.wait_events("subscription_count", channel, 3, path=path(app))
    await quiet()
    counts = hooks.events_named("subscription_count", channel, path(app))
    assert [e["subscription_count"] for e in counts] == [1, 2, 1], counts
    assert all(set(e) == {"name", "channel", "subscription_count"} for e in counts)


# -- delay and cancel ---------------------------------------------------------------------------


async def test_reconnect_within_three_seconds_sends_nothing(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, auth: AuthServer, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    public, presence = unique("rc"), unique("presence-rc")
    g = cluster.ports
    alice = await join_presence(node, auth, "alice", g[0], "alice", presence, app["key"])
    await alice.subscribe(public)
    await hooks.wait_events("member_added", presence, path=path(app))
    await hooks.wait_events("channel_occupied", public, path=path(app))
    await hooks.wait_events("channel_occupied", presence, path=path(app))

    # pusher-js drops the connection and comes back on the same gateway, resubscribing.
    await alice.disconnect()
    await alice.reconnect()
    await resubscribed(alice, [presence, public])
    # The same user leaves gw0 and arrives on gw1 within the delay (another process, other socket).
    await alice.disconnect()
    moved = await join_presence(node, auth, "alice-moved", g[1], "alice", presence, app["key"])
    await moved.subscribe(public)
    await asyncio.sleep(DELAY_S + 2 * QUIET_S)
    events = [e for e in of_channel(hooks, public, app) + of_channel(hooks, presence, app)
              if e["name"] != "subscription_count"]
    assert sorted(names(events)) == ["channel_occupied", "channel_occupied", "member_added"], events


async def test_leaving_for_longer_than_three_seconds_sends_both(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    channel = unique("away")
    a = await node.connect("a", app["key"], cluster.ports[0])
    await a.subscribe(channel)
    await hooks.wait_events("channel_occupied", channel, path=path(app))
    await a.disconnect()
    await hooks.wait_events("channel_vacated", channel, timeout=VACATE_TIMEOUT_S, path=path(app))
    await a.reconnect()
    await a.wait_event(channel, "pusher:subscription_succeeded")
    await hooks.wait_events("channel_occupied", channel, 2, path=path(app))
    await quiet()
    events = [e for e in of_channel(hooks, channel, app) if e["name"] != "subscription_count"]
    assert names(events) == ["channel_occupied", "channel_vacated", "channel_occupied"]


# -- retries and batching ---------------------------------------------------------------------------


async def test_deliveries_are_retried_after_the_receiver_answered_500(
    cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    channel = unique("retry")
    hooks.fail_for(4.5)
    a = await node.connect("a", app["key"], cluster.ports[2])
    await a.subscribe(channel)
    subscribed_at = time.time()
    # Attempts at about 0, 1, 3 s fail; the one at about 7 s succeeds.
    await hooks.wait_events("channel_occupied", channel, timeout=20, path=path(app))
    await quiet()
    tries = [r for r in hooks.requests(path(app)) if r.events[0]["channel"] == channel
             and r.events[0]["name"] == "channel_occupied"]
    assert [r.status for r in tries] == [500, 500, 500, 200], [(r.status, r.at - subscribed_at) for r in tries]
    gaps = [round(b.at - a.at, 1) for a, b in itertools.pairwise(tries)]
    assert 0.8 <= gaps[0] <= 1.8 and 1.8 <= gaps[1] <= 2.8 and 3.8 <= gaps[2] <= 4.8, gaps
    # The same request every time: creation time and signature unchanged.
    assert len({r.body for r in tries}) == 1 and len({r.headers["x-pusher-signature"] for r in tries}) == 1
    assert abs(tries[0].time_ms / 1000 - subscribed_at) < 1.0


async def test_batching_app_gets_several_events_per_request(
    cluster: Cluster, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[1]
    channel = unique("private-b")
    # A raw client writes the five frames back to back, so they reach the gateway within one batching
    # window whatever the machine's load (pusher-js through the driver paces them one round trip apart).
    sender = await open_raw(cluster.ports[0], app["key"])
    await sender.subscribe_private(app["key"], app["secret"], channel)
    for i in range(5):
        await sender.send({"event": "client-burst", "channel": channel, "data": {"i": i}})
    await hooks.wait_for(lambda r: len(r.events_named("client_event", channel, path(app))) == 5,
                         what="5 client events")
    await quiet()
    burst = hooks.events_named("client_event", channel, path(app))
    assert sorted(e["data"]["i"] for e in burst) == list(range(5))
    requests = [r for r in hooks.requests(path(app)) if any(e["name"] == "client_event" for e in r.events)]
    assert len(requests) < 5, [r.events for r in requests]  # several in one request
    assert all(r.accepted for r in requests)
    await sender.close()


# -- surviving the producer ------------------------------------------------------------------------


@pytest.fixture
def own_cluster(tmp_path: Path, apps: list[dict[str, Any]]) -> Iterator[Cluster]:
    made = start_cluster(tmp_path, RedisServer(tmp_path).start(), apps)
    try:
        yield made
    finally:
        made.stop()


async def test_webhooks_of_a_gateway_killed_with_kill_9_arrive(
    own_cluster: Cluster, node: NodeDriver, hooks: WebhookReceiver, auth: AuthServer, apps: list[dict[str, Any]]
) -> None:
    cluster, app = own_cluster, apps[0]
    g = cluster.ports
    presence, solo, pending = unique("presence-k"), unique("solo"), unique("pending")
    survivor = await join_presence(node, auth, "survivor", g[1], "survivor", presence, app["key"])
    carol = await join_presence(node, auth, "carol", g[0], "carol", presence, app["key"])
    await carol.subscribe(solo)  # only carol, only on gateway 0
    await hooks.wait_events("channel_occupied", solo, path=path(app))
    await hooks.wait_for(lambda r: len(r.events_named("member_added", presence, path(app))) == 2,
                         what="member_added survivor and carol")

    # Gateway 2 queues a channel_vacated (due in 3 s) and dies before it is due: the job is in Redis
    # and another process delivers it.
    dave = await node.connect("dave", app["key"], g[2])
    await dave.subscribe(pending)
    await hooks.wait_events("channel_occupied", pending, path=path(app))
    await dave.unsubscribe(pending)
    await hooks.wait_for(
        lambda r: any(e["subscription_count"] == 0 for e in r.events_named("subscription_count", pending, path(app))),
        what="subscription_count 0 (the leave was handled and its vacate queued)")
    cluster.gateways[2].stop(signal.SIGKILL)
    await hooks.wait_events("channel_vacated", pending, timeout=VACATE_TIMEOUT_S, path=path(app))

    # Gateway 0 dies with carol on it: the reaper (lease 3 s, every 1 s) produces her member_removed
    # and the vacate of her solo channel, delivered after the 3 s delay by the survivors' workers.
    killed_at = time.time()
    cluster.gateways[0].stop(signal.SIGKILL)
    deadline = REAP_DEADLINE_S + DELAY_S + 5
    removed = await hooks.wait_events("member_removed", presence, timeout=deadline, path=path(app))
    await hooks.wait_events("channel_vacated", solo, timeout=deadline, path=path(app))
    assert time.time() - killed_at >= DELAY_S
    await survivor.wait_for(lambda r: r.get("event") == "pusher:member_removed" and r["data"]["id"] == "carol",
                            what="member_removed carol on the survivor")
    await quiet()
    assert removed == [{"name": "member_removed", "channel": presence, "user_id": "carol"}]
    for channel in (solo, pending):
        events = [e for e in of_channel(hooks, channel, app) if e["name"] != "subscription_count"]
        assert names(events) == ["channel_occupied", "channel_vacated"], (channel, events)
    assert names(of_channel(hooks, presence, app)).count("member_removed") == 1
    assert "channel_vacated" not in names(of_channel(hooks, presence, app))  # the survivor is still there
    del carol


# -- other deployments -----------------------------------------------------------------------------


async def test_redis_cluster_queue(
    tmp_path: Path, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    redis = RedisClusterFixture(tmp_path).start()
    cluster = start_cluster(tmp_path, redis, apps, gateways=2, prefix="whc")
    try:
        app = apps[0]
        channels = [unique(f"shard{i}") for i in range(3)]
        client = await node.connect("a", app["key"], cluster.ports[0])
        for channel in channels:
            await client.subscribe(channel)
        await client.disconnect()
        for channel in channels:
            await hooks.wait_events("channel_vacated", channel, timeout=VACATE_TIMEOUT_S, path=path(app))
        await quiet()
        for channel in channels:
            events = [e for e in of_channel(hooks, channel, app) if e["name"] != "subscription_count"]
            assert names(events) == ["channel_occupied", "channel_vacated"]
    finally:
        cluster.stop()


@pytest.fixture
def serve(tmp_path: Path, apps: list[dict[str, Any]]) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path, apps=apps, extra_args=["--log-level", "warning"]) as herald:
        yield herald


async def test_in_memory_serve_delivers_and_cancels(
    serve: HeraldProcess, node: NodeDriver, hooks: WebhookReceiver, apps: list[dict[str, Any]]
) -> None:
    app = apps[0]
    kept, left = unique("mem"), unique("mem")
    a = await node.connect("a", app["key"], serve.port)
    b = await node.connect("b", app["key"], serve.port)
    await a.subscribe(kept)
    await b.subscribe(left)
    await hooks.wait_events("channel_occupied", kept, path=path(app))
    await hooks.wait_events("channel_occupied", left, path=path(app))
    await a.disconnect()
    await a.reconnect()  # back within the delay
    await a.wait_event(kept, "pusher:subscription_succeeded")
    await b.disconnect()
    await hooks.wait_events("channel_vacated", left, timeout=VACATE_TIMEOUT_S, path=path(app))
    await asyncio.sleep(DELAY_S)
    assert names([e for e in of_channel(hooks, kept, app) if e["name"] != "subscription_count"]) == [
        "channel_occupied"]
