"""Channel history on `herald serve` (in memory): recovery with herald-channels-recovery on pusher-js, trimming,
the TTL, the per-app opt-in, and `GET /apps/{id}/channels/{name}/history` through the PyPI and npm
`pusher` SDKs (docs/history.md).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pusher
import pusher.errors
import pytest
from pusher.http import GET, Request

from tests.clusterutil import until
from tests.helpers import REPO, HeraldProcess, running_herald
from tests.pusherjs import NodeDriver, node_available
from tests.rawclient import unique
from tests.recovering import Follower, follow, recovery_driver

KEPT = {"id": "41", "key": "kept-key", "secret": "kept-secret", "history_size": 1000, "history_ttl_s": 600,
        "history_channel_prefixes": ["feed-"]}
SHORT = {"id": "42", "key": "short-key", "secret": "short-secret", "history_size": 5}
FLEETING = {"id": "43", "key": "fleeting-key", "secret": "fleeting-secret", "history_size": 100, "history_ttl_s": 1}
NONE = {"id": "44", "key": "none-key", "secret": "none-secret"}
APPS = [KEPT, SHORT, FLEETING, NONE]
SDK_SCRIPT = REPO / "tests" / "node" / "sdk_trigger.mjs"


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path_factory.mktemp("history"), apps=APPS) as made:
        yield made


@pytest.fixture
async def driver() -> AsyncIterator[NodeDriver]:
    reason = node_available()
    if reason:
        pytest.fail(reason)
    async with recovery_driver() as node:
        yield node


def sdk(herald: HeraldProcess, app: dict[str, Any]) -> pusher.Pusher:
    return pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"], host="127.0.0.1",
                         port=herald.port, ssl=False, timeout=10)


def publish(herald: HeraldProcess, app: dict[str, Any], channel: str, seqs: range) -> None:
    client = sdk(herald, app)
    for seq in seqs:
        client.trigger(channel, "seq", {"seq": seq})


async def away(follower: Follower, driver: NodeDriver) -> None:
    await driver.command("disconnect", client=follower.name)
    await follower.client.wait_state("disconnected")


async def back(follower: Follower, driver: NodeDriver, recoveries: int) -> dict[str, Any]:
    """Reconnect; the recovery outcome that follows."""
    await driver.command("connect_again", client=follower.name)
    await follower.until(lambda: len(follower.recoveries()) >= recoveries, "the recovery outcome")
    return follower.recoveries()[recoveries - 1]


def history(herald: HeraldProcess, app: dict[str, Any], channel: str, **params: str) -> Any:
    """GET .../history through the PyPI SDK's own signing and HTTP (it has no generic `get` method:
    its Request class is how the SDK makes every call)."""
    client = sdk(herald, app)._pusher_client
    return client.http.send_request(Request(client, GET, f"/apps/{app['id']}/channels/{channel}/history", params))


async def test_recovery_in_memory_mode(herald: HeraldProcess, driver: NodeDriver) -> None:
    channel = unique("feed")
    follower = await follow(driver, "mem", "pusher8", KEPT["key"], herald.port, channel)
    await asyncio.to_thread(publish, herald, KEPT, channel, range(0, 3))
    await follower.until(lambda: follower.seqs() == [0, 1, 2], "live events")
    await away(follower, driver)
    await asyncio.to_thread(publish, herald, KEPT, channel, range(3, 30))
    outcome = await back(follower, driver, 1)
    assert (outcome["recovered"], outcome["count"], outcome["cause"]) == (True, 27, "resubscribe")
    await asyncio.to_thread(publish, herald, KEPT, channel, range(30, 31))
    await follower.until(lambda: follower.seqs()[-1:] == [30], "a live event after")
    assert follower.seqs() == list(range(31))


async def test_a_gap_longer_than_the_history_is_not_recovered(herald: HeraldProcess, driver: NodeDriver) -> None:
    channel = unique("trim")
    follower = await follow(driver, "trim", "pusher8", SHORT["key"], herald.port, channel)
    await asyncio.to_thread(publish, herald, SHORT, channel, range(0, 1))
    await follower.until(lambda: follower.seqs() == [0], "a live event")
    await away(follower, driver)
    await asyncio.to_thread(publish, herald, SHORT, channel, range(1, 11))  # 10 > history_size 5
    outcome = await back(follower, driver, 1)
    assert (outcome["recovered"], outcome["reason"]) == (False, "history_lost")
    await asyncio.to_thread(publish, herald, SHORT, channel, range(11, 12))
    await follower.until(lambda: follower.seqs()[-1:] == [11], "live events again")
    assert follower.seqs() == [0, 11]  # nothing of the trimmed gap, nothing twice


async def test_a_history_past_its_ttl_starts_over(herald: HeraldProcess, driver: NodeDriver) -> None:
    channel = unique("ttl")
    follower = await follow(driver, "ttl", "pusher8", FLEETING["key"], herald.port, channel)
    await asyncio.to_thread(publish, herald, FLEETING, channel, range(0, 1))
    await follower.until(lambda: follower.seqs() == [0], "a live event")
    await away(follower, driver)
    first = (await asyncio.to_thread(history, herald, FLEETING, channel))["position"]
    # history_ttl_s is 1: the history is gone a second after its last event.
    await until(lambda: history(herald, FLEETING, channel)["position"] is None, 10, "the history to expire")
    await asyncio.to_thread(publish, herald, FLEETING, channel, range(1, 2))
    again = (await asyncio.to_thread(history, herald, FLEETING, channel))["position"]
    assert again.split("-")[0] != first.split("-")[0] and again.endswith("-1")
    outcome = await back(follower, driver, 1)
    assert (outcome["recovered"], outcome["reason"]) == (False, "history_lost")


@pytest.mark.parametrize(("app", "prefix"), [(NONE, "feed"), (KEPT, "other")], ids=["app without", "other channel"])
async def test_history_is_per_app_and_per_channel_prefix(herald: HeraldProcess, driver: NodeDriver,
                                                         app: dict[str, Any], prefix: str) -> None:
    channel = unique(prefix)
    follower = await follow(driver, f"plain-{app['id']}", "pusher8", app["key"], herald.port, channel)
    await asyncio.to_thread(publish, herald, app, channel, range(0, 1))
    await follower.until(lambda: follower.seqs() == [0], "a live event")
    assert [r["position"] for r in follower.reports("delivery")] == [None]
    await away(follower, driver)
    outcome = await back(follower, driver, 1)
    assert (outcome["recovered"], outcome["reason"]) == (False, "no_history")
    with pytest.raises(pusher.errors.PusherBadStatus) as error:
        await asyncio.to_thread(history, herald, app, channel)
    assert str(error.value).startswith("404: ") and "keeps no history" in str(error.value)


async def test_history_endpoint_through_both_sdks(herald: HeraldProcess) -> None:
    channel = unique("feed")
    await asyncio.to_thread(publish, herald, KEPT, channel, range(0, 5))
    # PyPI SDK.
    latest = await asyncio.to_thread(history, herald, KEPT, channel, limit="3")
    assert [json.loads(e["data"])["seq"] for e in latest["events"]] == [2, 3, 4]
    assert latest["position"] == latest["events"][-1]["position"] and latest["more"] is False
    since = latest["events"][0]["position"]
    page = await asyncio.to_thread(history, herald, KEPT, channel, since=since, limit="1")
    assert [json.loads(e["data"])["seq"] for e in page["events"]] == [3] and page["more"] is True
    # npm SDK: its generic get().
    node = shutil.which("node")
    assert node, "node is required"
    config = {"appId": KEPT["id"], "key": KEPT["key"], "secret": KEPT["secret"], "host": "127.0.0.1",
              "port": herald.port}
    calls = [
        {"op": "get", "args": [{"path": f"/channels/{channel}/history", "params": {"since": since}}]},
        {"op": "get", "args": [{"path": f"/channels/{channel}/history", "params": {"since": "1-1"}}]},
    ]
    proc = await asyncio.create_subprocess_exec(
        node, str(SDK_SCRIPT), json.dumps({"config": config, "calls": calls}), cwd=SDK_SCRIPT.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    after, gone = json.loads(out)
    assert after["ok"] and after["status"] == 200, after
    assert [json.loads(e["data"])["seq"] for e in after["body"]["events"]] == [3, 4]
    assert after["body"]["position"] == latest["position"] and after["body"]["more"] is False
    assert (gone["ok"], gone["status"]) == (False, 410), gone
    assert "no longer in the history" in gone["body"]
