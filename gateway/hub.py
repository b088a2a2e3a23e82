"""The node's local fan-out: which local sockets are in which channel, and bus subscriptions.

An envelope from the bus is encoded once and framed once, then the same bytes are queued on every
local subscriber except the excluded socket. Events of channels with history also go to the node's
replay cache (docs/history.md), and the excluded socket gets a marker of the position it skips.

Presence channels also keep a `PresenceView` per channel: what this node's subscribers have been told
about each user, with the stamp of the transition that told them (docs/cluster.md, "Ordering"). A
member event older than that is dropped (it crossed a newer one on the way), and one that changes
nothing (a member_added for a user they have) is not sent. A new subscriber's roster is the view
merged with the roster the state returned, so it agrees with the other subscribers' rosters and with
every event still to come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.connection import Connection
from gateway.frames import frame_size, text_frame
from gateway.replay_cache import ReplayCache
from shared import metrics
from shared.bus.base import Bus, Envelope
from shared.protocol import codes, events, messages
from shared.protocol.channels import SERVER_TO_USER_PREFIX, WATCH_PREFIX, channel_type
from shared.protocol.users import loads_exact, user_key
from shared.state.base import Member, Stamp

log = logging.getLogger("herald.gateway")

Topic = tuple[str, str]

_DELIVERIES = metrics.DELIVERIES.values
_MESSAGES_OUT = metrics.MESSAGES_OUT.values
_BYTES_OUT = metrics.BYTES_OUT.values

# The `type` label of the subscription and channel gauges; '#' topics (sign-in, watchlists) are "internal".
INTERNAL_TYPE = "internal"


def metric_type(channel: str) -> str:
    return INTERNAL_TYPE if channel.startswith("#") else channel_type(channel).kind.value

# A removed member's stamp is kept this long (in stamp time, microseconds) to drop a member_added
# that was overtaken by the removal; a message is never that late.
ABSENCE_MEMORY_US = 60_000_000


class PresenceView:
    """What this node's subscribers of one presence channel were told: user key -> (stamp, the member,
    or None when told it left)."""

    __slots__ = ("_absences", "users")

    def __init__(self) -> None:
        self.users: dict[str, tuple[Stamp, Member | None]] = {}
        self._absences: deque[tuple[Stamp, str]] = deque()

    def apply(self, key: str, stamp: Stamp, member: Member | None) -> bool:
        """One member event (member None: removed); True when subscribers must be told. Without a
        stamp (an envelope from an older node) only the change itself is checked."""
        entry = self.users.get(key)
        if entry is not None and stamp and entry[0] >= stamp:
            return False  # overtaken by what subscribers were already told
        was_present = entry is not None and entry[1] is not None
        self.users[key] = (stamp or (entry[0] if entry is not None else 0), member)
        if member is None:
            self._absent(stamp, key)
        return was_present != (member is not None)

    def merge(self, members: Sequence[Member], stamp: Stamp) -> list[tuple[Member, bool]]:
        """A roster read at `stamp`: every user whose entry is older takes the roster's word. Returns
        the changes subscribers must be told, as (member, True: added / False: removed)."""
        roster = {m.key: m for m in members}
        changes: list[tuple[Member, bool]] = []
        for key, member in roster.items():
            entry = self.users.get(key)
            if entry is None or entry[0] < stamp:
                if entry is None or entry[1] is None:
                    changes.append((member, True))
                    self.users[key] = (stamp, member)
                else:
                    self.users[key] = (stamp, entry[1])  # subscribers keep the info they were given
        for key, (seen, present) in list(self.users.items()):
            if present is not None and seen < stamp and key not in roster:
                self.users[key] = (stamp, None)
                self._absent(stamp, key)
                changes.append((present, False))
        return changes

    def roster(self) -> list[Member]:
        return [m for _, m in self.users.values() if m is not None]

    def _absent(self, stamp: Stamp, key: str) -> None:
        absences = self._absences
        absences.append((stamp, key))
        while absences and absences[0][0] < stamp - ABSENCE_MEMORY_US:
            old, gone = absences.popleft()
            entry = self.users.get(gone)
            if entry is not None and entry[1] is None and entry[0] == old:
                del self.users[gone]


def _member_event(env: Envelope) -> tuple[str, Member | None] | None:
    """The user key and member (None: removed) of a member event from the bus."""
    try:
        data: Any = orjson.loads(env.data)
        if isinstance(data.get("user_id"), float):
            data = loads_exact(env.data)  # an integer id beyond 64 bits (shared.protocol.users)
        user_id = data["user_id"]
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        log.warning("malformed %s on %s dropped", env.event, env.channel)
        return None
    member = Member(user_id, data.get("user_info")) if env.event == events.MEMBER_ADDED else None
    return user_key(user_id), member


def event_payload(env: Envelope) -> bytes:
    """The client frame of an event published on the bus: one home for live and replay."""
    if env.channel.startswith(WATCH_PREFIX):
        # Watchlist events are connection-level: no channel field.
        return messages.event(env.event, env.data)
    if env.user_id is not None:
        return messages.event(env.event, env.data, env.channel, user_id=env.user_id)
    if env.position is not None:
        return messages.event(env.event, env.data, env.channel, position=env.position)
    return messages.event(env.event, env.data, env.channel)


class Hub:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._members: dict[Topic, dict[str, Connection]] = {}
        # Topic -> completed (or in-flight) bus subscription.
        self._ready: dict[Topic, asyncio.Future[None]] = {}
        self.replay = ReplayCache()
        # Presence channels with local sockets -> what those sockets were told (see PresenceView).
        self._views: dict[Topic, PresenceView] = {}
        bus.set_receiver(self.deliver)

    def topics(self) -> list[Topic]:
        """Topics with local sockets (tests check that nothing is left behind)."""
        return list(self._members)

    def local_count(self, app_id: str, channel: str) -> int:
        return len(self._members.get((app_id, channel), ()))

    async def join(self, conn: Connection, channel: str, hold: bool = True) -> None:
        """Add `conn` to `channel`, holding its events until `conn.release(channel)` (unless `hold` is
        False: internal topics have no subscription confirmation to wait for).

        Returns after the node's bus subscription for the channel is active, so no event published
        after this returns can be missed.
        """
        topic = (conn.app.id, channel)
        if hold:
            conn.held[channel] = []
        members = self._members.get(topic)
        kind = metric_type(channel)
        if members is None:
            members = self._members[topic] = {}
            metrics.CHANNELS.labels(kind).inc()
        if conn.socket_id not in members:
            metrics.CHANNEL_SUBSCRIPTIONS.labels(kind).inc()
        members[conn.socket_id] = conn
        if topic not in self._views and channel_type(channel).is_presence:
            self._views[topic] = PresenceView()
        ready = self._ready.get(topic)
        if ready is None:
            ready = asyncio.get_running_loop().create_future()
            self._ready[topic] = ready
            try:
                await self.bus.subscribe(*topic)
            except BaseException as exc:
                self._ready.pop(topic, None)
                ready.set_exception(exc)
                ready.exception()  # mark retrieved; waiters re-raise below
                conn.held.pop(channel, None)
                self._drop(conn, topic)
                raise
            ready.set_result(None)
        elif not ready.done():
            try:
                await asyncio.shield(ready)
            except BaseException:
                conn.held.pop(channel, None)
                self._drop(conn, topic)
                raise

    async def leave(self, conn: Connection, channel: str) -> None:
        topic = (conn.app.id, channel)
        conn.held.pop(channel, None)
        if self._drop(conn, topic):
            ready = self._ready.pop(topic, None)
            if ready is None:
                return
            try:
                # A subscribe still in flight must finish before it can be undone (the bus counts them).
                await asyncio.shield(ready)
                await self.bus.unsubscribe(*topic)
            except Exception:
                # The subscribe itself failed (it was never counted), or the bus is away: it restores
                # only the topics it still counts when it reconnects, so nothing is left behind.
                log.warning("bus unsubscribe failed for %s", topic, exc_info=True)

    def _drop(self, conn: Connection, topic: Topic) -> bool:
        """Remove conn from topic; True when the topic has no local sockets left."""
        members = self._members.get(topic)
        if members is None:
            return False
        kind = metric_type(topic[1])
        if members.pop(conn.socket_id, None) is not None:
            metrics.CHANNEL_SUBSCRIPTIONS.labels(kind).dec()
        if members:
            return False
        del self._members[topic]
        self.replay.drop(topic)
        metrics.CHANNELS.labels(kind).dec()
        self._views.pop(topic, None)
        return True

    # -- presence ------------------------------------------------------------------------------

    def presence_joined(self, conn: Connection, channel: str, members: Sequence[Member], stamp: Stamp) -> str:
        """`conn` joined a presence channel and the state returned `members` at `stamp`: merge them into
        the channel's view (telling the other local subscribers what changed) and return the roster
        payload for `conn`."""
        topic = (conn.app.id, channel)
        view = self._views.get(topic)
        if view is None:
            view = self._views[topic] = PresenceView()
        self._tell(topic, channel, view.merge(members, stamp), skip=conn.socket_id)
        return messages.presence_roster([(m.user_id, m.user_info) for m in view.roster()])

    def presence_roster(self, conn: Connection, channel: str) -> str:
        """The roster payload of what the channel's local subscribers were told."""
        view = self._views.get((conn.app.id, channel))
        members = view.roster() if view is not None else []
        return messages.presence_roster([(m.user_id, m.user_info) for m in members])

    def presence_topics(self) -> list[Topic]:
        return list(self._views)

    def presence_refresh(self, topic: Topic, members: Sequence[Member], stamp: Stamp) -> int:
        """Correct a channel's view with a roster re-read from the state (after a re-sync): subscribers
        are told what they missed. Returns the number of corrections."""
        view = self._views.get(topic)
        if view is None:
            return 0
        changes = view.merge(members, stamp)
        self._tell(topic, topic[1], changes)
        return len(changes)

    def _tell(self, topic: Topic, channel: str, changes: list[tuple[Member, bool]], skip: str | None = None) -> None:
        members = self._members.get(topic)
        if not changes or not members:
            return
        for member, added in changes:
            if added:
                payload = messages.event(events.MEMBER_ADDED,
                                         messages.member_added_data(member.user_id, member.user_info), channel)
            else:
                payload = messages.event(events.MEMBER_REMOVED, messages.member_removed_data(member.user_id),
                                         channel)
            self._send_settled(topic[0], members, channel, payload, skip)

    @staticmethod
    def _send_settled(app_id: str, members: dict[str, Connection], channel: str, payload: bytes,
                      skip: str | None) -> None:
        """A member event to the local sockets whose subscription is confirmed (a pending one gets the
        view as its roster instead), counted like a broadcast."""
        wire = text_frame(payload)
        sent = 0
        for socket_id, conn in members.items():
            if socket_id != skip and channel not in conn.held:
                conn.deliver(channel, payload, wire)
                sent += 1
        key = (app_id,)
        _DELIVERIES[key] = _DELIVERIES.get(key, 0) + sent
        _MESSAGES_OUT[key] = _MESSAGES_OUT.get(key, 0) + sent
        _BYTES_OUT[()] += len(wire) * sent

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, env: Envelope) -> None:
        topic = (env.app_id, env.channel)
        members = self._members.get(topic)
        if not members:
            return
        if env.event == events.TERMINATE_CONNECTIONS and env.channel.startswith(SERVER_TO_USER_PREFIX):
            self.terminate(members)
            return
        if env.event in (events.MEMBER_ADDED, events.MEMBER_REMOVED):
            view = self._views.get(topic)
            if view is not None:
                self._deliver_member_event(env, view, members)
                return
        payload = event_payload(env)
        wire = text_frame(payload)
        exclude = env.exclude
        position = env.position
        channel = env.channel
        sent = notices = 0
        # The per-socket loop is the hottest code of a gateway: channels without history keep the call
        # they always made (loadtest/history_cost.py measures both).
        if position is None:
            for socket_id, conn in members.items():
                if socket_id != exclude:
                    conn.deliver(channel, payload, wire)
                    sent += 1
        else:
            for socket_id, conn in members.items():
                if socket_id != exclude:
                    conn.deliver(channel, payload, wire, position)
                    sent += 1
            self.replay.add((env.app_id, channel), position, (payload, wire, exclude))
            skipped = members.get(exclude) if exclude is not None else None
            if skipped is not None:
                notice = messages.skipped(channel, position)
                skipped.deliver(channel, notice, None, position)
                notices = 1
                _BYTES_OUT[()] += frame_size(len(notice))
        # Counted once per broadcast (the sockets' own sends don't count these again).
        key = (env.app_id,)
        deliveries, messages_out = _DELIVERIES, _MESSAGES_OUT
        deliveries[key] = deliveries.get(key, 0) + sent
        messages_out[key] = messages_out.get(key, 0) + sent + notices
        _BYTES_OUT[()] += len(wire) * sent
        if env.ts:
            metrics.BUS_LAG.observe(max(0.0, time.time() - env.ts))

    def _deliver_member_event(self, env: Envelope, view: PresenceView, members: dict[str, Connection]) -> None:
        parsed = _member_event(env)
        if parsed is None or not view.apply(parsed[0], env.order, parsed[1]):
            metrics.MEMBER_EVENTS_DROPPED.inc()
            return
        payload = messages.event(env.event, env.data, env.channel)
        self._send_settled(env.app_id, members, env.channel, payload, env.exclude)

    @staticmethod
    def terminate(members: dict[str, Connection]) -> None:
        """terminate_connections: close the user's signed-in sockets with 4009."""
        for conn in list(members.values()):
            conn.send(messages.error("You got disconnected by the app.", codes.UNAUTHORIZED))
            conn.sink.close(codes.UNAUTHORIZED, "You got disconnected by the app.")
