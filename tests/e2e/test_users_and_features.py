"""Sign-in, server-to-user events, watchlists, terminate_connections, authorized connections,
presence without channel_data, cache channels and subscription counts, across a cluster: a real
redis-server, three gateways and a trigger API, pusher-js clients on different gateways, the PyPI SDK.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.authserver import AuthMode, AuthServer
from tests.clusterutil import Cluster, knowing, running_cluster, until
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import RawClient, open_raw, unique

pytest_plugins = ["tests.wsfixtures"]

APP = {"id": "31", "key": "feat-key", "secret": "feat-secret", "enable_client_messages": True,
       "enable_subscription_count": True, "cache_ttl_s": 3}
STRICT = {"id": "32", "key": "strict-key", "secret": "strict-secret", "enable_user_authentication": True,
          "user_authentication_timeout_s": 1}
APPS = [APP, STRICT]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, APPS) as made:
        yield made


@pytest.fixture
def auth(auth_server: AuthServer) -> AuthServer:
    return knowing(auth_server, APPS)


async def signed_in(node: NodeDriver, auth: AuthServer, name: str, port: int, user: str,
                    watchlist: list[str] | None = None, info: Any = None) -> PusherJsClient:
    auth.set_user(name, user, info, watchlist)
    client = await node.connect(name, APP["key"], port, auth=auth)
    await client.signin()
    await client.wait_for(lambda r: r.get("type") == "message" and r.get("event") == "pusher:signin_success",
                          what="pusher:signin_success")
    return client


async def raw_signin(cluster: Cluster, raw: RawClient, app: dict[str, Any], user_id: str) -> str:
    """Sign a raw connection in with the PyPI SDK's user authentication."""
    signed = cluster.sdk(app).authenticate_user(raw.socket_id, {"id": user_id})
    await raw.send({"event": "pusher:signin", "data": signed})
    success = await raw.expect("pusher:signin_success")
    assert success["data"]["user_data"] == signed["user_data"]
    return str(signed["user_data"])


def is_user_event(event: str) -> Any:
    return lambda r: r.get("type") == "user_event" and r.get("event") == event


def is_watch(name: str, user: str) -> Any:
    return lambda r: r.get("type") == "watchlist" and r.get("event") == name and user in r["data"]["user_ids"]


async def test_signin_and_server_to_user_events_reach_every_tab_on_every_node(
    cluster: Cluster, node: NodeDriver, auth: AuthServer
) -> None:
    g = cluster.ports
    tab1 = await signed_in(node, auth, "tab1", g[0], "u1")
    tab2 = await signed_in(node, auth, "tab2", g[1], "u1")
    other = await signed_in(node, auth, "other", g[2], "u2")
    success = next(r for r in tab1.reports if r.get("event") == "pusher:signin_success")
    assert json.loads(success["data"]["user_data"]) == {"id": "u1"}
    # pusher-js subscribes to its #server-to-user channel after sign-in; Herald confirms it.
    for client in (tab1, tab2):
        await client.wait_for(lambda r: r.get("type") == "message" and r.get("channel") == "#server-to-user-u1"
                              and r.get("event") == "pusher_internal:subscription_succeeded", what="user channel")

    await asyncio.to_thread(cluster.sdk().send_to_user, "u1", "order-shipped", {"order": 7})
    for client in (tab1, tab2):
        got = await client.wait_for(is_user_event("order-shipped"), what="the user event")
        assert got["data"] == {"order": 7}
    await asyncio.to_thread(cluster.sdk().send_to_user, "u2", "hello", {"to": "u2"})
    got = await other.wait_for(lambda r: r.get("type") == "user_event", what="u2's event")
    assert got["event"] == "hello", f"u2 received {got} (u1's event leaked?)"


async def test_forged_signin_is_refused_and_the_connection_stays(
    cluster: Cluster, node: NodeDriver, auth: AuthServer
) -> None:
    auth.set_user("forger", "victim")
    auth.set_mode("forger", AuthMode.BAD_SIGNATURE)
    client = await node.connect("forger", APP["key"], cluster.ports[0], auth=auth)
    await client.signin()
    error = await client.wait_for(lambda r: r.get("type") == "message" and r.get("event") == "pusher:error",
                                  what="pusher:error")
    assert error["data"]["code"] == 4009
    assert "Sign-in refused" in error["data"]["message"]
    await client.barrier()
    assert client.state == "connected"
    await asyncio.to_thread(cluster.sdk().send_to_user, "victim", "secret", {"x": 1})
    await asyncio.to_thread(cluster.sdk().trigger, "marker-channel", "ignored", {})
    await client.barrier()
    assert not [r for r in client.reports if r.get("type") == "user_event"]


async def test_server_to_user_channel_of_another_user_is_refused(cluster: Cluster) -> None:
    raw = await open_raw(cluster.ports[0], APP["key"])
    await raw_signin(cluster, raw, APP, "alice")
    await raw.send({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-bob", "auth": ""}})
    refused = await raw.expect("pusher:subscription_error", "#server-to-user-bob")
    assert refused["data"]["type"] == "AuthError"
    await raw.send({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-alice", "auth": ""}})
    await raw.expect("pusher_internal:subscription_succeeded", "#server-to-user-alice")
    await raw.close()


async def test_watchlist_online_offline_across_nodes_with_two_tabs(
    cluster: Cluster, node: NodeDriver, auth: AuthServer
) -> None:
    g = cluster.ports
    watcher = await signed_in(node, auth, "watcher", g[0], "w", watchlist=["b", "c"])
    initial = await watcher.wait_for(lambda r: r.get("type") == "watchlist", what="initial watchlist state")
    assert initial["event"] == "offline" and sorted(initial["data"]["user_ids"]) == ["b", "c"]

    b1 = await signed_in(node, auth, "b1", g[1], "b")
    await watcher.wait_for(is_watch("online", "b"), what="b online")
    b2 = await signed_in(node, auth, "b2", g[2], "b")
    await b1.disconnect()
    # b is still signed in on node 2: no offline. Prove the absence with a later user event.
    await asyncio.to_thread(cluster.sdk().send_to_user, "w", "marker", {})
    nxt = await watcher.wait_for(lambda r: r.get("type") in ("watchlist", "user_event"), what="the marker")
    assert nxt["type"] == "user_event", f"watcher got {nxt} before the marker"
    await b2.disconnect()
    await watcher.wait_for(is_watch("offline", "b"), what="b offline after the last tab")

    # A signed-in user's watchlist of more than 100 ids: success, then pusher:error 4302.
    many = [f"x{i}" for i in range(101)]
    big = await signed_in(node, auth, "big", g[1], "big", watchlist=many)
    limit = await big.wait_for(lambda r: r.get("type") == "message" and r.get("event") == "pusher:error",
                               what="4302")
    assert limit["data"]["code"] == 4302


async def test_terminate_connections_closes_that_users_sockets_on_every_node(
    cluster: Cluster, node: NodeDriver, auth: AuthServer
) -> None:
    g = cluster.ports
    targets = [await signed_in(node, auth, f"t{i}", g[i], "target") for i in range(2)]
    bystander = await signed_in(node, auth, "by", g[0], "someone-else")
    anonymous = await node.connect("anon", APP["key"], g[1], auth=auth)

    await asyncio.to_thread(cluster.sdk().terminate_user_connections, "target")
    for client in targets:
        err = await client.wait_for(lambda r: r.get("type") == "message" and r.get("event") == "pusher:error",
                                    what="pusher:error 4009")
        assert err["data"]["code"] == 4009
        await client.wait_for(lambda r: r.get("type") == "state" and r.get("current") != "connected",
                              what="the close")
    for client in (bystander, anonymous):
        await client.barrier()
        assert client.state == "connected"
    # 4009 is final for pusher-js: no reconnect.
    await bystander.barrier()
    for client in targets:
        assert client.state in ("disconnected", "failed", "unavailable"), client.history()
        assert client.state != "connecting"


async def test_authorized_connections_are_required_when_the_app_says_so(cluster: Cluster) -> None:
    port = cluster.ports[0]
    idle = await open_raw(port, STRICT["key"])
    signed = await open_raw(port, STRICT["key"])
    private = await open_raw(port, STRICT["key"])
    await raw_signin(cluster, signed, STRICT, "ok-user")
    await private.subscribe_private(STRICT["key"], STRICT["secret"], "private-ok")

    code, _reason, frames = await idle.closed(timeout=15)
    assert code == 4009
    assert frames and frames[-1]["event"] == "pusher:error" and frames[-1]["data"]["code"] == 4009
    # The other two, opened at the same moment, are past the timeout too and still served.
    for client in (signed, private):
        await client.send({"event": "pusher:ping", "data": {}})
        await client.expect("pusher:pong")
        await client.close()


async def test_presence_without_channel_data_uses_the_signed_in_user(
    cluster: Cluster, node: NodeDriver, auth: AuthServer
) -> None:
    channel = unique("presence-signed")
    g = cluster.ports
    watcher_port, member_port = g[0], g[1]
    auth.set_user("watcher", "someone", {"name": "someone"})
    watcher = await node.connect("watcher", APP["key"], watcher_port, auth=auth)
    await watcher.subscribe(channel)

    member = await signed_in(node, auth, "member", member_port, "u9", info={"name": "Nine"})
    auth.set_mode("member", AuthMode.NO_CHANNEL_DATA)
    await member.subscribe(channel)
    roster = await member.members(channel)
    assert roster["me"] == {"id": "u9", "info": {"name": "Nine"}}
    added = await watcher.wait_event(channel, "pusher:member_added")
    assert added["data"] == {"id": "u9", "info": {"name": "Nine"}}


async def test_cache_channels_replay_miss_and_ttl(cluster: Cluster, node: NodeDriver, auth: AuthServer) -> None:
    channel = unique("cache-news")
    sdk = cluster.sdk()
    empty = await node.connect("empty", APP["key"], cluster.ports[0], auth=auth)
    await empty.subscribe(channel)
    await empty.wait_event(channel, "pusher:cache_miss")

    await asyncio.to_thread(sdk.trigger, channel, "headline", {"n": 1})
    await asyncio.to_thread(sdk.trigger, channel, "headline", {"n": 2})
    late = await node.connect("late", APP["key"], cluster.ports[1], auth=auth)
    await late.subscribe(channel)
    after = await late.next_message()
    assert after["event"] == "headline" and after["data"] == {"n": 2}, f"first frame after success: {after}"
    info = await asyncio.to_thread(sdk.channel_info, channel, ["cache"])
    assert info["cache"]["data"] == json.dumps({"n": 2}) and 0 < info["cache"]["ttl"] <= APP["cache_ttl_s"]

    async def expired() -> bool:
        return (await asyncio.to_thread(sdk.channel_info, channel, ["cache"]))["cache"] is None

    await until(expired, 10, "the cached event to expire")
    again = await node.connect("again", APP["key"], cluster.ports[2], auth=auth)
    await again.subscribe(channel)
    assert (await again.next_message())["event"] == "pusher:cache_miss"


async def test_subscription_count_events(cluster: Cluster, node: NodeDriver, auth: AuthServer) -> None:
    channel = unique("counted")
    g = cluster.ports

    def count_is(n: int) -> Any:
        return lambda r: (r.get("type") == "event" and r.get("event") == "pusher:subscription_count"
                          and r["data"]["subscription_count"] == n)

    a = await node.connect("a", APP["key"], g[0], auth=auth)
    await a.subscribe(channel)
    await a.wait_for(count_is(1), what="count 1")
    b = await node.connect("b", APP["key"], g[1], auth=auth)
    await b.subscribe(channel)
    for client in (a, b):
        await client.wait_for(count_is(2), what="count 2")
    await b.unsubscribe(channel)
    await a.wait_for(count_is(1), what="count back to 1")

    # Never on presence channels.
    presence = unique("presence-nocount")
    auth.set_user("p", "p")
    p = await node.connect("p", APP["key"], g[2], auth=auth)
    await p.subscribe(presence)
    await asyncio.to_thread(cluster.sdk().trigger, presence, "marker", {})
    marker = await p.next_message()
    assert marker["event"] == "marker", f"presence subscriber got {marker} before the marker"

