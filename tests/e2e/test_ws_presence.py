"""Presence channels (checklist items 8-9): rosters, member events, multi-tab users, limits.

Absence of a member event is proven with a marker: a client event sent by the joining/leaving socket
itself (or by another member) after the action; the observer's next frame must be that marker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest

from tests.authserver import AuthServer
from tests.helpers import HeraldProcess, running_herald
from tests.pusherjs import NodeDriver
from tests.rawclient import RawClient, channel_auth, open_raw, raw_connect, unique

pytest_plugins = ["tests.wsfixtures"]

KEY, SECRET = "key-1", "secret-1"


def decoded(msg: dict[str, Any]) -> Any:
    assert isinstance(msg["data"], str), f"data must be a JSON string: {msg}"
    return json.loads(msg["data"])


async def send_marker(c: RawClient, channel: str, n: int = 0) -> None:
    await c.send({"event": "client-marker", "channel": channel, "data": {"n": n}})


async def expect_marker(c: RawClient, channel: str) -> dict[str, Any]:
    msg = await c.recv()
    assert msg["event"] == "client-marker" and msg["channel"] == channel, f"expected the marker, got {msg}"
    return msg


# ---- 8. rosters and member events (raw wire form) -----------------------------------------------


async def test_reference_vector_presence_roster(herald_server: HeraldProcess) -> None:
    key, secret = "278d425bdf160c739803", "7ad3773142a6692b25b8"
    channel_data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    channel = unique("presence-foobar")
    async with raw_connect(herald_server.port, key) as c:
        await c.subscribe(channel, channel_auth(key, secret, c.socket_id, channel, channel_data), channel_data)
        msg = await c.expect("pusher_internal:subscription_succeeded", channel)
        assert decoded(msg) == {
            "presence": {"ids": [10], "hash": {"10": {"name": "Mr. Channels"}}, "count": 1}
        }


async def test_presence_join_leave_and_second_tab(herald_server: HeraldProcess) -> None:
    channel = unique("presence-room")
    async with raw_connect(herald_server.port, KEY) as a:
        roster = await a.subscribe_presence(KEY, SECRET, channel, "ua", {"name": "A"})
        assert roster == {"ids": ["ua"], "hash": {"ua": {"name": "A"}}, "count": 1}

        b = await open_raw(herald_server.port, KEY)
        roster = await b.subscribe_presence(KEY, SECRET, channel, "ub", {"name": "B"})
        assert roster["count"] == 2
        assert sorted(roster["ids"]) == ["ua", "ub"]
        assert roster["hash"] == {"ua": {"name": "A"}, "ub": {"name": "B"}}
        added = await a.expect("pusher_internal:member_added", channel)
        assert decoded(added) == {"user_id": "ub", "user_info": {"name": "B"}}

        # The joiner does not get its own member_added: its next frame is a's marker.
        await send_marker(a, channel)
        await expect_marker(b, channel)
        await expect_marker_absent_from_self(a)

        # Second tab of ub: roster unchanged, no member_added for anyone.
        b2 = await open_raw(herald_server.port, KEY)
        roster = await b2.subscribe_presence(KEY, SECRET, channel, "ub", {"name": "B"})
        assert roster["count"] == 2 and sorted(roster["ids"]) == ["ua", "ub"]
        await send_marker(b2, channel, 1)
        await expect_marker(a, channel)
        await expect_marker(b, channel)

        # First tab leaves: ub is still present through b2, no member_removed. (b's ping is a barrier:
        # the server handles b's frames in order, so any member_removed is published before the pong.)
        await b.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        await b.expect_open()
        await send_marker(b2, channel, 2)
        await expect_marker(a, channel)
        await b.close()

        # Last tab leaves (by unsubscribing): member_removed with string data and the user id.
        await b2.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        removed = await a.expect("pusher_internal:member_removed", channel)
        assert decoded(removed) == {"user_id": "ub"}
        await b2.close()

        # A newcomer now sees ua and itself.
        async with raw_connect(herald_server.port, KEY) as c:
            roster = await c.subscribe_presence(KEY, SECRET, channel, "uc")
            assert sorted(roster["ids"]) == ["ua", "uc"] and roster["count"] == 2
            assert set(roster["hash"]) == {"ua", "uc"}
            assert decoded(await a.expect("pusher_internal:member_added", channel))["user_id"] == "uc"
        # Closing the socket is leaving too.
        assert decoded(await a.expect("pusher_internal:member_removed", channel)) == {"user_id": "uc"}


async def expect_marker_absent_from_self(a: RawClient) -> None:
    """The sender of a client event doesn't get it back: the next frame is the pong of a ping."""
    await a.expect_open()


async def test_disconnect_removes_member(herald_server: HeraldProcess) -> None:
    channel = unique("presence-dc")
    async with raw_connect(herald_server.port, KEY) as a:
        await a.subscribe_presence(KEY, SECRET, channel, "ua")
        b = await open_raw(herald_server.port, KEY)
        await b.subscribe_presence(KEY, SECRET, channel, "ub")
        await a.expect("pusher_internal:member_added", channel)
        await b.close()
        removed = await a.expect("pusher_internal:member_removed", channel)
        assert decoded(removed) == {"user_id": "ub"}


async def test_numeric_user_id_stays_a_number(herald_server: HeraldProcess) -> None:
    channel = unique("presence-num")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        roster = await a.subscribe_presence(KEY, SECRET, channel, 42, {"name": "Forty-two"})
        assert roster == {"ids": [42], "hash": {"42": {"name": "Forty-two"}}, "count": 1}
        roster = await b.subscribe_presence(KEY, SECRET, channel, 7)
        assert sorted(roster["ids"]) == [7, 42] and roster["count"] == 2
        assert set(roster["hash"]) == {"7", "42"}
        added = decoded(await a.expect("pusher_internal:member_added", channel))
        assert added["user_id"] == 7 and isinstance(added["user_id"], int)
        await b.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        removed = decoded(await a.expect("pusher_internal:member_removed", channel))
        assert removed == {"user_id": 7}


async def test_number_and_string_with_same_text_are_one_user(herald_server: HeraldProcess) -> None:
    # Users are compared by the string form of their id.
    channel = unique("presence-same")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_presence(KEY, SECRET, channel, 5)
        roster = await b.subscribe_presence(KEY, SECRET, channel, "5")
        assert roster["count"] == 1
        await send_marker(b, channel)
        await expect_marker(a, channel)  # no member_added for the "second tab"


async def test_user_info_absent_is_accepted(herald_server: HeraldProcess) -> None:
    channel = unique("presence-noinfo")
    async with raw_connect(herald_server.port, KEY) as a:
        roster = await a.subscribe_presence(KEY, SECRET, channel, "ua")
        assert roster["ids"] == ["ua"] and roster["count"] == 1 and "ua" in roster["hash"]


async def test_resubscribe_same_socket_sends_no_member_added(herald_server: HeraldProcess) -> None:
    channel = unique("presence-resub")
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        await a.subscribe_presence(KEY, SECRET, channel, "ua")
        await b.subscribe_presence(KEY, SECRET, channel, "ub")
        await a.expect("pusher_internal:member_added", channel)
        roster = await b.subscribe_presence(KEY, SECRET, channel, "ub")
        assert roster["count"] == 2
        await send_marker(b, channel)
        await expect_marker(a, channel)


@pytest.mark.parametrize(
    ("channel_data", "signed"),
    [
        pytest.param(None, True, id="no-channel-data"),
        pytest.param("not json", True, id="channel-data-not-json"),
        pytest.param('{"user_info":{}}', True, id="no-user-id"),
        pytest.param('["user_id"]', True, id="channel-data-not-an-object"),
        pytest.param('{"user_id":""}', True, id="empty-user-id"),
        pytest.param('{"user_id":"u1"}', False, id="unsigned-channel-data"),
    ],
)
async def test_presence_bad_channel_data_is_refused(
    herald_server: HeraldProcess, channel_data: str | None, signed: bool
) -> None:
    channel = unique("presence-bad")
    async with raw_connect(herald_server.port, KEY) as c:
        auth = channel_auth(KEY, SECRET, c.socket_id, channel, channel_data if signed else None)
        await c.subscribe(channel, auth, channel_data)
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == channel, msg
        assert msg["data"]["type"] == "AuthError" and msg["data"]["status"] == 401
        await c.expect_open()


async def test_presence_member_too_large(herald_server: HeraldProcess) -> None:
    channel = unique("presence-big")
    async with raw_connect(herald_server.port, KEY) as c:
        channel_data = json.dumps({"user_id": "u1", "user_info": {"bio": "x" * 2000}})
        await c.subscribe(channel, channel_auth(KEY, SECRET, c.socket_id, channel, channel_data), channel_data)
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == channel, msg
        assert msg["data"]["type"] == "LimitReached" and msg["data"]["status"] == 413
        await c.expect_open()


async def test_presence_user_id_too_long(herald_server: HeraldProcess) -> None:
    channel = unique("presence-longid")
    async with raw_connect(herald_server.port, KEY) as c:
        channel_data = json.dumps({"user_id": "u" * 129})
        await c.subscribe(channel, channel_auth(KEY, SECRET, c.socket_id, channel, channel_data), channel_data)
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error", msg
        assert msg["data"]["type"] == "LimitReached" and msg["data"]["status"] == 413
        await c.expect_open()


# ---- 8. presence through pusher-js --------------------------------------------------------------


async def test_pusherjs_presence_members(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("presence-js")
    auth_server.set_user("a", "alice", {"name": "Alice"})
    auth_server.set_user("b", "bob", {"name": "Bob"})
    auth_server.set_user("b2", "bob", {"name": "Bob"})
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    ok = await a.subscribe(channel)
    assert ok is not None
    assert ok["data"] == {
        "count": 1,
        "me": {"id": "alice", "info": {"name": "Alice"}},
        "list": [{"id": "alice", "info": {"name": "Alice"}}],
    }

    b = await node.connect("b", KEY, herald_server.port, auth=auth_server)
    ok = await b.subscribe(channel)
    assert ok is not None
    assert ok["data"]["count"] == 2
    assert ok["data"]["me"] == {"id": "bob", "info": {"name": "Bob"}}
    assert sorted(m["id"] for m in ok["data"]["list"]) == ["alice", "bob"]
    added = await a.wait_event(channel, "pusher:member_added")
    assert added["data"] == {"id": "bob", "info": {"name": "Bob"}}
    assert added["members"]["count"] == 2

    # Bob's second tab: nothing for Alice but the marker Bob's second tab sends after joining.
    b2 = await node.connect("b2", KEY, herald_server.port, auth=auth_server)
    ok = await b2.subscribe(channel)
    assert ok is not None and ok["data"]["count"] == 2
    a.skip_to_end()
    await b2.trigger(channel, "client-marker", {"from": "b2"})
    nxt = await a.next_message()
    assert nxt["event"] == "client-marker", a.history()
    assert (await a.members(channel))["count"] == 2

    # One of Bob's tabs leaves: still present. (b's ping/pong is the barrier after its unsubscribe.)
    await b.unsubscribe(channel)
    await b.barrier()
    await b2.trigger(channel, "client-marker", {"from": "b2", "n": 2})
    nxt = await a.next_message()
    assert nxt["event"] == "client-marker", a.history()
    assert (await a.members(channel))["count"] == 2
    await b.disconnect()

    # The last tab leaves: member_removed.
    await b2.disconnect()
    removed = await a.wait_event(channel, "pusher:member_removed")
    assert removed["data"] == {"id": "bob", "info": {"name": "Bob"}}
    assert removed["members"]["count"] == 1
    members = await a.members(channel)
    assert members["count"] == 1 and members["me"] == {"id": "alice", "info": {"name": "Alice"}}


async def test_pusherjs_presence_numeric_user_id(
    herald_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    channel = unique("presence-js-num")
    auth_server.set_user("a", 1001, {"name": "One"})
    auth_server.set_user("b", 1002)
    a = await node.connect("a", KEY, herald_server.port, auth=auth_server)
    await a.subscribe(channel)
    assert a.last_frame(channel)["data"]["presence"]["ids"] == [1001]
    members = await a.members(channel)
    assert members["me"] == {"id": 1001, "info": {"name": "One"}}  # pusher-js keeps its own id's type
    b = await node.connect("b", KEY, herald_server.port, auth=auth_server)
    await b.subscribe(channel)
    added = await a.wait_for(lambda r: r["type"] == "message" and r["event"] == "pusher_internal:member_added")
    assert added["data"]["user_id"] == 1002
    assert (await a.members(channel))["count"] == 2


# ---- 9. member limit ------------------------------------------------------------------------------
# app-small's max_connections (2) makes a third member impossible on the shared server, so this
# uses its own server with a presence limit of 2 and no connection limit.

LIMIT_APPS = [
    {"id": "9", "key": "key-limit", "secret": "secret-limit", "max_presence_members_per_channel": 2,
     "enable_client_messages": True},
]


@pytest.fixture(scope="module")
def limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    tmp: Path = tmp_path_factory.mktemp("herald-limit")
    with running_herald(tmp, apps=LIMIT_APPS, name="limit") as herald:
        yield herald


async def test_presence_over_member_limit(limit_server: HeraldProcess) -> None:
    key, secret = "key-limit", "secret-limit"
    channel = unique("presence-full")
    async with (
        raw_connect(limit_server.port, key) as a,
        raw_connect(limit_server.port, key) as b,
        raw_connect(limit_server.port, key) as c,
        raw_connect(limit_server.port, key) as b2,
    ):
        await a.subscribe_presence(key, secret, channel, "ua")
        await b.subscribe_presence(key, secret, channel, "ub")
        await a.expect("pusher_internal:member_added", channel)

        channel_data = json.dumps({"user_id": "uc"})
        await c.subscribe(channel, channel_auth(key, secret, c.socket_id, channel, channel_data), channel_data)
        msg = await c.recv()
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == channel, msg
        assert msg["data"]["type"] == "LimitReached" and msg["data"]["status"] == 4100
        assert isinstance(msg["data"]["error"], str)
        await c.expect_open()

        # c is not a member: no member_added for anyone, and c doesn't get the channel's events.
        await send_marker(a, channel)
        await expect_marker(b, channel)
        # (had c been subscribed, a's marker would have been queued for c before this pong)
        await c.expect_open()

        # Another tab of a present user doesn't count against the limit.
        roster = await b2.subscribe_presence(key, secret, channel, "ub")
        assert roster["count"] == 2

        # When a member leaves, there is room again.
        await a.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
        await b.expect("pusher_internal:member_removed", channel)
        roster = await c.subscribe_presence(key, secret, channel, "uc")
        assert roster["count"] == 2 and sorted(roster["ids"]) == ["ub", "uc"]


async def test_pusherjs_presence_over_member_limit(
    limit_server: HeraldProcess, node: NodeDriver, auth_server: AuthServer
) -> None:
    auth_server.add_app(LIMIT_APPS[0])
    channel = unique("presence-js-full")
    for name in ("a", "b", "c"):
        auth_server.set_user(name, f"user-{name}")
    clients = [await node.connect(n, "key-limit", limit_server.port, auth=auth_server) for n in ("a", "b", "c")]
    await clients[0].subscribe(channel)
    await clients[1].subscribe(channel)
    error = await clients[2].subscribe_expect_error(channel)
    assert error["data"]["type"] == "LimitReached"
    assert error["data"]["status"] == 4100
    assert clients[2].state == "connected"


# ---- user ids beyond 64 bits (issue 9) ------------------------------------------------------------


async def test_integer_user_ids_beyond_64_bits_stay_distinct_and_exact(herald_server: HeraldProcess) -> None:
    """2**70 and 2**70 + 1 are two members (a 64-bit float would make them one), sent back digit for
    digit in rosters, member events and `/users`."""
    channel = unique("presence-big")
    big, bigger = 2**70, 2**70 + 1
    async with raw_connect(herald_server.port, KEY) as a, raw_connect(herald_server.port, KEY) as b:
        for client, user in ((a, big), (b, bigger)):
            channel_data = f'{{"user_id":{user}}}'
            await client.subscribe(channel, channel_auth(KEY, SECRET, client.socket_id, channel, channel_data),
                                   channel_data)
            msg = await client.expect("pusher_internal:subscription_succeeded", channel)
        assert str(bigger) in msg["data"] and str(big) in msg["data"]
        assert decoded(msg)["presence"]["count"] == 2
        added = await a.expect("pusher_internal:member_added", channel)
        assert added["data"] == f'{{"user_id":{bigger},"user_info":null}}'
        sdk = pusher.Pusher(app_id="1", key=KEY, secret=SECRET, host="127.0.0.1", port=herald_server.port,
                                ssl=False)
        users = sdk.users_info(channel)["users"]
        assert sorted(u["id"] for u in users) == [str(big), str(bigger)]
        await b.close()
        removed = await a.expect("pusher_internal:member_removed", channel)
        assert removed["data"] == f'{{"user_id":{bigger}}}'
