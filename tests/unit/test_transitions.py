"""The one place that decides what a transition means (shared/transitions.py): envelopes for clients
and webhook events, the same for a live join/leave and for a repair or reap."""

from __future__ import annotations

import orjson

from shared import transitions
from shared.apps.config import AppConfig, WebhookConfig
from shared.protocol import events
from shared.state.base import ChannelChange, Member, MemberChange, Transitions

ALL_HOOKS = (WebhookConfig("http://hooks.test/", tuple(sorted(events.WEBHOOK_EVENT_TYPES))),)


def app(**overrides: object) -> AppConfig:
    values: dict[str, object] = {"id": "1", "key": "k", "secret": "s"}
    values.update(overrides)
    return AppConfig(**values)  # type: ignore[arg-type]


def test_member_added_excludes_the_joining_socket_and_keeps_the_id_as_sent() -> None:
    change = MemberChange("presence-r", Member(10, {"n": "ten"}), stamp=42)
    env = transitions.member_added("1", change, "node-a", exclude="1.1")
    assert (env.app_id, env.channel, env.event, env.exclude, env.origin) == (
        "1", "presence-r", events.MEMBER_ADDED, "1.1", "node-a")
    assert orjson.loads(env.data) == {"user_id": 10, "user_info": {"n": "ten"}}
    assert env.order == 42  # gateways order member events by their transition's stamp


def test_watchlist_changes_go_to_the_users_watch_topic_without_a_channel_for_clients() -> None:
    online = transitions.user_status("1", "u1", True, "n")
    offline = transitions.user_status("1", "u1", False, "n")
    assert online.channel == offline.channel == "#watch-u1"
    assert orjson.loads(online.data) == {"events": [{"name": "online", "user_ids": ["u1"]}]}
    assert orjson.loads(offline.data) == {"events": [{"name": "offline", "user_ids": ["u1"]}]}


def test_subscription_counts_are_opt_in_and_never_on_presence_channels() -> None:
    off, on = app(), app(enable_subscription_count=True)
    assert transitions.subscription_count_message(off, "news", 3, "n") is None
    assert transitions.subscription_count_message(on, "presence-x", 3, "n") is None
    assert transitions.subscription_count_message(on, "news", 0, "n") is None  # nobody left to tell
    env = transitions.subscription_count_message(on, "news", 3, "n")
    assert env is not None and orjson.loads(env.data) == {"subscription_count": 3}
    hooked = app(webhooks=ALL_HOOKS)
    assert transitions.counts_webhook(hooked, "news") and not transitions.counts_webhook(hooked, "presence-x")
    assert not transitions.counts_webhook(off, "news")


def test_live_join_and_leave_webhooks() -> None:
    m = Member("u1")
    joined = transitions.joined_webhooks(ChannelChange("presence-r", 5, after=3), MemberChange("presence-r", m, 6, 4))
    assert [e.name for e in joined] == [events.WEBHOOK_CHANNEL_OCCUPIED, events.WEBHOOK_MEMBER_ADDED]
    assert [(e.stamp, e.after) for e in joined] == [(5, 3), (6, 4)]  # pairs with the vacate/removal it follows
    left = transitions.left_webhooks(ChannelChange("presence-r", 7), MemberChange("presence-r", m, 8))
    assert [e.name for e in left] == [events.WEBHOOK_CHANNEL_VACATED, events.WEBHOOK_MEMBER_REMOVED]
    assert transitions.joined_webhooks(None, None) == []


def test_a_reap_means_what_the_same_leaves_would_mean_live() -> None:
    alice = Member("alice", {"a": 1})
    reaped = Transitions("1", vacated=[ChannelChange("presence-r", 1), ChannelChange("news", 2)],
                         removed=[MemberChange("presence-r", alice, 3)], offline=["alice"],
                         counts=[("presence-r", 0), ("news", 0), ("busy", 4)])
    envelopes, hooks = transitions.repaired(app(webhooks=ALL_HOOKS, enable_subscription_count=True), reaped, "n")
    assert [(e.channel, e.event) for e in envelopes] == [
        ("presence-r", events.MEMBER_REMOVED), ("#watch-alice", events.WATCHLIST_EVENTS),
        ("busy", events.SUBSCRIPTION_COUNT)]
    live = transitions.left_webhooks(ChannelChange("presence-r", 1), MemberChange("presence-r", alice, 3)) \
        + transitions.left_webhooks(ChannelChange("news", 2), None)
    assert sorted(h.name for h in hooks if h.name != events.WEBHOOK_SUBSCRIPTION_COUNT) == sorted(
        h.name for h in live)
    assert sorted((h.channel, h.subscription_count) for h in hooks
                  if h.name == events.WEBHOOK_SUBSCRIPTION_COUNT) == [("busy", 4), ("news", 0)]


def test_a_repair_for_an_unknown_app_still_tells_clients() -> None:
    envelopes, hooks = transitions.repaired(None, Transitions("gone", added=[MemberChange("presence-r", Member("u"))]),
                                            "n")
    assert [e.event for e in envelopes] == [events.MEMBER_ADDED] and hooks == []
