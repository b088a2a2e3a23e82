"""Expected client misbehaviour (issue 9): handled with a clear answer, logged once at INFO, never as
an ERROR with a traceback (log noise anyone could cause), and limits that bound what one socket holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import HeraldProcess, running_herald
from tests.rawclient import raw_connect, unique

APP = {"id": "71", "key": "misb-key", "secret": "misb-secret", "max_channels_per_connection": 3}


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path, apps=[APP], extra_args=["--log-level", "info"]) as server:
        yield server


def requests_counted(herald: HeraldProcess, endpoint: str, status: int) -> float:
    for line in httpx.get(f"{herald.http_url}/metrics").text.splitlines():
        if line.startswith(f'herald_http_requests_total{{endpoint="{endpoint}",status="{status}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_client_leaving_mid_body_is_no_server_error(herald: HeraldProcess) -> None:
    """Not an ERROR with a traceback, not a 500 (as it was): the request never reaches a handler."""
    for path in ("/apps/71/events", "/apps/71/users/u1/terminate_connections"):
        _reader, writer = await asyncio.open_connection("127.0.0.1", herald.port)
        writer.write(f"POST {path}?auth_key=x HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                     "Content-Length: 1000\r\n\r\n{\"name\":".encode())
        await writer.drain()
        writer.close()
    # A request after them is answered: the server carried on.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{herald.http_url}/ready")).status_code == 200
    assert requests_counted(herald, "events", 500) == requests_counted(herald, "terminate_connections", 500) == 0
    log = herald.log()
    assert "Traceback" not in log and " ERROR " not in log, log


async def test_subscriptions_per_connection_are_capped(herald: HeraldProcess) -> None:
    async with raw_connect(herald.port, APP["key"]) as c:
        channels = [unique(f"cap{i}") for i in range(3)]
        for channel in channels:
            await c.subscribe_ok(channel)
        await c.subscribe_ok(channels[0])  # subscribing again to one it has is fine
        extra = unique("cap-extra")
        await c.subscribe(extra)
        msg = await c.expect("pusher:subscription_error", extra)
        assert msg["data"]["type"] == "LimitReached" and msg["data"]["status"] == 429, msg
        assert "3 channels" in msg["data"]["error"]
        await c.send({"event": "pusher:unsubscribe", "data": {"channel": channels[1]}})
        await c.subscribe_ok(extra)
        await c.expect_open()
