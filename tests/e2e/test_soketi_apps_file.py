"""A soketi config file with every field of soketi's app schema starts Herald (README, "Moving from
soketi"): camelCase keys (its JSON config), PascalCase (its DynamoDB items), snake_case (its SQL
columns, with NULLs), its server settings and a Lambda webhook warned about, one log line each,
and every mapped field doing what it says, seen through pusher-js, the PyPI SDK and a webhook
receiver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pusher
import pytest
from pusher.errors import PusherBadRequest, PusherBadStatus

from tests.authserver import AuthServer
from tests.clusterutil import knowing
from tests.e2e.test_ws_connection import pusher_error_code
from tests.helpers import HeraldProcess, free_port, start_herald
from tests.pusherjs import NodeDriver
from tests.rawclient import unique
from tests.soketi_apps import SQL_COLUMNS, camel_app, pascal_app
from tests.webhook_receiver import WebhookReceiver

pytest_plugins = ["tests.wsfixtures"]

CAMEL = {"id": "81", "key": "camel-key", "secret": "camel-secret"}
PASCAL = {"id": "82", "key": "pascal-key", "secret": "pascal-secret"}
SNAKE = {"id": "83", "key": "snake-key", "secret": "snake-secret"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver([CAMEL]).start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver) -> Iterator[HeraldProcess]:
    tmp = tmp_path_factory.mktemp("soketi")
    snake = dict.fromkeys(SQL_COLUMNS)  # NULL everywhere but the credentials, as soketi allows
    snake.update(SNAKE)
    config = {
        "debug": True,
        "port": free_port(),
        "appManager.array.apps": [
            camel_app(CAMEL["id"], CAMEL["key"], CAMEL["secret"], receiver.url()),
            pascal_app(PASCAL["id"], PASCAL["key"], PASCAL["secret"]),
            snake,
        ],
    }
    path = tmp / "soketi-config.json"
    path.write_text(json.dumps(config))
    process = start_herald(tmp, extra_args=["--apps-file", str(path)])
    try:
        yield process
    finally:
        process.stop()


def sdk(herald: HeraldProcess, app: dict[str, str]) -> pusher.Pusher:
    return pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"], host="127.0.0.1",
                         port=herald.port, ssl=False, timeout=10)


def test_start_up_warns_once_per_unsupported_field(herald: HeraldProcess) -> None:
    path = herald.log_path.parent / "soketi-config.json"
    warnings = [line.split("herald.apps: ", 1)[1] for line in herald.log().splitlines()
                if "WARNING herald.apps" in line]
    assert warnings == [
        f"{path}: soketi server setting 'debug' is not an apps setting; ignored (Herald's settings are flags "
        "and HERALD_* variables)",
        f"{path}: soketi server setting 'port' is not an apps setting; ignored (Herald's settings are flags "
        "and HERALD_* variables)",
        f"{path}: app 81: field 'webhooks[1].lambda_function': AWS Lambda webhooks are not supported; "
        "a webhook without 'url' is skipped",
        f"{path}: app 81: field 'webhooks[1].lambda': AWS Lambda options are ignored",
    ]


@pytest.mark.parametrize("app", [CAMEL, PASCAL], ids=["camelCase", "PascalCase"])
async def test_limits_of_every_field(herald: HeraldProcess, node: NodeDriver, auth_server: AuthServer,
                                     app: dict[str, str]) -> None:
    auth = knowing(auth_server, [app])
    api = sdk(herald, app)
    # maxConnections 3 (cluster-wide quota: 4004).
    clients = [await node.connect(f"c{i}", app["key"], herald.port, auth=auth) for i in range(3)]
    over = await node.connect("over", app["key"], herald.port, wait=False)
    assert pusher_error_code(await over.wait_error()) == 4004
    # enableClientMessages: client events flow on a private channel.
    room = unique("private-r")
    for client in clients[:2]:
        await client.subscribe(room)
    await clients[0].trigger(room, "client-hi", {"n": 1})
    await clients[1].wait_event(room, "client-hi")
    # maxChannelNameLength 60.
    too_long = await clients[2].subscribe_expect_error("c" * 61)
    assert too_long["data"]["status"] == 4009
    # maxEventNameLength 50, maxEventBatchSize 9, maxEventChannelsAtOnce 8.
    with pytest.raises(PusherBadRequest):
        await asyncio.to_thread(api.trigger, ["x"], "e" * 51, {})
    with pytest.raises(PusherBadRequest):
        await asyncio.to_thread(api.trigger_batch, [{"channel": "x", "name": "e", "data": "{}"}] * 10)
    # maxBackendEventsPerSecond 4: 4 channels pass, more in the same second don't.
    await asyncio.to_thread(api.trigger, ["a", "b", "c", "d"], "e", {})
    with pytest.raises(PusherBadStatus, match=r"^429: "):
        await asyncio.to_thread(api.trigger, ["e"], "e", {})
    # maxReadRequestsPerSecond 6.
    statuses = []
    for _ in range(8):
        try:
            await asyncio.to_thread(api.channels_info)
            statuses.append(200)
        except PusherBadStatus:
            statuses.append(429)
    assert statuses[:6] == [200] * 6 and 429 in statuses


async def test_webhooks_with_soketis_filter(herald: HeraldProcess, node: NodeDriver, receiver: WebhookReceiver) -> None:
    client = await node.connect("a", CAMEL["key"], herald.port)
    hooked, other = unique("hooked"), unique("other")
    await client.subscribe(hooked)
    await client.subscribe(other)
    await receiver.wait_events("channel_occupied", hooked)
    request = receiver.accepted()[-1]
    assert request.headers["x-from"] == "soketi-config"
    assert not receiver.events_named("channel_occupied", other)  # filtered out by channel_name_starts_with


async def test_snake_case_nulls_take_herald_defaults(herald: HeraldProcess) -> None:
    """A soketi SQL row with NULL limits: Herald's defaults (unlimited API rates, client events off)."""
    api = sdk(herald, SNAKE)
    for _ in range(20):
        await asyncio.to_thread(api.trigger, ["x"], "e", {})  # no rate limit
    assert await asyncio.to_thread(api.channels_info) == {"channels": {}}
