"""HTTP API validation rules and responses, through the ASGI app over the in-memory backend.

Requests are signed by the independent signer in test_http_signing; counts come from the in-memory
stores prefilled the way the gateway fills them; published events are observed on the in-memory bus.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import REGISTRY

from shared.apps.config import AppConfig
from shared.backend import Backend, memory_backend
from shared.bus.base import BusUnavailable, Envelope
from shared.bus.memory_impl import MemoryBus
from shared.history.base import offset_of
from shared.state.base import Member, StoreUnavailable
from shared.state.memory_impl import MemoryOccupancyStore
from tests.unit.trigger_api.test_http_signing import Harness, make_harness, sign_query
from trigger_api.errors import ApiError
from trigger_api.handlers import MAX_BODY_BYTES
from trigger_api.validation import parse_batch, parse_event

EVENTS = "/apps/app-1/events"
BATCH = "/apps/app-1/batch_events"


@pytest.fixture
def api() -> Iterator[Harness]:
    yield from make_harness()


def event(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {"name": "my-event", "data": '{"x":1}', "channels": ["ch-1"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def subscribe(api: Harness, channel: str, socket_id: str, user_id: object = None) -> None:
    """Record a subscription in the stores as the gateway does (presence: occupancy and roster)."""
    api.run(api.backend.occupancy.add("app-1", channel, socket_id))
    if user_id is not None:
        api.run(api.backend.presence.join("app-1", channel, socket_id, Member(user_id, {}), 100))


def assert_error(result: tuple[int, object], status: int, *fragments: str) -> None:
    code, body = result
    assert code == status, body
    assert isinstance(body, dict) and body["code"] == status and set(body) == {"error", "code"}
    for fragment in fragments:
        assert fragment in body["error"], body


# -- POST /events -----------------------------------------------------------------------------------


def test_trigger_publishes_one_envelope_per_channel(api: Harness) -> None:
    api.listen("app-1", "ch-1", "ch-2", "#server-to-user-42")
    result = api.post(EVENTS, event(channels=["ch-1", "ch-2", "ch-1", "#server-to-user-42"],
                                    socket_id="123.456"))
    assert result == (200, {})
    assert [(e.channel, e.event, e.data, e.exclude) for e in api.received] == [
        ("ch-1", "my-event", '{"x":1}', "123.456"),
        ("ch-2", "my-event", '{"x":1}', "123.456"),
        ("#server-to-user-42", "my-event", '{"x":1}', "123.456"),
    ]
    assert all(e.origin == api.backend.node_id and e.ts > 0 for e in api.received)


def test_trigger_single_channel_form(api: Harness) -> None:
    api.listen("app-1", "solo")
    assert api.post(EVENTS, event(channels=None, channel="solo")) == (200, {})
    assert [e.channel for e in api.received] == ["solo"]


def test_trigger_with_info_reports_counts(api: Harness) -> None:
    subscribe(api, "presence-room", "1.1", user_id=10)
    subscribe(api, "presence-room", "1.2", user_id=10)
    subscribe(api, "presence-room", "1.3", user_id="ann")
    subscribe(api, "news", "1.4")
    result = api.post(EVENTS, event(channels=["presence-room", "news", "empty"],
                                    info="user_count,subscription_count"))
    assert result == (200, {"channels": {
        "presence-room": {"user_count": 2, "subscription_count": 3},
        "news": {"subscription_count": 1},
        "empty": {"subscription_count": 0},
    }})


def test_trigger_info_user_count_only(api: Harness) -> None:
    subscribe(api, "presence-room", "1.1", user_id="ann")
    result = api.post(EVENTS, event(channels=["presence-room", "news"], info="user_count"))
    assert result == (200, {"channels": {"presence-room": {"user_count": 1}, "news": {}}})


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        ({"name": None}, ["name is required"]),
        ({"name": ""}, ["name is required"]),
        ({"name": 5}, ["name is required"]),
        ({"name": "e" * 201}, ["name is 201 characters long; the limit is 200"]),
        # Only the server sends these; pusher-js acts on them (fake member events, terminate).
        ({"name": "pusher_internal:member_added"}, ["reserved"]),
        ({"name": "pusher_internal:terminate_connections"}, ["reserved"]),
        ({"name": "pusher:subscription_succeeded"}, ["reserved"]),
        ({"data": None}, ["data is required and must be a string", "missing"]),
        ({"data": {"x": 1}}, ["data is required and must be a string", "an object"]),
        ({"channels": None}, ["channels is required"]),
        ({"channels": []}, ["at least one channel"]),
        ({"channels": "ch-1"}, ["channels must be a list", "a string"]),
        ({"channels": [f"c{i}" for i in range(101)]}, ["101 entries; at most 100"]),
        ({"channels": ["ok", "bad name"]}, ["Invalid channel name 'bad name'"]),
        ({"channels": ["ok", 7]}, ["Invalid channel name", "non-empty string"]),
        ({"channels": ["#secret"]}, ["'#secret'", "reserved"]),
        ({"channels": ["c" * 201]}, ["longer than 200"]),
        ({"channel": "x"}, ["either 'channels' or 'channel'"]),
        ({"channels": ["private-encrypted-a", "b"]}, ["encrypted channel cannot be triggered together"]),
        ({"socket_id": "abc"}, ["Invalid socket_id 'abc'"]),
        ({"socket_id": "1.2.3"}, ["Invalid socket_id"]),
        ({"socket_id": "\u0661.\u0662"}, ["Invalid socket_id"]),  # Arabic-Indic digits
        ({"socket_id": 1.2}, ["Invalid socket_id 1.2"]),
        ({"info": "user_count"}, ["user_count is only available for presence channels"]),
        ({"info": "occupied"}, ["unknown attribute 'occupied'"]),
        ({"info": ["user_count"]}, ["info must be a comma-separated string"]),
    ],
)
def test_trigger_validation_errors(api: Harness, fields: dict[str, object], fragments: list[str]) -> None:
    api.listen("app-1", "ch-1", "ok", "b")
    assert_error(api.post(EVENTS, event(**fields)), 400, *fragments)
    assert api.received == []


def test_data_size_limit_is_bytes(api: Harness) -> None:
    api.listen("app-1", "ch-1")
    assert api.post(EVENTS, event(data="x" * 10240)) == (200, {})
    assert_error(api.post(EVENTS, event(data="x" * 10241)), 413, "10241 bytes; the limit is 10240 bytes")
    # 5121 two-byte characters: 5121 characters but 10242 bytes.
    assert_error(api.post(EVENTS, event(data="é" * 5121)), 413, "10242 bytes")
    assert len(api.received) == 1


def test_encrypted_channel_alone_is_accepted(api: Harness) -> None:
    api.listen("app-1", "private-encrypted-a")
    assert api.post(EVENTS, event(channels=["private-encrypted-a"], data='{"nonce":"n","ciphertext":"c"}')) \
        == (200, {})
    assert [e.channel for e in api.received] == ["private-encrypted-a"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"text"', "must be a JSON object, got a string"),
        (b"", "Request body is empty"),
        (b'{"name": "e", "data": "\\ud800", "channels": ["a"]}', "not valid JSON"),
    ],
)
def test_malformed_bodies_are_400(api: Harness, raw: bytes, fragment: str) -> None:
    assert_error(api.post(EVENTS, None, raw=raw), 400, fragment)


def test_body_over_one_mebibyte_is_413(api: Harness) -> None:
    raw = json.dumps(event(data="x" * MAX_BODY_BYTES)).encode()
    assert_error(api.post(EVENTS, None, raw=raw), 413, f"larger than {MAX_BODY_BYTES} bytes")


SMALL = AppConfig(id="9", key="k9", secret="s9", max_event_channels_at_once=2, max_event_name_length=3,
                  max_event_payload_in_kb=0.01, max_event_batch_size=1, max_channel_name_length=5)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({}, 200),
        ({"channels": ["a", "b", "c"]}, 400),
        ({"name": "abcd"}, 400),
        ({"data": "x" * 11}, 413),
        ({"channels": ["abcdef"]}, 400),
    ],
)
def test_limits_are_the_apps_own(fields: dict[str, object], status: int) -> None:
    body = {"name": "abc", "data": "x" * 10, "channels": ["a", "b"], **fields}
    if status == 200:
        assert parse_event(body, SMALL).channels == ("a", "b")
    else:
        with pytest.raises(ApiError) as err:
            parse_event(body, SMALL)
        assert err.value.status == status


def test_batch_limit_is_the_apps_own() -> None:
    one = {"name": "a", "data": "", "channel": "a"}
    with pytest.raises(ApiError) as err:
        parse_batch({"batch": [one, one]}, SMALL)
    assert (err.value.status, err.value.message) == (400, "Cannot batch-send more than 1 messages at once")


# -- POST /batch_events -----------------------------------------------------------------------------


def item(channel: str, name: str = "e", **extra: object) -> dict[str, object]:
    return {"name": name, "channel": channel, "data": '"hi"', **extra}


def test_batch_publishes_every_item(api: Harness) -> None:
    api.listen("app-1", "a", "b")
    result = api.post(BATCH, {"batch": [item("a", "e1"), item("b", "e2", socket_id="1.2")]})
    assert result == (200, {})
    assert [(e.channel, e.event, e.exclude) for e in api.received] == [("a", "e1", None), ("b", "e2", "1.2")]


def test_batch_info_is_aligned_with_items(api: Harness) -> None:
    subscribe(api, "presence-x", "1.1", user_id=1)
    subscribe(api, "presence-x", "1.2", user_id=2)
    subscribe(api, "c", "1.3")
    batch = [
        item("presence-x", info="user_count,subscription_count"),
        item("a"),
        item("c", info="subscription_count"),
    ]
    assert api.post(BATCH, {"batch": batch}) == (200, {"batch": [
        {"user_count": 2, "subscription_count": 2}, {}, {"subscription_count": 1},
    ]})


def test_batch_over_the_limit_is_400(api: Harness) -> None:
    assert_error(api.post(BATCH, {"batch": [item("a")] * 11}), 400,
                 "Cannot batch-send more than 10 messages at once")
    assert api.post(BATCH, {"batch": [item("a")] * 10}) == (200, {})


@pytest.mark.parametrize(
    ("bad", "status", "fragment"),
    [
        (item("bad channel"), 400, "batch[1]: Invalid channel 'bad channel'"),
        ({"name": "e", "data": "x" * 10241, "channel": "a"}, 413, "batch[1]: data is 10241 bytes"),
        ({"name": "e", "data": "x", "channels": ["a"]}, 400, "batch[1]: a batch item takes a single 'channel'"),
        (item("a", info="user_count"), 400, "batch[1]: info user_count is only available"),
        ("not an object", 400, "batch[1]: each batch item must be a JSON object"),
    ],
)
def test_batch_is_all_or_nothing(api: Harness, bad: object, status: int, fragment: str) -> None:
    api.listen("app-1", "a", "b")
    assert_error(api.post(BATCH, {"batch": [item("a"), bad, item("b")]}), status, fragment)
    assert api.received == []


def test_batch_requires_a_list(api: Harness) -> None:
    assert_error(api.post(BATCH, {"events": []}), 400, "batch is required", "missing")
    assert_error(api.post(BATCH, {"batch": {}}), 400, "batch is required", "an object")


# -- bus failures -----------------------------------------------------------------------------------


class FailingBus(MemoryBus):
    """The in-memory bus, failing after `allow` publishes as a Redis bus does when Redis goes away."""

    def __init__(self, allow: int) -> None:
        super().__init__()
        self.allow = allow

    async def publish(self, envelope: Envelope) -> None:
        if self.allow <= 0:
            raise BusUnavailable("redis connection refused")
        self.allow -= 1
        await super().publish(envelope)


@pytest.fixture
def failing() -> Iterator[Harness]:
    backend = memory_backend()
    backend.bus = FailingBus(allow=1)
    yield from make_harness(backend)


def test_bus_unavailable_is_503_never_200(failing: Harness) -> None:
    failing.listen("app-1", "a", "b")
    assert_error(failing.post(EVENTS, event(channels=["a", "b"])), 503,
                 "event bus is unavailable", "1 of 2 channel deliveries were published")
    assert [e.channel for e in failing.received] == ["a"]
    assert_error(failing.post(BATCH, {"batch": [item("a")]}), 503, "0 of 1")


# -- GET /channels ----------------------------------------------------------------------------------


def test_channels_lists_occupied_channels(api: Harness) -> None:
    subscribe(api, "presence-a", "1.1", user_id=1)
    subscribe(api, "presence-b", "1.2", user_id=1)
    subscribe(api, "presence-b", "1.3", user_id=2)
    subscribe(api, "news", "1.4")
    subscribe(api, "#server-to-user-1", "1.5")
    api.run(api.backend.occupancy.add("app-2", "other-app", "9.9"))

    assert api.get("/apps/app-1/channels") == (200, {"channels": {
        "news": {}, "presence-a": {}, "presence-b": {}}})
    assert api.get("/apps/app-1/channels", {"filter_by_prefix": "presence-"}) == (200, {"channels": {
        "presence-a": {}, "presence-b": {}}})
    assert api.get("/apps/app-1/channels", {"filter_by_prefix": "presence-", "info": "user_count"}) == (
        200, {"channels": {"presence-a": {"user_count": 1}, "presence-b": {"user_count": 2}}})
    assert api.get("/apps/app-1/channels", {"filter_by_prefix": "nothing-"}) == (200, {"channels": {}})


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"info": "user_count"}, "requires filter_by_prefix to start with 'presence-'"),
        ({"info": "user_count", "filter_by_prefix": "private-"}, "requires filter_by_prefix"),
        ({"info": "subscription_count"}, "unknown attribute 'subscription_count'"),
        ({"info": "bogus", "filter_by_prefix": "presence-"}, "unknown attribute 'bogus'"),
    ],
)
def test_channels_info_errors(api: Harness, params: dict[str, str], fragment: str) -> None:
    assert_error(api.get("/apps/app-1/channels", params), 400, fragment)


# -- GET /channels/{name} ---------------------------------------------------------------------------


def test_channel_info(api: Harness) -> None:
    subscribe(api, "presence-a", "1.1", user_id=1)
    subscribe(api, "presence-a", "1.2", user_id=1)
    subscribe(api, "news", "1.3")
    assert api.get("/apps/app-1/channels/news") == (200, {"occupied": True})
    assert api.get("/apps/app-1/channels/empty", {"info": "subscription_count"}) == (
        200, {"occupied": False, "subscription_count": 0})
    assert api.get("/apps/app-1/channels/presence-a", {"info": "user_count,subscription_count"}) == (
        200, {"occupied": True, "user_count": 1, "subscription_count": 2})
    assert api.get("/apps/app-1/channels/cache-x", {"info": "cache"}) == (
        200, {"occupied": False, "cache": None})


@pytest.mark.parametrize(
    ("channel", "params", "fragment"),
    [
        ("news", {"info": "user_count"}, "user_count is only available for presence channels, not 'news'"),
        ("news", {"info": "cache"}, "cache is only available for cache channels"),
        ("news", {"info": "members"}, "unknown attribute 'members'"),
        ("bad!name", {}, "Invalid channel name 'bad!name'"),
    ],
)
def test_channel_info_errors(api: Harness, channel: str, params: dict[str, str], fragment: str) -> None:
    assert_error(api.get(f"/apps/app-1/channels/{channel}", params), 400, fragment)


# -- GET /channels/{name}/users ---------------------------------------------------------------------


def test_users_lists_distinct_ids_as_strings(api: Harness) -> None:
    subscribe(api, "presence-a", "1.1", user_id=10)
    subscribe(api, "presence-a", "1.2", user_id=10)
    subscribe(api, "presence-a", "1.3", user_id="ann")
    assert api.get("/apps/app-1/channels/presence-a/users") == (200, {"users": [{"id": "10"}, {"id": "ann"}]})
    assert api.get("/apps/app-1/channels/presence-empty/users") == (200, {"users": []})
    assert_error(api.get("/apps/app-1/channels/news/users"), 400, "only available for presence channels")


# -- terminate_connections --------------------------------------------------------------------------


class TerminatingBackend(Backend):
    """An in-memory backend that also offers the (future) terminate_user hook."""

    terminated: list[tuple[str, str]]

    async def terminate_user(self, app_id: str, user_id: str) -> None:
        self.terminated.append((app_id, user_id))


@pytest.fixture
def terminating() -> Iterator[Harness]:
    mem = memory_backend()
    backend = TerminatingBackend(mem.bus, mem.connections, mem.occupancy, mem.presence, mem.users, mem.cache,
                                 mem.history)
    backend.terminated = []
    yield from make_harness(backend)


def test_terminate_connections_both_paths(terminating: Harness) -> None:
    assert terminating.post("/apps/app-1/users/u-1/terminate_connections", {}) == (200, {})
    assert terminating.post("/users/u-2/terminate_connections", {}) == (200, {})
    assert terminating.post("/users/u-3/terminate_connections", {}, app_id="app-2") == (200, {})
    assert terminating.backend.terminated == [  # type: ignore[attr-defined]
        ("app-1", "u-1"), ("app-1", "u-2"), ("app-2", "u-3")]


def test_terminate_connections_without_hook_is_ok(api: Harness) -> None:
    assert api.post("/apps/app-1/users/u-1/terminate_connections", {}) == (200, {})
    # PHP sends the JSON string "{}"; the body carries no parameters and is not interpreted.
    assert api.post("/apps/app-1/users/u-1/terminate_connections", "{}") == (200, {})


def test_terminate_by_key_path_needs_a_known_key(api: Harness) -> None:
    query = sign_query("POST", "/users/u-1/terminate_connections", "app-1", body=b"{}")
    resp = api.client.post(f"/users/u-1/terminate_connections?{query.replace('key-1', 'key-x')}",
                           content=b"{}")
    assert resp.status_code == 401
    assert resp.json()["error"] == "Invalid auth_key 'key-x': no app has this key"


def test_terminate_user_id_too_long(api: Harness) -> None:
    assert_error(api.post(f"/apps/app-1/users/{'u' * 129}/terminate_connections", {}), 400,
                 "user id must be at most 128 characters")


def test_terminate_takes_every_id_a_user_can_sign_in_with(api: Harness) -> None:
    # The longest id pusher:signin accepts, in the signed-in id alphabet.
    user = "u" * 127 + ";"
    assert api.post(f"/apps/app-1/users/{user}/terminate_connections", {}) == (200, {})


# -- routing, health, metrics -----------------------------------------------------------------------


def test_unknown_api_route_is_404_json(api: Harness) -> None:
    resp = api.client.get("/apps/app-1/connections")
    assert resp.status_code == 404
    assert resp.json() == {"error": "Unknown API endpoint: GET /apps/app-1/connections", "code": 404}


def test_wrong_method_is_405_json(api: Harness) -> None:
    resp = api.client.get("/apps/app-1/events")
    assert resp.status_code == 405
    assert resp.json() == {"error": "Method GET not allowed here; use POST", "code": 405}


def test_requests_are_counted_by_endpoint_and_status(api: Harness) -> None:
    def count(endpoint: str, status: str) -> float:
        value = REGISTRY.get_sample_value(
            "herald_http_requests_total", {"endpoint": endpoint, "status": status})
        return value or 0.0

    ok, bad = count("events", "200"), count("events", "400")
    api.post(EVENTS, event())
    api.post(EVENTS, event(name=""))
    assert (count("events", "200"), count("events", "400")) == (ok + 1, bad + 1)


class UnavailableOccupancy(MemoryOccupancyStore):
    """The in-memory store, failing the way the Redis store reports an outage."""

    async def counts(self, app_id: str, channels: Sequence[str]) -> list[int]:
        raise StoreUnavailable("Redis unavailable: connection refused")

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        raise StoreUnavailable("Redis unavailable: connection refused")


@pytest.fixture
def store_down() -> Iterator[Harness]:
    backend = memory_backend()
    backend.occupancy = UnavailableOccupancy()
    yield from make_harness(backend)


def test_store_unavailable_is_503_and_nothing_is_published(store_down: Harness) -> None:
    store_down.listen("app-1", "ch-1")
    assert_error(store_down.post(EVENTS, event(info="subscription_count")), 503, "Channel state is unavailable")
    assert store_down.received == []
    assert_error(store_down.get("/apps/app-1/channels"), 503, "Channel state is unavailable")
    # Triggers that ask for no counts don't need the store.
    assert store_down.post(EVENTS, event()) == (200, {})


# -- GET /channels/{name}/history (Herald extension) -------------------------------------------------

HISTORY_EVENTS = "/apps/app-h/events"


def history_of(api: Harness, channel: str, **params: str) -> tuple[int, object]:
    return api.get(f"/apps/app-h/channels/{channel}/history", params or None, app_id="app-h")


def test_history_endpoint_pages_through_a_channels_events(api: Harness) -> None:
    assert history_of(api, "room-1") == (200, {"events": [], "position": None, "more": False})
    for n in range(7):  # history_size 5 keeps the last five
        assert api.post(HISTORY_EVENTS, event(channels=["room-1", "other"], data=f'{{"n":{n}}}'),
                        app_id="app-h") == (200, {})
    status, body = history_of(api, "room-1")
    assert status == 200 and isinstance(body, dict)
    events = body["events"]
    assert [e["data"] for e in events] == [f'{{"n":{n}}}' for n in range(2, 7)]
    assert all(e["event"] == "my-event" for e in events)
    assert body["position"] == events[-1]["position"] and body["more"] is False
    positions = [e["position"] for e in events]
    assert [offset_of(p) for p in positions] == [3, 4, 5, 6, 7]

    status, page = history_of(api, "room-1", since=positions[0], limit="2")
    assert status == 200 and isinstance(page, dict)
    assert [e["position"] for e in page["events"]] == positions[1:3] and page["more"] is True
    status, rest = history_of(api, "room-1", since=positions[2], limit="10")
    assert isinstance(rest, dict) and [e["position"] for e in rest["events"]] == positions[3:]
    assert rest["more"] is False
    assert history_of(api, "room-1", since=positions[-1]) == (200, {"events": [], "position": positions[-1],
                                                                    "more": False})
    epoch = positions[0].split("-")[0]
    assert_error(history_of(api, "room-1", since=f"{epoch}-1"), 410, "no longer in the history", positions[-1])


@pytest.mark.parametrize(
    ("channel", "params", "status", "fragment"),
    [
        ("other", {}, 404, "keeps no history"),
        ("cache-x", {}, 404, "cache channels never do"),
        ("room-1", {"limit": "0"}, 400, "limit must be a whole number from 1 to 1000"),
        ("room-1", {"limit": "1001"}, 400, "limit"),
        ("room-1", {"limit": "x"}, 400, "limit"),
        ("room-1", {"since": "7"}, 400, "since must be a position"),
        ("bad%20name", {}, 400, "Invalid channel name"),
    ],
)
def test_history_endpoint_errors(api: Harness, channel: str, params: dict[str, str], status: int,
                                 fragment: str) -> None:
    assert_error(history_of(api, channel, **params), status, fragment)


def test_history_endpoint_of_an_app_without_history(api: Harness) -> None:
    assert_error(api.get("/apps/app-1/channels/room-1/history"), 404, "keeps no history")
