"""Redis killed and restarted empty under load (issue 9, defect 5, and the repeated member_added after
the re-sync). What must hold:

* every event the HTTP API answered 200 reaches every subscriber (lost = 0, no duplicates, in order):
  after the restart the API answers 503 until every gateway has re-subscribed and re-synced;
* `/users` never answers 200 with a partial roster (503 until re-synced);
* every subscriber's roster ends equal to `/users`, with no repeated member_added for members it had,
  and a member_removed for the user who left while Redis was away.

Measured: time from the restart to the first 200, 503s answered meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusterutil import Cluster, running_cluster, until
from tests.redis_server import RedisServer
from tests.reliability.chaos import Api, Listener, Publisher, deliveries
from tests.reliability.harness import size

APP = {"id": "92", "key": "restart-key", "secret": "restart-secret"}
FEED, ROOM = "feed", "presence-room"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, [APP]) as made:
        yield made


async def test_redis_killed_and_restarted_empty_loses_no_acknowledged_event(cluster: Cluster) -> None:
    api = Api(cluster.api.port, APP)
    listeners = []
    for i, port in enumerate(cluster.ports * 2):
        listener = await Listener.open(f"l{i}", port, APP["key"])
        await listener.subscribe(FEED, APP)
        await listener.subscribe(ROOM, APP, user=f"user{i}")
        listeners.append(listener)
    leaver = await Listener.open("leaver", cluster.ports[1], APP["key"])
    await leaver.subscribe(ROOM, APP, user="leaver")
    everyone = sorted([*(f"user{i}" for i in range(len(listeners))), "leaver"])
    await until(lambda: users_now(api, everyone), 10, "every member in /users")

    answers: list[tuple[float, int, list[str] | None]] = []

    async def poll_users() -> None:
        while True:
            status, ids = await api.users(ROOM)
            answers.append((time.monotonic(), status, ids))
            await asyncio.sleep(0.05)

    publisher = Publisher(api, FEED).start()
    poller = asyncio.create_task(poll_users())
    await publisher.wait_acked(size(30, 300))
    assert isinstance(cluster.redis, RedisServer)
    cluster.redis.stop(signal.SIGKILL)  # dies at once, as in a crash or an OOM kill
    await leaver.close()  # leaves while Redis is away: nobody can be told yet
    await asyncio.sleep(0.5)
    cluster.redis.start()  # empty: no persistence
    restarted = time.monotonic()
    await publisher.wait_acked(1)
    first_ok = next(t for _, status, t in publisher.answers if status == 200 and t > restarted) - restarted
    await publisher.wait_acked(size(100, 1000))
    await publisher.stop()
    poller.cancel()
    refused = [s for s in publisher.refused if s[1] != 0]

    # Every acknowledged event reached every subscriber, once, in order.
    for listener in listeners:
        await until(lambda li=listener: set(publisher.acked) <= set(li.seqs(FEED)), 10,
                    f"{listener.name} to have every acknowledged event")
    reports = {li.name: deliveries(publisher.acked, li.seqs(FEED)) for li in listeners}
    assert all(r.clean for r in reports.values()), reports

    # /users: 503 or the whole roster, never a partial one.
    after = [u for u in everyone if u != "leaver"]
    partial = [(t - restarted, ids) for t, status, ids in answers if status == 200 and ids not in (everyone, after)]
    assert partial == [], partial

    # Rosters end equal to /users, with no repeated member events.
    final = await api.user_ids(ROOM)
    assert final == after
    for listener in listeners:
        await until(lambda li=listener: li.roster(ROOM)[0] == set(after), 10, f"{listener.name}'s roster")
        assert listener.roster(ROOM)[1] == [], listener.name
    print(f"Redis kill -9 + empty restart: first 200 {first_ok:.2f}s after the restart, "
          f"{len(refused)} publishes answered 503 meanwhile, {len(publisher.acked)} acknowledged, lost 0; "
          f"/users answered {sum(1 for _, s, _ in answers if s == 503)} x 503, 0 partial")
    for listener in listeners:
        await listener.close()
    await api.close()


async def users_now(api: Api, expected: list[str]) -> bool:
    status, ids = await api.users(ROOM)
    return status == 200 and ids == expected
