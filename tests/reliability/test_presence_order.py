"""Users moving between gateways (issue 9, defect 1): a user leaves a presence channel on one gateway
and joins it on another at about the same time, as pusher-js does when it reconnects after a drain.
The old gateway's Redis link is 20 ms slower, so its member_removed is published after the new
gateway's member_added. What must hold: every subscriber's roster ends equal to `/users` (no user
shown as gone while present, no duplicate member_added), whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.authserver import AuthServer
from tests.clusterutil import Cluster, knowing, until, users_of
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import unique
from tests.redis_server import RedisServer
from tests.reliability.harness import size, start_cluster_with_links
from tests.tcpproxy import DelayProxy

pytest_plugins = ["tests.wsfixtures"]

APP = {"id": "91", "key": "move-key", "secret": "move-secret", "max_presence_members_per_channel": 1000}
SLOW_LINK_S = 0.02


@pytest.fixture
async def slow_gw0_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Three gateways and a trigger API; gateway 0 reaches Redis through a 20 ms delaying proxy."""
    redis = RedisServer(tmp_path).start()
    proxy = await DelayProxy(redis.port, SLOW_LINK_S).start()
    slow = f"redis://127.0.0.1:{proxy.port}"
    cluster = await asyncio.to_thread(start_cluster_with_links, tmp_path, redis, [APP],
                                      [slow, redis.url, redis.url])
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)
        await proxy.stop()


def roster_ids(snapshot: dict) -> list[str]:
    return sorted(str(m["id"]) for m in snapshot["list"])


async def test_users_moving_between_gateways_leave_every_roster_equal_to_users(
    slow_gw0_cluster: Cluster, node: NodeDriver, auth_server: AuthServer
) -> None:
    cluster = slow_gw0_cluster
    auth = knowing(auth_server, [APP])
    g = cluster.ports
    channel = unique("presence-move")
    users = [f"u{i}" for i in range(size(50, 200))]

    observers: list[PusherJsClient] = []
    for i, port in enumerate(g):
        auth.set_user(f"obs{i}", f"obs{i}")
        client = await node.connect(f"obs{i}", APP["key"], port, auth=auth)
        await client.subscribe(channel)
        observers.append(client)
    old: list[PusherJsClient] = []
    for user in users:
        auth.set_user(f"{user}-old", user)
        client = await node.connect(f"{user}-old", APP["key"], g[0], auth=auth)
        old.append(client)
    await asyncio.gather(*(c.subscribe(channel, timeout=30) for c in old))
    expected = sorted([*users, *(f"obs{i}" for i in range(len(g)))])
    await until(lambda: users_of(cluster, channel) == expected, 20, "every user in /users")
    for obs in observers:
        await until_roster(obs, channel, expected)

    # Everyone moves: leave on gateway 0, join on gateway 1 or 2 a few milliseconds later (spread over
    # the window in which gateway 0's member_removed is still on its slow way to Redis).
    new: list[PusherJsClient] = []
    for i, user in enumerate(users):
        auth.set_user(f"{user}-new", user)
        new.append(await node.connect(f"{user}-new", APP["key"], g[1 + i % 2], auth=auth))
    started = time.monotonic()

    async def move(i: int) -> None:
        await old[i].disconnect(wait=False)
        await asyncio.sleep((i % 30) * 0.005)
        await new[i].subscribe(channel, timeout=30)

    await asyncio.gather(*(move(i) for i in range(len(users))))
    await until(lambda: users_of(cluster, channel) == expected, 20, "/users after the move")
    for obs in observers:
        await until_roster(obs, channel, expected)
    print(f"{len(users)} users moved; every roster equal to /users {time.monotonic() - started:.1f}s later")
    for obs in observers:
        assert member_event_problems(obs, channel) == []


def member_event_problems(client: PusherJsClient, channel: str) -> list[str]:
    """Replays the member events a client received over its first roster: a member_added for a user it
    already has, or a member_removed for one it doesn't, is a spurious event app code would see."""
    present: set[str] | None = None
    problems = []
    for r in client.reports:
        if r["type"] != "message" or r.get("channel") != channel:
            continue
        if r["event"] == "pusher_internal:subscription_succeeded":
            present = {str(i) for i in r["data"]["presence"]["ids"]}
        elif present is not None and r["event"] == "pusher_internal:member_added":
            user = str(r["data"]["user_id"])
            if user in present:
                problems.append(f"member_added {user} while present")
            present.add(user)
        elif present is not None and r["event"] == "pusher_internal:member_removed":
            user = str(r["data"]["user_id"])
            if user not in present:
                problems.append(f"member_removed {user} while absent")
            present.discard(user)
    return problems


async def until_roster(client: PusherJsClient, channel: str, expected: list[str], timeout: float = 15) -> None:
    last: list[str] = []

    async def equal() -> bool:
        nonlocal last
        last = roster_ids(await client.members(channel))
        return last == expected

    try:
        await until(equal, timeout, f"{client.name}'s roster to equal /users")
    except AssertionError:
        missing = sorted(set(expected) - set(last))
        extra = sorted(set(last) - set(expected))
        raise AssertionError(f"{client.name}'s roster differs from /users: missing {missing}, extra {extra}") from None
