"""Pusher's HTTP API on a real `herald serve`, driven by the PyPI `pusher` SDK (pusher-http-python).

Subscribers are real WebSocket clients (the `websockets` library speaking protocol 7). Things the SDK
refuses client-side are sent with httpx, signed here as docs/http-api.md describes.

Apps are TEST_APPS of tests/conftest.py, found by key ("key-1"; "key-off" is the disabled one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pusher
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus
from pusher.http import POST, Request
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import HeraldProcess

TIMEOUT = 5.0


@dataclass(frozen=True)
class App:
    id: str
    key: str
    secret: str


def app_with_key(herald: HeraldProcess, key: str) -> App:
    [app] = [a for a in herald.apps if a["key"] == key]
    return App(str(app["id"]), app["key"], app["secret"])


def unique(prefix: str) -> str:
    """A channel name no other test uses: the server is shared by the whole session."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- clients ----------------------------------------------------------------------------------------


class Subscriber:
    """A protocol-7 WebSocket client that answers pings and hands out the other frames in order."""

    def __init__(self, ws: ClientConnection, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            msg = json.loads(raw)
            if msg.get("event") == "pusher:ping":
                await self.ws.send(json.dumps({"event": "pusher:pong", "data": {}}))
                continue
            assert isinstance(msg, dict)
            return msg

    async def subscribe(self, channel: str, auth: str = "", channel_data: str | None = None) -> None:
        data: dict[str, Any] = {"channel": channel, "auth": auth}
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
        msg = await self.next()
        while msg.get("event", "").startswith("pusher_internal:member_"):  # others joining meanwhile
            msg = await self.next()
        assert (msg.get("event"), msg.get("channel")) == ("pusher_internal:subscription_succeeded", channel), msg

    async def subscribe_presence(self, sdk: pusher.Pusher, channel: str, user_id: Any) -> None:
        signed = sdk.authenticate(channel, self.socket_id, {"user_id": user_id, "user_info": {"n": 1}})
        await self.subscribe(channel, signed["auth"], signed["channel_data"])

    async def expect_event(self, channel: str, event: str) -> dict[str, Any]:
        """The next frame that is not a presence roster change must be `event` on `channel`."""
        while True:
            msg = await self.next()
            if msg.get("event", "").startswith("pusher_internal:member_"):
                continue
            assert (msg.get("event"), msg.get("channel")) == (event, channel), msg
            return msg


@contextlib.asynccontextmanager
async def subscriber(herald: HeraldProcess, key: str = "key-1") -> AsyncIterator[Subscriber]:
    url = f"{herald.ws_url}/app/{key}?protocol=7&client=js&version=8.6.0"
    async with connect(url) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert hello["event"] == "pusher:connection_established", hello
        yield Subscriber(ws, json.loads(hello["data"])["socket_id"])


@pytest.fixture(scope="module")
def app1(herald_server: HeraldProcess) -> App:
    return app_with_key(herald_server, "key-1")


def sdk_for(herald: HeraldProcess, app: App, secret: str | None = None) -> pusher.Pusher:
    return pusher.Pusher(app_id=app.id, key=app.key, secret=secret or app.secret, host="127.0.0.1",
                         port=herald.port, ssl=False)


@pytest.fixture(scope="module")
def sdk(herald_server: HeraldProcess, app1: App) -> pusher.Pusher:
    return sdk_for(herald_server, app1)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a (blocking) SDK call off the event loop, so WebSocket clients keep being served."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def trigger_with_info(sdk: pusher.Pusher, channels: list[str], name: str, data: str, info: str) -> Any:
    """pusher-http-python's trigger() has no `info` argument; its Request class signs and sends it."""
    client = sdk._pusher_client
    params = {"name": name, "channels": channels, "data": data, "info": info}
    return client.http.send_request(Request(client, POST, f"/apps/{client.app_id}/events", params))


def signed_url(herald: HeraldProcess, method: str, app: App, path: str, params: dict[str, str] | None = None,
               body: bytes = b"", timestamp: float | None = None) -> str:
    """`path` is below /apps/{app.id}; signed with the app's key and secret as docs/http-api.md says."""
    path = f"/apps/{app.id}{path}"
    query = {**(params or {}), "auth_key": app.key, "auth_version": "1.0",
             "auth_timestamp": str(int(time.time() if timestamp is None else timestamp))}
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = "\n".join([method, path, "&".join(f"{k}={v}" for k, v in sorted(query.items()))])
    query["auth_signature"] = hmac.new(app.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{herald.http_url}{path}?" + "&".join(f"{k}={quote(v, safe=',')}" for k, v in query.items())


def raw_post(herald: HeraldProcess, app: App, path: str, body: Any, **kw: Any) -> httpx.Response:
    data = json.dumps(body).encode()
    return httpx.post(signed_url(herald, "POST", app, path, body=data, **kw), content=data,
                      headers={"Content-Type": "application/json"})


def raw_get(herald: HeraldProcess, app: App, path: str, params: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(signed_url(herald, "GET", app, path, params))


def error_of(resp: httpx.Response) -> tuple[int, str]:
    body = resp.json()
    assert body["code"] == resp.status_code, body
    return resp.status_code, body["error"]


# -- trigger ----------------------------------------------------------------------------------------


async def test_trigger_reaches_a_subscriber_with_data_untouched(herald_server: HeraldProcess,
                                                               sdk: pusher.Pusher) -> None:
    channel = unique("news")
    async with subscriber(herald_server) as sub:
        await sub.subscribe(channel)
        assert await call(sdk.trigger, channel, "my-event", {"message": "héllo", "n": 1}) == {}
        msg = await sub.expect_event(channel, "my-event")
        # pusher-http-python json.dumps the data; the subscriber gets that exact string.
        assert msg["data"] == json.dumps({"message": "héllo", "n": 1}, ensure_ascii=False)


async def test_trigger_to_several_channels(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    one, two = unique("multi"), unique("multi")
    async with subscriber(herald_server) as a, subscriber(herald_server) as b:
        await a.subscribe(one)
        await b.subscribe(two)
        assert await call(sdk.trigger, [one, two], "fan", "x") == {}
        # A str is sent as-is by the SDK (not JSON-encoded again), and delivered as-is.
        assert (await a.expect_event(one, "fan"))["data"] == "x"
        assert (await b.expect_event(two, "fan"))["data"] == "x"


async def test_socket_id_exclusion(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    channel = unique("excl")
    async with subscriber(herald_server) as excluded, subscriber(herald_server) as other:
        await excluded.subscribe(channel)
        await other.subscribe(channel)
        assert await call(sdk.trigger, channel, "first", {"n": 1}, socket_id=excluded.socket_id) == {}
        await other.expect_event(channel, "first")
        # The negative: after a second, unexcluded event, the excluded socket's NEXT frame is that one.
        assert await call(sdk.trigger, channel, "second", {"n": 2}) == {}
        await other.expect_event(channel, "second")
        assert (await excluded.expect_event(channel, "second"))["data"] == '{"n": 2}'


async def test_trigger_with_info(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    presence, public = unique("presence-room"), unique("public")
    async with subscriber(herald_server) as a, subscriber(herald_server) as b, \
            subscriber(herald_server) as c:
        await a.subscribe_presence(sdk, presence, 10)
        await b.subscribe_presence(sdk, presence, 10)  # the same user twice: one user, two sockets
        await c.subscribe_presence(sdk, presence, "ann")
        await c.subscribe(public)
        result = await call(trigger_with_info, sdk, [presence, public], "ev", "{}",
                            "user_count,subscription_count")
        assert result == {"channels": {
            presence: {"user_count": 2, "subscription_count": 3},
            public: {"subscription_count": 1},
        }}
        await c.expect_event(presence, "ev")


async def test_trigger_batch_with_info(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    presence, public = unique("presence-batch"), unique("batch")
    async with subscriber(herald_server) as a, subscriber(herald_server) as b:
        await a.subscribe_presence(sdk, presence, "u1")
        await b.subscribe_presence(sdk, presence, "u2")
        await b.subscribe(public)
        result = await call(sdk.trigger_batch, [
            {"channel": presence, "name": "e1", "data": {"i": 1}, "info": "user_count,subscription_count"},
            {"channel": public, "name": "e2", "data": {"i": 2}},
            {"channel": public, "name": "e3", "data": {"i": 3}, "info": "subscription_count"},
        ])
        assert result == {"batch": [{"user_count": 2, "subscription_count": 2}, {}, {"subscription_count": 1}]}
        assert (await a.expect_event(presence, "e1"))["data"] == '{"i": 1}'
        # b is in both channels: the events arrive in batch order.
        await b.expect_event(presence, "e1")
        await b.expect_event(public, "e2")
        await b.expect_event(public, "e3")


async def test_trigger_batch_without_info_is_empty_object(herald_server: HeraldProcess,
                                                          sdk: pusher.Pusher) -> None:
    channel = unique("batch")
    async with subscriber(herald_server) as a:
        await a.subscribe(channel)
        assert await call(sdk.trigger_batch, [{"channel": channel, "name": "only", "data": "d"}]) == {}
        await a.expect_event(channel, "only")


async def test_send_to_user_is_accepted(sdk: pusher.Pusher) -> None:
    # Delivery needs pusher:signin (a later issue); the API accepts the #server-to-user channel now.
    assert await call(sdk.send_to_user, "user-1", "note", {"x": 1}) == {}


# -- channel queries --------------------------------------------------------------------------------


async def test_channels_info(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    tag = uuid.uuid4().hex[:8]
    p1, p2, pub = f"presence-q{tag}-a", f"presence-q{tag}-b", f"q{tag}-public"
    async with subscriber(herald_server) as a, subscriber(herald_server) as b:
        await a.subscribe_presence(sdk, p1, 1)
        await b.subscribe_presence(sdk, p1, 2)
        await b.subscribe_presence(sdk, p2, 2)
        await a.subscribe(pub)

        everything = await call(sdk.channels_info)
        assert {p1, p2, pub} <= set(everything["channels"])
        assert all(v == {} for v in everything["channels"].values())

        assert await call(sdk.channels_info, f"presence-q{tag}", ["user_count"]) == {
            "channels": {p1: {"user_count": 2}, p2: {"user_count": 1}}}
        assert await call(sdk.channels_info, f"q{tag}") == {"channels": {pub: {}}}

    # Everyone left: the channels are no longer occupied, so no longer listed.
    async def listed() -> set[str]:
        return set((await call(sdk.channels_info, f"presence-q{tag}"))["channels"])

    await wait_until(lambda: listed(), set())


async def wait_until(probe: Any, expected: Any, timeout: float = TIMEOUT) -> None:
    """Poll an API query until it returns `expected` (a disconnect is processed asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected or time.monotonic() > deadline:
            assert value == expected
            return
        await asyncio.sleep(0.05)


async def test_channel_info(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    presence, public = unique("presence-info"), unique("info")
    assert await call(sdk.channel_info, public, ["subscription_count"]) == {
        "occupied": False, "subscription_count": 0}
    async with subscriber(herald_server) as a, subscriber(herald_server) as b:
        await a.subscribe(public)
        await b.subscribe(public)
        await a.subscribe_presence(sdk, presence, 7)
        await b.subscribe_presence(sdk, presence, 7)
        assert await call(sdk.channel_info, public) == {"occupied": True}
        assert await call(sdk.channel_info, public, ["subscription_count"]) == {
            "occupied": True, "subscription_count": 2}
        assert await call(sdk.channel_info, presence, ["user_count", "subscription_count"]) == {
            "occupied": True, "user_count": 1, "subscription_count": 2}


async def test_users_info(herald_server: HeraldProcess, sdk: pusher.Pusher) -> None:
    presence = unique("presence-users")
    async with subscriber(herald_server) as a, subscriber(herald_server) as b, \
            subscriber(herald_server) as c:
        await a.subscribe_presence(sdk, presence, 10)  # a number in channel_data
        await b.subscribe_presence(sdk, presence, "ann")
        await c.subscribe_presence(sdk, presence, 10)
        result = await call(sdk.users_info, presence)
    assert sorted(result["users"], key=lambda u: u["id"]) == [{"id": "10"}, {"id": "ann"}]
    assert await call(sdk.users_info, unique("presence-nobody")) == {"users": []}


async def test_terminate_connections_sdk_path(sdk: pusher.Pusher) -> None:
    # pusher-http-python posts to /users/{id}/terminate_connections (no /apps prefix).
    assert await call(sdk.terminate_user_connections, "user-42") == {}


# -- errors the SDK surfaces ------------------------------------------------------------------------


async def test_wrong_secret_is_bad_auth(herald_server: HeraldProcess, app1: App) -> None:
    wrong = sdk_for(herald_server, app1, secret="not-the-secret")
    with pytest.raises(PusherBadAuth, match="Invalid signature"):
        await call(wrong.trigger, "ch", "e", "d")
    with pytest.raises(PusherBadAuth, match="Invalid signature"):
        await call(wrong.channels_info)


async def test_unknown_app_is_404(herald_server: HeraldProcess, app1: App) -> None:
    ghost = sdk_for(herald_server, App("999", app1.key, app1.secret))
    with pytest.raises(PusherBadStatus, match=r"404: .*Unknown app id '999'"):
        await call(ghost.trigger, "ch", "e", "d")


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("channel_info", ("public-x", ["user_count"]), "user_count is only available for presence channels"),
        ("channels_info", (None, ["user_count"]), "requires filter_by_prefix to start with 'presence-'"),
        ("channels_info", ("private-", ["user_count"]), "requires filter_by_prefix"),
        ("users_info", ("public-x",), "only available for presence channels"),
        ("trigger_batch", ([{"channel": "c", "name": "e", "data": "d"}] * 11,),
         "Cannot batch-send more than 10 messages at once"),
        ("trigger", (["private-encrypted-x", "y"], "e", "d"), None),  # refused by the SDK itself
    ],
)
async def test_bad_requests_through_the_sdk(sdk: pusher.Pusher, method: str, args: tuple[Any, ...],
                                            message: str | None) -> None:
    if message is None:
        with pytest.raises(ValueError):
            await call(getattr(sdk, method), *args)
        return
    with pytest.raises(PusherBadRequest) as err:
        await call(getattr(sdk, method), *args)
    body = json.loads(str(err.value))
    assert body["code"] == 400 and message in body["error"]


async def test_data_over_10_kib_is_413_through_the_sdk(herald_server: HeraldProcess,
                                                       sdk: pusher.Pusher) -> None:
    channel = unique("big")
    async with subscriber(herald_server) as a:
        await a.subscribe(channel)
        # The SDK itself allows up to ~30 KB for trigger(); Herald's limit is 10 KiB of data.
        with pytest.raises(PusherBadStatus, match=r"413: .*data is 10241 bytes; the limit is 10240 bytes"):
            await call(sdk.trigger, channel, "big", "x" * 10241)
        assert await call(sdk.trigger, channel, "fits", "x" * 10240) == {}
        # The refused event was never delivered: the next frame is the one that fit.
        await a.expect_event(channel, "fits")


# -- what the SDK refuses client-side, sent raw -----------------------------------------------------


def test_raw_101_channels_is_400(herald_server: HeraldProcess, app1: App) -> None:
    body = {"name": "e", "data": "d", "channels": [f"c{i}" for i in range(101)]}
    assert error_of(raw_post(herald_server, app1, "/events", body)) == (
        400, "channels has 101 entries; at most 100 channels at once")


def test_raw_10241_byte_data_is_413(herald_server: HeraldProcess, app1: App) -> None:
    body = {"name": "e", "data": "x" * 10241, "channels": ["c"]}
    assert error_of(raw_post(herald_server, app1, "/events", body)) == (
        413, "data is 10241 bytes; the limit is 10240 bytes")
    body["data"] = "x" * 10240
    assert raw_post(herald_server, app1, "/events", body).json() == {}


def test_raw_bad_socket_id_is_400(herald_server: HeraldProcess, app1: App) -> None:
    body = {"name": "e", "data": "d", "channels": ["c"], "socket_id": "abc.def"}
    status, message = error_of(raw_post(herald_server, app1, "/events", body))
    assert status == 400 and "Invalid socket_id 'abc.def'" in message


@pytest.mark.parametrize("channel", ["bad channel", "#not-a-user-channel", "c" * 201, ""])
def test_raw_bad_channel_name_is_400(herald_server: HeraldProcess, app1: App, channel: str) -> None:
    body = {"name": "e", "data": "d", "channels": [channel]}
    status, message = error_of(raw_post(herald_server, app1, "/events", body))
    assert status == 400 and message.startswith("Invalid channel name")


def test_raw_invalid_json_is_400(herald_server: HeraldProcess, app1: App) -> None:
    data = b"{nope"
    url = signed_url(herald_server, "POST", app1, "/events", body=data)
    status, message = error_of(httpx.post(url, content=data, headers={"Content-Type": "application/json"}))
    assert status == 400 and "not valid JSON" in message


def test_raw_expired_timestamp_is_401(herald_server: HeraldProcess, app1: App) -> None:
    resp = raw_post(herald_server, app1, "/events", {"name": "e", "data": "d", "channels": ["c"]},
                    timestamp=time.time() - 601)
    status, message = error_of(resp)
    assert status == 401 and message.startswith("Timestamp expired")


def test_raw_disabled_app_is_403(herald_server: HeraldProcess, app1: App) -> None:
    off = app_with_key(herald_server, "key-off")
    assert error_of(raw_get(herald_server, off, "/channels")) == (403, f"App '{off.id}' is disabled")


def test_raw_percent_encoded_query_verifies(herald_server: HeraldProcess, app1: App) -> None:
    # PHP/Guzzle style: the comma in info percent-encoded on the wire, signed unescaped.
    url = signed_url(herald_server, "GET", app1, "/channels/some-channel", {"info": "subscription_count"})
    url = url.replace("info=subscription_count", "info=subscription%5Fcount")
    assert "subscription%5Fcount" in url
    assert httpx.get(url).json() == {"occupied": False, "subscription_count": 0}


def test_raw_unknown_endpoint_is_404_json(herald_server: HeraldProcess, app1: App) -> None:
    resp = httpx.get(f"{herald_server.http_url}/apps/{app1.id}/connections")
    assert error_of(resp) == (404, f"Unknown API endpoint: GET /apps/{app1.id}/connections")


def test_raw_terminate_with_apps_prefix(herald_server: HeraldProcess, app1: App) -> None:
    # The path the node and php SDKs use.
    resp = raw_post(herald_server, app1, "/users/u-1/terminate_connections", {})
    assert (resp.status_code, resp.json()) == (200, {})


def test_raw_body_over_one_mebibyte_is_413(herald_server: HeraldProcess, app1: App) -> None:
    body = {"name": "e", "data": "x" * (1024 * 1024), "channels": ["c"]}
    status, message = error_of(raw_post(herald_server, app1, "/events", body))
    assert status == 413 and "Request body is larger than 1048576 bytes" in message
    # The server still answers afterwards.
    assert raw_get(herald_server, app1, "/channels/c").json() == {"occupied": False}


# -- issue 9: names ending in a newline, JSON 404s ---------------------------------------------------


@pytest.mark.parametrize("name", ["pub\n", "private-x\n", "presence-x\n"])
def test_a_channel_name_ending_in_a_newline_is_refused(herald_server: HeraldProcess, app1: App, name: str) -> None:
    resp = raw_post(herald_server, app1, "/events", {"name": "e", "data": "{}", "channel": name})
    status, message = error_of(resp)
    assert status == 400 and "may only contain" in message


def test_users_of_a_channel_name_ending_in_a_newline_is_refused(herald_server: HeraldProcess, app1: App) -> None:
    resp = httpx.get(signed_url(herald_server, "GET", app1, "/channels/presence-x%0A/users"))
    assert error_of(resp)[0] == 400


@pytest.mark.parametrize(("method", "path"), [("POST", "/users//terminate_connections"), ("GET", "/nothing/here"),
                                              ("DELETE", "/apps")])
def test_unknown_paths_get_a_json_404(herald_server: HeraldProcess, method: str, path: str) -> None:
    resp = httpx.request(method, f"{herald_server.http_url}{path}")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    assert error_of(resp) == (404, f"Unknown API endpoint: {method} {path}")
