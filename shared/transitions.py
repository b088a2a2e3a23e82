"""What a state transition means, decided once for every path that makes one (docs/architecture.md,
"Transitions").

The stores decide transitions atomically, cluster-wide: a channel occupied or vacated, a member added
to or removed from a presence channel, a user online or offline, a subscription count changed. Two
paths produce them: the live path (a socket subscribes, leaves or signs in on a gateway) and the repair
path (a node re-syncs after an outage, or the reaper removes a dead node). Both turn them into the
same client envelopes and webhook events here. Pure: nothing here does I/O.
"""

from __future__ import annotations

import time
from typing import Any

from shared.apps.config import AppConfig
from shared.bus.base import Envelope
from shared.protocol import events, messages
from shared.protocol.channels import channel_type, server_to_user_channel, watch_topic
from shared.state.base import ChannelChange, MemberChange, Transitions
from shared.webhooks.base import WebhookEvent, wants


def _envelope(app_id: str, channel: str, event: str, data: Any, origin: str, exclude: str | None = None,
              order: int = 0) -> Envelope:
    return Envelope(app_id, channel, event, data, exclude=exclude, origin=origin, ts=time.time(), order=order)


# -- client envelopes ------------------------------------------------------------------------------


def member_added(app_id: str, change: MemberChange, origin: str, exclude: str | None = None) -> Envelope:
    """`pusher_internal:member_added` to the channel's subscribers (except the joining socket, which
    has the member in its roster already), ordered by its stamp."""
    member = change.member
    return _envelope(app_id, change.channel, events.MEMBER_ADDED,
                     messages.member_added_data(member.user_id, member.user_info), origin, exclude, change.stamp)


def member_removed(app_id: str, change: MemberChange, origin: str) -> Envelope:
    return _envelope(app_id, change.channel, events.MEMBER_REMOVED,
                     messages.member_removed_data(change.member.user_id), origin, order=change.stamp)


def user_status(app_id: str, user_id: str, online: bool, origin: str) -> Envelope:
    """A user's online/offline change, for the sockets watching it (on the user's watch topic)."""
    data = messages.watchlist_events([user_id], []) if online else messages.watchlist_events([], [user_id])
    return _envelope(app_id, watch_topic(user_id), events.WATCHLIST_EVENTS, data, origin)


def subscription_count(app_id: str, channel: str, count: int, origin: str) -> Envelope:
    return _envelope(app_id, channel, events.SUBSCRIPTION_COUNT, messages.subscription_count_data(count), origin)


def terminate_user(app_id: str, user_id: str, origin: str) -> Envelope:
    """The control message that closes every connection signed in as the user, on every node (they all
    listen on the user's server-to-user topic)."""
    return _envelope(app_id, server_to_user_channel(user_id), events.TERMINATE_CONNECTIONS, None, origin)


# -- who is told about subscription counts ---------------------------------------------------------


def counts_event(app: AppConfig, channel: str) -> bool:
    """Does the channel's subscribers get `pusher_internal:subscription_count`? Opt-in per app, never
    on presence channels (their rosters already say who is there)."""
    return app.enable_subscription_count and not channel_type(channel).is_presence


def counts_webhook(app: AppConfig, channel: str) -> bool:
    """Does a `subscription_count` webhook go out for the channel?"""
    return bool(app.webhooks) and wants(app, events.WEBHOOK_SUBSCRIPTION_COUNT) \
        and not channel_type(channel).is_presence


def subscription_count_message(app: AppConfig, channel: str, count: int, origin: str) -> Envelope | None:
    """The count for the channel's subscribers, when the app wants it and someone is left to tell."""
    if count > 0 and counts_event(app, channel):
        return subscription_count(app.id, channel, count, origin)
    return None


# -- webhook events --------------------------------------------------------------------------------


def joined_webhooks(occupied: ChannelChange | None, added: MemberChange | None) -> list[WebhookEvent]:
    """A subscription was added: the channel became occupied, and/or a new member was added."""
    out = []
    if occupied is not None:
        out.append(WebhookEvent(events.WEBHOOK_CHANNEL_OCCUPIED, occupied.channel, stamp=occupied.stamp,
                                after=occupied.after))
    if added is not None:
        out.append(WebhookEvent(events.WEBHOOK_MEMBER_ADDED, added.channel, user_id=added.member.user_id,
                                stamp=added.stamp, after=added.after))
    return out


def left_webhooks(vacated: ChannelChange | None, removed: MemberChange | None) -> list[WebhookEvent]:
    """A subscription was removed: the channel was vacated, and/or a member was removed."""
    out = []
    if vacated is not None:
        out.append(WebhookEvent(events.WEBHOOK_CHANNEL_VACATED, vacated.channel, stamp=vacated.stamp))
    if removed is not None:
        out.append(WebhookEvent(events.WEBHOOK_MEMBER_REMOVED, removed.channel, user_id=removed.member.user_id,
                                stamp=removed.stamp))
    return out


def subscription_count_webhook(channel: str, count: int) -> WebhookEvent:
    return WebhookEvent(events.WEBHOOK_SUBSCRIPTION_COUNT, channel, subscription_count=count)


# -- a repair or reap ------------------------------------------------------------------------------


def repaired(app: AppConfig | None, t: Transitions, origin: str) -> tuple[list[Envelope], list[WebhookEvent]]:
    """The envelopes and webhook events of what a repair or reap changed, as if the sockets behind it
    had joined or left live. `app` None (an app no longer configured): envelopes only."""
    app_id = t.app_id
    envelopes = (
        [member_removed(app_id, change, origin) for change in t.removed]
        + [member_added(app_id, change, origin) for change in t.added]
        + [user_status(app_id, user, True, origin) for user in t.online]
        + [user_status(app_id, user, False, origin) for user in t.offline]
    )
    if app is None:
        return envelopes, []
    for channel, count in t.counts:
        message = subscription_count_message(app, channel, count, origin)
        if message is not None:
            envelopes.append(message)
    hooks = (
        [e for c in t.occupied for e in joined_webhooks(c, None)]
        + [e for m in t.added for e in joined_webhooks(None, m)]
        + [e for m in t.removed for e in left_webhooks(None, m)]
        + [e for c in t.vacated for e in left_webhooks(c, None)]
        + [subscription_count_webhook(c, n) for c, n in t.counts if counts_webhook(app, c)]
    )
    return envelopes, hooks
