"""pusher_internal:subscription_count (sections 2.9): on every change, never on presence, throttled
above 100 subscribers with a trailing count so the last word is the current one."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway import counts
from shared.protocol.signatures import sign_channel
from tests.unit.fakes import Client, Harness, make_app

APP = make_app(enable_subscription_count=True)


def counts_seen(client: Client, channel: str) -> list[int]:
    return [orjson.loads(f["data"])["subscription_count"] for f in client.sink.frames
            if f["event"] == "pusher_internal:subscription_count" and f.get("channel") == channel]


async def test_each_subscribe_and_unsubscribe_sends_the_new_count(harness: Harness) -> None:
    a, b = harness.connect(APP), harness.connect(APP)
    await a.subscribe("room")
    await b.subscribe("room")
    await b.unsubscribe("room")
    assert counts_seen(a, "room") == [1, 2, 1]
    assert counts_seen(b, "room") == [2]


async def test_off_by_default(harness: Harness) -> None:
    plain = harness.connect(make_app(id="other", key="other-key"))
    await plain.subscribe("room")
    assert counts_seen(plain, "room") == []


async def test_never_on_presence_channels(harness: Harness) -> None:
    a, b = harness.connect(APP), harness.connect(APP)
    for client, user in ((a, "u1"), (b, "u2")):
        data = orjson.dumps({"user_id": user}).decode()
        auth = sign_channel(APP.key, APP.secret, client.socket_id, "presence-room", data)
        await client.subscribe("presence-room", auth, data)
    assert [f["event"] for f in a.sink.frames] == ["pusher_internal:subscription_succeeded",
                                                   "pusher_internal:member_added"]
    assert counts_seen(b, "presence-room") == []


async def test_busy_channel_is_throttled_then_gets_the_current_count(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "THROTTLE_S", 0.2)
    watcher = harness.connect(APP)
    await watcher.subscribe("busy")
    for _ in range(counts.THROTTLE_ABOVE + 4):
        await harness.connect(APP).subscribe("busy")
    seen = counts_seen(watcher, "busy")
    # Every count up to the threshold, then nothing while the window is open...
    assert seen == list(range(1, counts.THROTTLE_ABOVE + 1))
    # ...then one trailing count with the current total when it closes.
    total = counts.THROTTLE_ABOVE + 5
    for _ in range(100):
        if counts_seen(watcher, "busy")[-1] == total:
            break
        await asyncio.sleep(0.02)
    assert counts_seen(watcher, "busy")[-1:] == [total]
    assert len(counts_seen(watcher, "busy")) == counts.THROTTLE_ABOVE + 1
