"""Apps from a database on a real `herald serve` (README, "Apps from a database"): PostgreSQL and
MariaDB with a table in soketi's layout, pusher-js finding apps by key (handshake), the PyPI SDK by id
(HTTP API), and changes to the table reaching the running server within its refresh time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pusher
import pytest
from pusher.errors import PusherBadStatus

from tests.appsdb import KINDS, AppsDatabase, apps_database, soketi_row
from tests.e2e.test_ws_connection import pusher_error_code
from tests.helpers import HeraldProcess, start_herald
from tests.pusherjs import NodeDriver

pytest_plugins = ["tests.wsfixtures"]

REFRESH_S = 1
# The refresh time plus a generous margin for a loaded 2-core machine.
CHANGE_TIMEOUT_S = REFRESH_S + 15


@pytest.fixture(params=KINDS)
async def db(request: pytest.FixtureRequest) -> AsyncIterator[AppsDatabase]:
    async for made in apps_database(request.param):
        await made.insert(soketi_row("71", "db-key", "db-secret", max_connections=100))
        yield made


@pytest.fixture
def herald(db: AppsDatabase, tmp_path: Path) -> Iterator[HeraldProcess]:
    process = start_herald(tmp_path, extra_args=["--apps-db", db.url, "--apps-db-refresh", str(REFRESH_S)])
    try:
        yield process
    finally:
        process.stop()


def sdk(herald: HeraldProcess, app_id: str, key: str, secret: str) -> pusher.Pusher:
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=herald.port, ssl=False,
                         timeout=10)


async def test_handshake_by_key_and_api_by_id(db: AppsDatabase, herald: HeraldProcess, node: NodeDriver) -> None:
    client = await node.connect("a", "db-key", herald.port)
    await client.subscribe("news")
    await asyncio.to_thread(sdk(herald, "71", "db-key", "db-secret").trigger, ["news"], "hello", {"from": db.kind})
    assert (await client.wait_event("news", "hello"))["data"] == {"from": db.kind}
    stranger = await node.connect("s", "no-such-key", herald.port, wait=False)
    assert pusher_error_code(await stranger.wait_error()) == 4001
    with pytest.raises(pusher.errors.PusherError):  # an unknown id: 404
        await asyncio.to_thread(sdk(herald, "999", "k", "s").trigger, ["news"], "x", {})


async def test_changes_in_the_table_reach_the_server(db: AppsDatabase, herald: HeraldProcess, node: NodeDriver) -> None:
    client = await node.connect("a", "db-key", herald.port)
    api = sdk(herald, "71", "db-key", "db-secret")

    # A new app works at once (its key was never looked up before).
    await db.insert(soketi_row("72", "new-key", "new-secret"))
    newcomer = await node.connect("n", "new-key", herald.port)

    # A changed limit applies within the refresh time.
    await db.update("71", max_read_req_per_sec=1)
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while True:
        try:
            for _ in range(3):
                await asyncio.to_thread(api.channels_info)
        except PusherBadStatus as exc:
            assert str(exc).startswith("429: ")
            break
        assert time.monotonic() < deadline, "the read limit never applied"
        await asyncio.sleep(0.2)

    # Disabled and deleted apps: their sockets close with 4003 and 4001.
    await db.update("71", enabled=0)
    await db.delete("72")
    assert pusher_error_code(await client.wait_error(timeout=CHANGE_TIMEOUT_S)) == 4003, client.history()
    assert pusher_error_code(await newcomer.wait_error(timeout=CHANGE_TIMEOUT_S)) == 4001, newcomer.history()
    assert "refreshed" in herald.log()
