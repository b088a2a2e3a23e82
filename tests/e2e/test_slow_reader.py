"""A subscriber that stops reading must not hold up the others or grow the server's memory without
bound: Herald drops it once its unsent backlog passes the per-socket limit."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pusher
from pusher.http import POST, Request

from tests.helpers import running_herald
from tests.rawclient import open_raw, unique

APP = {"id": "41", "key": "slow-key", "secret": "slow-secret"}
EVENT_BYTES = 10_000
BATCHES = 120  # 120 x 10 x 10 kB = 12 MB, three times the 4 MiB per-socket backlog limit


async def test_a_stalled_reader_is_dropped_and_the_others_get_everything(tmp_path: Path) -> None:
    with running_herald(tmp_path, apps=[APP]) as herald:
        channel = unique("firehose")
        fast = await open_raw(herald.port, APP["key"], max_queue=None)
        # max_queue=1: once one message waits unread, the client stops reading the socket, and a small
        # receive buffer makes the TCP back-pressure reach the server quickly.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", herald.port))
        slow = await open_raw(herald.port, APP["key"], max_queue=1, sock=sock)
        for client in (fast, slow):
            await client.subscribe_ok(channel)

        sdk = pusher.Pusher(app_id=APP["id"], key=APP["key"], secret=APP["secret"], host="127.0.0.1",
                            port=herald.port, ssl=False)
        client = sdk._pusher_client
        payload = json.dumps({"blob": "x" * (EVENT_BYTES - 20)})
        received = 0
        total = BATCHES * 10

        async def drain_fast() -> None:
            nonlocal received
            while received < total:
                msg = await fast.recv(timeout=30)
                assert msg["event"] == "big"
                received += 1

        reader = asyncio.create_task(drain_fast())
        for b in range(BATCHES):
            batch = [{"channel": channel, "name": "big", "data": payload} for _ in range(10)]
            await asyncio.to_thread(
                client.http.send_request, Request(client, POST, f"/apps/{APP['id']}/batch_events", {"batch": batch})
            )
            assert not reader.done() or reader.exception() is None, f"fast reader failed after batch {b}"
        await asyncio.wait_for(reader, 60)
        assert received == total

        # The stalled socket was cut off: reading it now ends in a closed connection, not 12 MB of frames.
        frames = 0
        closed = False
        try:
            while frames < total:
                await slow.recv(timeout=10)
                frames += 1
        except Exception:  # the connection was aborted by the server
            closed = True
        assert closed and frames < total, f"the stalled reader got {frames} of {total} frames"

        # The server is still healthy and serving, and says what it did (docs/metrics.md).
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{herald.http_url}/ready")).status_code == 200
            scrape = (await http.get(f"{herald.http_url}/metrics")).text
        assert "herald_slow_reader_disconnects_total 1.0" in scrape.splitlines()
        assert 'herald_connections_closed_total{code="1006"} 1.0' in scrape.splitlines()
        late = await open_raw(herald.port, APP["key"])
        await late.subscribe_ok(unique("after"))
        await late.close()
        await fast.close()
