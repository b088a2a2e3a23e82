"""A soak: sockets connecting, subscribing (public and presence), leaving and coming back on two
gateways, while events are published, for `size(25, 300)` seconds (scripts/reliability.sh runs the
long form). RSS and open descriptors of every process are sampled throughout.

What must hold: the curves level off (the last third of the run grows no more than a small margin over
the middle third: no leak per connection, subscription or event), and once the churn stops nothing is
left behind (no channel occupied, no member listed, descriptors back near where they started).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusterutil import Cluster, running_cluster, until
from tests.reliability.chaos import Api, Listener, Publisher
from tests.reliability.harness import Curve, procs, size

APP = {"id": "99", "key": "soak-key", "secret": "soak-secret"}
CHANNELS = [f"soak-{i}" for i in range(20)]
ROOMS = [f"presence-soak-{i}" for i in range(5)]
# Growth allowed between the middle and the last third of the run (allocator noise, lazily filled caches).
RSS_MARGIN_KIB = 6 * 1024
FDS_MARGIN = 20


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, [APP], gateways=2) as made:
        yield made


async def churner(cluster: Cluster, n: int, stop: asyncio.Event, stats: dict[str, int]) -> None:
    rng = random.Random(n)
    while not stop.is_set():
        listener = await Listener.open(f"c{n}", rng.choice(cluster.ports), APP["key"])
        try:
            for channel in rng.sample(CHANNELS, 3):
                await listener.subscribe(channel, APP)
            room = rng.choice(ROOMS)
            await listener.subscribe(room, APP, user=f"u{rng.randrange(30)}")
            stats["sessions"] += 1
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            await listener.ws.send(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": room}}))
            await asyncio.sleep(rng.uniform(0.0, 0.2))
        finally:
            await listener.close()


async def test_soak_levels_off_and_leaves_nothing_behind(cluster: Cluster) -> None:
    duration = size(25, 300)
    api = Api(cluster.api.port, APP)
    curves = {p.log_path.name.split("-")[0]: Curve(p.proc.pid) for p in procs(cluster)}
    stop = asyncio.Event()
    stats = {"sessions": 0}
    publisher = Publisher(api, CHANNELS[0], interval_s=0.02).start()
    churners = [asyncio.create_task(churner(cluster, n, stop, stats)) for n in range(size(12, 40))]
    started = time.monotonic()
    try:
        while time.monotonic() - started < duration:
            for curve in curves.values():
                curve.sample()
            await asyncio.sleep(max(1.0, duration / 30))
    finally:
        stop.set()
        await asyncio.gather(*churners, return_exceptions=True)
        await publisher.stop()
    for curve in curves.values():
        curve.sample()

    # Nothing left behind once everyone has gone.
    async def empty() -> bool:
        resp = await api.request("GET", "/channels")
        return resp.status_code == 200 and resp.json()["channels"] == {}

    await until(empty, 20, "every channel to be vacated")
    for room in ROOMS:
        assert await api.user_ids(room) == []
    await api.close()

    report = []
    for name, curve in curves.items():
        samples = curve.samples
        third = max(1, len(samples) // 3)
        middle, last = samples[third:2 * third], samples[2 * third:]
        rss_growth = max(s[1] for s in last) - max(s[1] for s in middle)
        fd_growth = max(s[2] for s in last) - max(s[2] for s in middle)
        report.append(f"{name}: RSS {samples[0][1] / 1024:.0f} -> {samples[-1][1] / 1024:.0f} MB "
                      f"(last third +{rss_growth / 1024:.1f} MB over the middle), fds peak {curve.peak_fds}")
        assert rss_growth <= RSS_MARGIN_KIB, f"{name} still growing: {curve.describe()}"
        assert fd_growth <= FDS_MARGIN, f"{name} descriptors still growing: {curve.describe()}"
    print(f"soak {duration}s: {stats['sessions']} sessions, {len(publisher.acked)} events published; "
          + "; ".join(report))
