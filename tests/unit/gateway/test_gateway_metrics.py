"""Gauges the gateway keeps as running counts: subscriptions and channels by type (gateway/hub.py)."""

from __future__ import annotations

import orjson
from prometheus_client import REGISTRY

from gateway.frames import frame_size, text_frame
from shared.protocol.signatures import sign_channel
from tests.unit.fakes import Harness, make_app

APP = make_app(id="metrics-app", key="metrics-key", secret="metrics-secret")


def gauges() -> dict[tuple[str, str], float]:
    out = {}
    for name in ("herald_channel_subscriptions", "herald_channels"):
        for kind in ("public", "private", "presence", "encrypted", "internal"):
            out[(name.removeprefix("herald_"), kind)] = REGISTRY.get_sample_value(name, {"type": kind}) or 0.0
    return out


def changes(before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    after = gauges()
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


async def test_subscription_and_channel_gauges_follow_joins_and_leaves() -> None:
    harness = Harness()
    before = gauges()
    a, b = harness.connect(APP), harness.connect(APP)
    await a.subscribe("news")
    await b.subscribe("news")
    await a.subscribe("weather")
    member = orjson.dumps({"user_id": "u1"}).decode()
    await a.subscribe("presence-room", sign_channel(APP.key, APP.secret, a.socket_id, "presence-room", member),
                      member)
    await b.subscribe("private-x", sign_channel(APP.key, APP.secret, b.socket_id, "private-x"))
    assert changes(before) == {
        ("channel_subscriptions", "public"): 3, ("channels", "public"): 2,
        ("channel_subscriptions", "presence"): 1, ("channels", "presence"): 1,
        ("channel_subscriptions", "private"): 1, ("channels", "private"): 1,
    }
    assert harness.backend.presence.local_members() == {APP.id: 1}

    await a.unsubscribe("news")
    assert changes(before)[("channel_subscriptions", "public")] == 2
    assert changes(before)[("channels", "public")] == 2  # b is still in news

    await a.close()
    await b.close()
    assert changes(before) == {}
    assert harness.backend.presence.local_members() == {APP.id: 0}


def test_frame_size_is_the_length_of_the_frame() -> None:
    for n in (0, 1, 125, 126, 65535, 65536, 70000):
        assert frame_size(n) == len(text_frame(b"x" * n)), n
