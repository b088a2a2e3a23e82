"""Chaos under load: a publisher at ~100 events/s and presence members on three gateways while a
gateway is killed, stopped past its lease, or every gateway is restarted in turn.

Each scenario states what must hold and measures it (printed; `pytest -s` or scripts/reliability.sh):
survivors lose no acknowledged event (lost = 0, no duplicates, in order), every subscriber's roster ends
equal to `/users` with no spurious member event on the way, and webhooks come once each (occupied /
vacated and added / removed alternate). The Redis restart is in test_redis_restart.py, users moving
between gateways in test_presence_order.py, the partition in test_partition.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.authserver import AuthServer
from tests.clusterutil import LEASE_S, REAP_DEADLINE_S, REAPER_S, Cluster, knowing, start_cluster, until
from tests.helpers import start_herald
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.redis_server import RedisServer
from tests.reliability.chaos import Api, Listener, Publisher, deliveries, replay_roster, webhook_problems
from tests.reliability.harness import gateway_args, size
from tests.tcpproxy import FailoverProxy
from tests.webhook_receiver import WebhookReceiver

pytest_plugins = ["tests.wsfixtures"]

FEED, ROOM = "feed", "presence-room"
HOOK_EVENTS = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]


def app_config(receiver: WebhookReceiver) -> dict[str, Any]:
    return {"id": "93", "key": "chaos-key", "secret": "chaos-secret",
            "webhooks": [{"url": receiver.url(), "event_types": HOOK_EVENTS}]}


@dataclass
class Scene:
    cluster: Cluster
    app: dict[str, Any]
    api: Api
    receiver: WebhookReceiver
    tmp: Path


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    receiver = WebhookReceiver([]).start()
    app = app_config(receiver)
    receiver.add_app(app)
    cluster = await asyncio.to_thread(start_cluster, tmp_path, RedisServer(tmp_path).start(), [app])
    api = Api(cluster.api.port, app)
    try:
        yield Scene(cluster, app, api, receiver, tmp_path)
    finally:
        await api.close()
        await asyncio.to_thread(cluster.stop)
        receiver.stop()


async def listeners_on(scene: Scene, ports: list[int], prefix: str) -> list[Listener]:
    out = []
    for i, port in enumerate(ports):
        listener = await Listener.open(f"{prefix}{i}", port, scene.app["key"])
        await listener.subscribe(FEED, scene.app)
        await listener.subscribe(ROOM, scene.app, user=f"{prefix}{i}")
        out.append(listener)
    return out


async def assert_rosters_converge(scene: Scene, listeners: list[Listener], expected: list[str]) -> float:
    started = time.monotonic()
    await until(lambda: users_equal(scene.api, expected), REAP_DEADLINE_S, f"/users to be {expected}")
    for listener in listeners:
        await until(lambda li=listener: li.roster(ROOM)[0] == set(expected), REAP_DEADLINE_S,
                    f"{listener.name}'s roster to equal /users")
        assert listener.roster(ROOM)[1] == [], f"{listener.name}: {listener.roster(ROOM)[1]}"
    return time.monotonic() - started


async def users_equal(api: Api, expected: list[str]) -> bool:
    status, ids = await api.users(ROOM)
    return status == 200 and ids == sorted(expected)


def assert_no_loss(publisher: Publisher, listeners: list[Listener]) -> None:
    for listener in listeners:
        report = deliveries(publisher.acked, listener.seqs(FEED))
        assert report.clean, f"{listener.name}: {report}"


async def assert_webhooks_once(scene: Scene, removed: list[str]) -> None:
    for user in removed:
        await scene.receiver.wait_for(
            lambda r, u=user: any(e["name"] == "member_removed" and e.get("user_id") == u for e in r.events()),
            timeout=REAP_DEADLINE_S, what=f"member_removed webhook for {user}")
    assert webhook_problems(scene.receiver) == []
    for user in removed:
        sent = [e for e in scene.receiver.events() if e["name"] == "member_removed" and e.get("user_id") == user]
        assert len(sent) == 1, sent


async def test_gateway_kill_9(scene: Scene, node: NodeDriver, auth_server: AuthServer) -> None:
    """kill -9 of a gateway: survivors lose nothing; its members are reaped within lease + reaper
    interval; its pusher-js clients fail over through a balancer and are back in the roster."""
    g = scene.cluster.ports
    auth = knowing(auth_server, [scene.app])
    survivors = await listeners_on(scene, [g[1], g[2]] * 2, "s")
    victims = await listeners_on(scene, [g[0]] * 2, "v")
    proxy = await FailoverProxy(g).start()
    movers: list[PusherJsClient] = []
    for i in range(2):
        auth.set_user(f"m{i}", f"m{i}")
        client = await node.connect(f"m{i}", scene.app["key"], proxy.port, auth=auth)
        await client.subscribe(ROOM)
        movers.append(client)
    everyone = [li.name for li in survivors + victims] + ["m0", "m1"]
    await assert_rosters_converge(scene, survivors + victims, everyone)
    publisher = Publisher(scene.api, FEED).start()
    try:
        await publisher.wait_acked(size(50, 500))
        killed = time.monotonic()
        scene.cluster.gateways[0].stop(signal.SIGKILL)
        for mover in movers:
            await mover.wait_state("connected", timeout=REAP_DEADLINE_S)
            await mover.wait_event(ROOM, "pusher:subscription_succeeded", timeout=REAP_DEADLINE_S)
        await assert_rosters_converge(scene, survivors, [li.name for li in survivors] + ["m0", "m1"])
        converged = time.monotonic() - killed
        await publisher.wait_acked(size(50, 500))
    finally:
        await publisher.stop()
        await proxy.stop()
    await until(lambda: all(set(publisher.acked) <= set(li.seqs(FEED)) for li in survivors), 10,
                "survivors to have every acknowledged event")
    assert_no_loss(publisher, survivors)
    for mover in movers:
        assert replay_roster(frames_of(mover), ROOM)[1] == []
    await assert_webhooks_once(scene, ["v0", "v1"])
    print(f"kill -9 of a gateway (lease {LEASE_S}s, reaper {REAPER_S}s): rosters equal /users "
          f"{converged:.1f}s after the kill; {len(publisher.acked)} events acknowledged, survivors lost 0; "
          f"member_removed webhooks once")


async def test_gateway_stopped_past_its_lease(scene: Scene) -> None:
    """SIGSTOP longer than the lease: the stopped gateway's members are reaped, then re-added when it
    resumes; its own clients stay connected; survivors lose nothing; all rosters end equal to /users."""
    g = scene.cluster.ports
    survivors = await listeners_on(scene, [g[1], g[2]] * 2, "s")
    sleepers = await listeners_on(scene, [g[0]] * 2, "z")
    everyone = [li.name for li in survivors + sleepers]
    await assert_rosters_converge(scene, survivors + sleepers, everyone)
    publisher = Publisher(scene.api, FEED).start()
    proc = scene.cluster.gateways[0].proc
    try:
        await publisher.wait_acked(size(30, 300))
        stopped = time.monotonic()
        proc.send_signal(signal.SIGSTOP)
        await assert_rosters_converge(scene, survivors, [li.name for li in survivors])
        reaped = time.monotonic() - stopped
        proc.send_signal(signal.SIGCONT)
        converged = await assert_rosters_converge(scene, survivors + sleepers, everyone)
        await publisher.wait_acked(size(30, 300))
    finally:
        proc.send_signal(signal.SIGCONT)
        await publisher.stop()
    await until(lambda: all(set(publisher.acked) <= set(li.seqs(FEED)) for li in survivors), 10,
                "survivors to have every acknowledged event")
    assert_no_loss(publisher, survivors)
    assert all(li.closed is None for li in sleepers)
    assert webhook_problems(scene.receiver) == []
    print(f"SIGSTOP past the lease: members reaped {reaped:.1f}s after the stop, every roster equal to /users "
          f"{converged:.1f}s after SIGCONT; survivors lost 0 of {len(publisher.acked)}; the stopped gateway's "
          f"clients stayed connected")


async def test_rolling_sigterm_of_every_gateway(scene: Scene, node: NodeDriver, auth_server: AuthServer) -> None:
    """Every gateway drained (SIGTERM) and restarted in turn behind a balancer: pusher-js clients
    reconnect elsewhere; no event is missed while a client is subscribed, none twice; rosters end
    equal to /users; member events stay consistent for every client; webhooks alternate."""
    g = scene.cluster.ports
    auth = knowing(auth_server, [scene.app])
    proxy = await FailoverProxy(g, rotate=True).start()
    clients: list[PusherJsClient] = []
    for i in range(size(6, 30)):
        auth.set_user(f"c{i}", f"c{i}")
        client = await node.connect(f"c{i}", scene.app["key"], proxy.port, auth=auth)
        await client.subscribe(FEED)
        await client.subscribe(ROOM)
        clients.append(client)
    everyone = [c.name for c in clients]
    publisher = Publisher(scene.api, FEED).start()
    started = time.monotonic()
    try:
        await publisher.wait_acked(20)
        for i, gw in enumerate(list(scene.cluster.gateways)):
            gw.stop(signal.SIGTERM)  # drains: 4200 to its sockets, which reconnect through the balancer
            scene.cluster.gateways[i] = await asyncio.to_thread(
                lambda port=gw.port, n=i: start_herald(scene.tmp, apps=[scene.app], command="gateway",
                                                      extra_args=gateway_args(scene.cluster.redis.url),
                                                      port=port, name=f"gw{n}-again"))
            await publisher.wait_acked(20)
        for client in clients:
            await until(lambda c=client: c.state == "connected", 20, f"{client.name} connected")
        await until(lambda: users_equal(scene.api, everyone), 20, "/users after the roll")
        for client in clients:
            await until(lambda c=client: roster_ids(c) == sorted(everyone), 20, f"{client.name}'s roster")
        await publisher.wait_acked(20)
    finally:
        await publisher.stop()
        await proxy.stop()
    rolled = time.monotonic() - started
    gaps = 0
    for client in clients:
        frames = frames_of(client)
        assert replay_roster(frames, ROOM)[1] == [], client.name
        segments = subscribed_segments(client)
        received = [f["data"]["n"] for f in frames if f.get("channel") == FEED and f["event"] == "tick"]
        assert len(received) == len(set(received)), f"{client.name}: duplicates"
        for seqs in segments:
            missing = [n for n in publisher.acked if seqs and seqs[0] <= n <= seqs[-1] and n not in set(seqs)]
            assert missing == [], f"{client.name} missed {missing} while subscribed"
        gaps += len(segments) - 1
    assert webhook_problems(scene.receiver) == []
    print(f"rolling SIGTERM of 3 gateways with {len(clients)} pusher-js clients: {gaps} reconnections, "
          f"rosters equal /users, no event missed while subscribed, {len(publisher.acked)} acknowledged, "
          f"{rolled:.1f}s in all")


def frames_of(client: PusherJsClient) -> list[dict[str, Any]]:
    """The frames pusher-js decoded, as the server sent them (data of member events re-encoded)."""
    out = []
    for r in client.reports:
        if r["type"] != "message":
            continue
        frame = {"event": r["event"], "channel": r.get("channel"), "data": r["data"]}
        if r["event"].startswith("pusher_internal:") and not isinstance(r["data"], str):
            frame["data"] = json.dumps(r["data"])
        out.append(frame)
    return out


def roster_ids(client: PusherJsClient) -> list[str]:
    snapshot = None
    for r in reversed(client.reports):
        if r["type"] == "event" and r["channel"] == ROOM and "members" in r:
            snapshot = r["members"]
            break
    return sorted(str(m["id"]) for m in snapshot["list"]) if snapshot else []


def subscribed_segments(client: PusherJsClient) -> list[list[int]]:
    """The client's FEED event numbers split at each reconnection (a new subscription_succeeded)."""
    segments: list[list[int]] = [[]]
    for r in client.reports:
        if r["type"] != "message" or r.get("channel") != FEED:
            continue
        if r["event"] == "pusher_internal:subscription_succeeded":
            segments.append([])
        elif r["event"] == "tick":
            segments[-1].append(r["data"]["n"])
    return [s for s in segments if s]
