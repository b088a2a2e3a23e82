"""Hostile clients against one `herald serve` (ping floods, header floods, slowloris and half bodies are
the connection path's: tests of the perf branch). What must hold: the server keeps serving everyone
else, and its memory (RSS from /proc) and open file descriptors stay within stated bounds.

* never-reading clients: each is cut off once 4 MiB are unsent, so memory grows by at most that much
  per such client, and a reading subscriber still gets every event;
* a connection flood: thousands of sockets opened at once all get an answer, cost a bounded amount
  of memory each, and their descriptors are released when they go;
* a subscription flood: one socket asking for 20,000 channels gets the app's cap
  (max_channels_per_connection) and LimitReached for the rest; many sockets at their cap cost a
  bounded amount per subscription.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clusterutil import until
from tests.helpers import HeraldProcess, running_herald
from tests.rawclient import open_raw, unique
from tests.reliability.chaos import Api, Listener
from tests.reliability.harness import open_fds, rss_kib, size
from tests.reliability.rawsocket import RawSocket

APP = {"id": "95", "key": "hostile-key", "secret": "hostile-secret", "max_channels_per_connection": 500}
MIB = 1024
# Unsent bytes after which a socket is cut off (gateway/outbound.py MAX_BUFFERED_BYTES), in KiB.
BACKLOG_LIMIT_KIB = 4 * MIB


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[HeraldProcess]:
    """A fresh server per test, so each measures its own memory from a clean start."""
    with running_herald(tmp_path, apps=[APP]) as server:
        yield server


async def still_serves(herald: HeraldProcess) -> None:
    async with asyncio.timeout(10):
        client = await open_raw(herald.port, APP["key"])
        await client.expect_open()
        await client.close()


async def test_never_reading_clients_are_cut_off_and_memory_stays_bounded(herald: HeraldProcess) -> None:
    pid = herald.proc.pid
    channel = unique("firehose")
    count = size(10, 40)
    reader = await Listener.open("reader", herald.port, APP["key"])
    await reader.subscribe(channel, APP)
    stalled = []
    for _ in range(count):
        sock = await RawSocket.open(herald.port, APP["key"], recv_buffer=16 * 1024)
        assert (await sock.read_frame())["event"] == "pusher:connection_established"
        sock.send({"event": "pusher:subscribe", "data": {"channel": channel}})
        assert (await sock.read_frame())["event"] == "pusher_internal:subscription_succeeded"
        sock.writer.transport.pause_reading()  # and never read again
        stalled.append(sock)
    base_rss, base_fds = rss_kib(pid), open_fds(pid)
    api = Api(herald.port, APP)
    blob = json.dumps({"blob": "x" * 9_000})
    peak = base_rss
    sent = 0
    # 1500 x 9 kB = 13.5 MB each: past what the kernel buffers hold (a few MB) plus the 4 MiB limit.
    for _ in range(size(1500, 5000)):
        status = await api.request("POST", "/events", {"name": "big", "data": blob, "channel": channel})
        assert status.status_code == 200
        sent += 1
        if sent % 100 == 0:
            peak = max(peak, rss_kib(pid))
    growth = peak - base_rss
    await asyncio.sleep(0.5)
    closed = 0
    for sock in stalled:
        closed += await _server_closed(sock)
    await until_received(reader, channel, sent)
    print(f"{count} never-reading clients: RSS +{growth / MIB:.0f} MB at peak (bound {count} x 4 MiB + 64 MB), "
          f"{closed}/{count} cut off, the reading client got all {sent} events")
    assert closed == count
    assert growth < count * BACKLOG_LIMIT_KIB + 64 * MIB
    for sock in stalled:
        sock.close()
    await reader.close()
    await api.close()
    await still_serves(herald)
    assert open_fds(pid) <= base_fds + 2


async def _server_closed(sock: RawSocket) -> bool:
    """Read past the backlog to its end: a cut-off socket ends (the server aborted it)."""
    sock.writer.transport.resume_reading()
    try:
        while True:
            data = await asyncio.wait_for(sock.reader.read(1 << 20), 10)
            if not data:
                return True
    except ConnectionError:
        return True  # reset by the server's abort
    except TimeoutError:
        return False


async def until_received(listener: Listener, channel: str, count: int) -> None:
    def received() -> int:
        return sum(1 for _, f in listener.frames if f.get("channel") == channel and f["event"] == "big")

    await until(lambda: received() >= count, 30, f"{listener.name} to receive {count} events")


async def test_a_connection_flood_is_answered_with_bounded_memory_and_descriptors(herald: HeraldProcess) -> None:
    pid = herald.proc.pid
    count = size(1000, 5000)
    base_rss, base_fds = rss_kib(pid), open_fds(pid)

    async def one() -> RawSocket:
        sock = await RawSocket.open(herald.port, APP["key"])
        frame = await sock.read_frame()
        assert frame is not None and frame["event"] == "pusher:connection_established", frame
        return sock

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, RawSocket)]
    failed = [r for r in results if not isinstance(r, RawSocket)]
    await still_serves(herald)
    rss, fds = rss_kib(pid), open_fds(pid)
    per_conn = (rss - base_rss) / max(len(opened), 1)
    for sock in opened:
        sock.close()
    await asyncio.sleep(1.0)
    after_fds = open_fds(pid)
    print(f"connection flood of {count}: {len(opened)} established, {len(failed)} failed; "
          f"{per_conn:.1f} KiB RSS per connection, fds {base_fds} -> {fds} -> {after_fds} after they left")
    assert failed == []
    assert per_conn < 100, f"{per_conn:.1f} KiB per idle connection"
    assert fds >= base_fds + count - 5  # one descriptor each while open...
    assert after_fds <= base_fds + 5  # ...and none left behind
    await still_serves(herald)


async def test_a_subscription_flood_stops_at_the_cap(herald: HeraldProcess) -> None:
    pid = herald.proc.pid
    base_rss = rss_kib(pid)
    sock = await RawSocket.open(herald.port, APP["key"])
    assert (await sock.read_frame())["event"] == "pusher:connection_established"
    flood = size(20_000, 20_000)
    for i in range(flood):
        sock.send({"event": "pusher:subscribe", "data": {"channel": f"flood-{i}"}})
        if i % 1000 == 0:
            await sock.drain()
    await sock.drain()
    ok = refused = 0
    while ok + refused < flood:
        frame = await sock.read_frame()
        assert frame is not None, "the server closed the flooding socket"
        if frame["event"] == "pusher_internal:subscription_succeeded":
            ok += 1
        elif frame["event"] == "pusher:subscription_error":
            assert frame["data"]["type"] == "LimitReached" and frame["data"]["status"] == 429, frame
            refused += 1
    growth = rss_kib(pid) - base_rss
    sock.send({"event": "pusher:ping", "data": {}})
    assert (await sock.read_frame())["event"] == "pusher:pong"
    print(f"subscription flood of {flood} on one socket: {ok} subscribed (the cap), {refused} refused; "
          f"RSS +{growth / MIB:.1f} MB")
    assert ok == APP["max_channels_per_connection"] and refused == flood - ok
    assert growth < 64 * MIB
    sock.close()

    # Many sockets at the cap: the cost per subscription is bounded.
    await asyncio.sleep(0.5)
    base_rss = rss_kib(pid)
    sockets = []
    for s in range(size(20, 100)):
        sock = await RawSocket.open(herald.port, APP["key"])
        assert (await sock.read_frame())["event"] == "pusher:connection_established"
        for i in range(APP["max_channels_per_connection"]):
            sock.send({"event": "pusher:subscribe", "data": {"channel": f"many-{s}-{i % 250}-{i}"}})
        await sock.drain()
        for _ in range(APP["max_channels_per_connection"]):
            frame = await sock.read_frame()
            assert frame is not None and frame["event"] == "pusher_internal:subscription_succeeded", frame
        sockets.append(sock)
    subscriptions = len(sockets) * APP["max_channels_per_connection"]
    per_sub = (rss_kib(pid) - base_rss) * 1024 / subscriptions
    print(f"{len(sockets)} sockets x {APP['max_channels_per_connection']} channels: {per_sub:.0f} bytes RSS "
          f"per subscription")
    assert per_sub < 4096
    for sock in sockets:
        sock.close()
    await still_serves(herald)

