"""The debug console without a network (docs/console.md): the node-side tap on the in-memory bus, the
server's feeds and record kinds, and who may open an app's console."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from starlette.requests import Request

from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry
from shared.backend import memory_backend
from shared.bus.base import Envelope
from shared.console.tap import WATCH_TTL_S, ConsoleTap
from shared.protocol import events
from shared.protocol.channels import CONSOLE_CHANNEL
from tests.unit.fakes import ManualClock, settle
from trigger_api.console.access import ConsoleAccess
from trigger_api.console.feeds import ConsoleFeeds, record
from trigger_api.errors import ApiError

A = AppConfig(id="a", key="key-a", secret="secret-a")
B = AppConfig(id="b", key="key-b", secret="secret-b")
OFF = AppConfig(id="off", key="key-off", secret="secret-off", enabled=False)


def env(app_id: str, channel: str, event: str, data: Any = "{}", **kw: Any) -> Envelope:
    return Envelope(app_id, channel, event, data, **kw)


async def test_nothing_is_copied_until_a_console_watches_and_only_for_that_app() -> None:
    backend = memory_backend()
    await backend.start()
    seen: list[Envelope] = []
    backend.bus.set_receiver(seen.append)
    for app_id in ("a", "b"):
        await backend.bus.subscribe(app_id, CONSOLE_CHANNEL)
    await backend.bus.publish(env("a", "news", "before"))
    assert seen == [] and backend.tap.watched == {}

    heard = backend.tap.expect("a")
    await backend.tap.announce("a")
    await asyncio.wait_for(heard, 1)
    await backend.bus.publish_many([env("a", "news", "e1"), env("b", "news", "e2"),
                                    env("a", "presence-x", events.MEMBER_ADDED, {"user_id": "u"}, exclude="1.1")])
    copies = [e for e in seen if e.channel == CONSOLE_CHANNEL]
    assert [(c.app_id, c.event, c.data["channel"], c.data["event"]) for c in copies] == [
        ("a", events.CONSOLE_EVENT, "news", "e1"),
        ("a", events.CONSOLE_EVENT, "presence-x", events.MEMBER_ADDED),
    ]
    assert copies[1].data["socket_id"] == "1.1"
    await backend.close()


def test_a_watch_lapses_without_announcements() -> None:
    clock = ManualClock()
    tap = ConsoleTap(memory_backend().bus, clock)
    tap.receive(env("#herald", "#console-watch", events.CONSOLE_WATCH, {"app_id": "a", "ttl_s": 999}))
    assert tap.watching("a")
    clock.advance(WATCH_TTL_S + 0.1)  # the TTL is capped, whatever an announcement asks for
    assert not tap.watching("a") and tap.watched == {}
    assert tap.copies([env("a", "news", "late")]) == []
    # Malformed control messages change nothing.
    tap.receive(env("#herald", "#console-watch", events.CONSOLE_WATCH, {"app_id": 5, "ttl_s": 1}))
    tap.receive(env("a", "#console-watch", events.CONSOLE_WATCH, {"app_id": "a", "ttl_s": 1}))
    assert tap.watched == {}


async def test_feeds_get_their_apps_records_and_close_unsubscribes() -> None:
    backend = memory_backend()
    await backend.start()
    feeds = ConsoleFeeds(backend)
    feed_a = await feeds.open("a")
    feed_b = await feeds.open("b")
    await asyncio.wait_for(feed_a.live, 1)
    await backend.bus.publish(env("a", "private-x", "client-typing", {"t": 1}, user_id="u1", exclude="1.2"))
    await backend.bus.publish(env("b", "news", "hello"))
    await backend.tap.note("a", events.CONSOLE_WEBHOOK, {"url": "http://h/p", "outcome": "ok"})
    got_a = [feed_a.queue.get_nowait() for _ in range(feed_a.queue.qsize())]
    got_b = [feed_b.queue.get_nowait() for _ in range(feed_b.queue.qsize())]
    assert [(r["kind"], r.get("event")) for r in got_a] == [("client_event", "client-typing"), ("webhook", None)]
    assert got_a[0]["user_id"] == "u1" and got_a[0]["socket_id"] == "1.2" and got_a[0]["data"] == {"t": 1}
    assert [(r["kind"], r["event"]) for r in got_b] == [("api_event", "hello")]
    await feeds.close(feed_a)
    await backend.bus.publish(env("a", "news", "after"))
    assert feed_a.queue.empty()
    await feeds.close(feed_b)
    await settle()
    await backend.close()


@pytest.mark.parametrize(("event", "channel", "kind"), [
    ("my-event", "news", "api_event"),
    ("client-x", "private-a", "client_event"),
    (events.MEMBER_REMOVED, "presence-a", "member"),
    (events.SUBSCRIPTION_COUNT, "news", "internal"),
    (events.WATCHLIST_EVENTS, "#watch-u1", "internal"),
])
def test_record_kinds(event: str, channel: str, kind: str) -> None:
    copy = env("a", CONSOLE_CHANNEL, events.CONSOLE_EVENT, {"channel": channel, "event": event, "data": "{}"})
    assert record(copy)["kind"] == kind


def request(authorization: str | None, query: str = "") -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "GET", "path": "/console/api/snapshot", "headers": headers,
                    "query_string": query.encode()})


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


async def refusal(access: ConsoleAccess, req: Request) -> tuple[int, str]:
    with pytest.raises(ApiError) as exc:
        await access.app_for(req)
    return exc.value.status, exc.value.message


async def test_access_by_key_and_secret_or_token_one_app_at_a_time() -> None:
    registry = AppRegistry([A, B, OFF])
    access = ConsoleAccess(registry, "op-token")
    assert await access.app_for(request(basic("key-a", "secret-a"))) is A
    assert await access.app_for(request("Bearer op-token", "app_id=b")) is B
    wrong = (401, "Wrong app key or secret")
    assert await refusal(access, request(basic("key-a", "secret-b"))) == wrong
    assert await refusal(access, request(basic("key-nope", "secret-a"))) == wrong  # same answer: keys stay unknown
    assert (await refusal(access, request("Basic !!!")))[0] == 401
    assert (await refusal(access, request(None)))[0] == 401
    assert await refusal(access, request("Bearer wrong", "app_id=a")) == (401, "Wrong console token")
    assert (await refusal(access, request("Bearer op-token", "app_id=zzz")))[0] == 404
    assert await refusal(access, request(basic("key-off", "secret-off"))) == (403, "App 'off' is disabled")
    # Without a configured token, no token opens anything.
    assert await refusal(ConsoleAccess(registry, None), request("Bearer ", "app_id=a")) == (401, "Wrong console token")


async def test_watched_gateways_report_their_connection_counts() -> None:
    backend = memory_backend()
    backend.tap.local_connections = {"a": 7}.get  # type: ignore[assignment]
    await backend.start()
    feeds = ConsoleFeeds(backend)
    assert feeds.connections("a") is None
    feed = await feeds.open("a")
    await asyncio.wait_for(feed.live, 1)
    for _ in range(50):
        if feeds.connections("a") is not None:
            break
        await asyncio.sleep(0.01)
    assert feeds.connections("a") == 7 and feeds.connections("b") is None
    assert feed.queue.empty()  # counts are not stream records
    await feeds.close(feed)
    await backend.close()
