"""Channel history stores (shared/history), one behaviour suite run over the memory and the Redis
implementations (conftest.BACKEND_FACTORIES), plus the envelope's position field and the publish step.
"""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from shared.apps.config import AppConfig
from shared.backend import Backend
from shared.bus.base import Envelope
from shared.history.base import HistoryPolicy, history_policy, offset_of, parse_position
from shared.history.memory_impl import MemoryHistoryStore
from shared.history.publish import publish_channel_events
from tests.unit.bus.test_bus import Recorder, env
from tests.unit.fakes import ManualClock

POLICY = HistoryPolicy(size=5, ttl_s=60)


def epoch_of(position: str | None) -> str:
    parsed = parse_position(position)
    assert parsed is not None, position
    return parsed[0]


async def publish(backend: Backend, app_id: str, channel: str, count: int, policy: HistoryPolicy = POLICY,
                  start: int = 0) -> list[Envelope]:
    sent = [env(app_id, channel, "ev", f'{{"n":{start + i}}}') for i in range(count)]
    for e in sent:
        await backend.history.publish([(e, policy)])
    return sent


# -- positions and publishing ------------------------------------------------------------------------


async def test_positions_count_up_from_one_and_travel_on_the_bus(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    await backend.bus.subscribe(app_id, "room")
    sent = await publish(backend, app_id, "room", 3)
    got = await rec.wait_for(app_id, "room", 3)
    assert [offset_of(e.position or "") for e in sent] == [1, 2, 3]
    assert len({epoch_of(e.position) for e in sent}) == 1
    assert [(e.data, e.position) for e in got] == [(e.data, e.position) for e in sent]


async def test_channels_have_their_own_positions(backend: Backend, app_id: str) -> None:
    a = await publish(backend, app_id, "a", 2)
    b = await publish(backend, app_id, "b", 1)
    assert [offset_of(e.position or "") for e in a + b] == [1, 2, 1]
    assert epoch_of(a[0].position) != epoch_of(b[0].position)


async def test_one_call_with_many_channels_keeps_each_channels_order(backend: Backend, app_id: str) -> None:
    rec = Recorder(backend)
    for channel in ("x", "y"):
        await backend.bus.subscribe(app_id, channel)
    items = [(env(app_id, "x" if i % 2 else "y", "ev", str(i)), POLICY) for i in range(8)]
    await backend.history.publish(items)
    for channel in ("x", "y"):
        got = await rec.wait_for(app_id, channel, 4)
        assert [offset_of(e.position or "") for e in got] == [1, 2, 3, 4]
        assert [e.data for e in got] == [e.data for e, _ in items if e.channel == channel]


async def test_head_of_a_new_channel_fixes_its_epoch(backend: Backend, app_id: str) -> None:
    head = await backend.history.head(app_id, "quiet", POLICY)
    epoch, offset = parse_position(head) or ("", -1)
    assert offset == 0
    assert await backend.history.head(app_id, "quiet", POLICY) == head
    [first] = await publish(backend, app_id, "quiet", 1)
    assert first.position == f"{epoch}-1"
    read = await backend.history.read(app_id, "quiet", head, 10)
    assert read.continuous and [e.position for e in read.events] == [first.position]


# -- reading -----------------------------------------------------------------------------------------


async def test_read_after_a_position(backend: Backend, app_id: str) -> None:
    sent = await publish(backend, app_id, "r", 5)
    read = await backend.history.read(app_id, "r", sent[1].position or "", 10)
    assert read.continuous and read.complete
    assert read.head == sent[-1].position
    assert [(e.event, e.data, e.position) for e in read.events] == [(e.event, e.data, e.position)
                                                                    for e in sent[2:]]
    # Page by page.
    page = await backend.history.read(app_id, "r", sent[0].position or "", 2)
    assert [e.position for e in page.events] == [e.position for e in sent[1:3]]
    assert page.continuous and not page.complete
    # At the head: nothing missing.
    at_head = await backend.history.read(app_id, "r", sent[-1].position or "", 10)
    assert at_head.continuous and at_head.complete and at_head.events == []


async def test_trimmed_other_epoch_and_future_positions_are_not_continuous(backend: Backend, app_id: str) -> None:
    sent = await publish(backend, app_id, "t", 8)  # history_size 5 keeps 4..8
    epoch = epoch_of(sent[0].position)
    kept = await backend.history.read(app_id, "t", f"{epoch}-3", 10)
    assert kept.continuous and [offset_of(e.position or "") for e in kept.events] == [4, 5, 6, 7, 8]
    for since in (f"{epoch}-2", f"{epoch}-0", f"{epoch}-9", f"{int(epoch) % 1000 + 1}-5"):
        read = await backend.history.read(app_id, "t", since, 10)
        assert not read.continuous and read.events == [], since
        assert read.head == sent[-1].position
    missing = await backend.history.read(app_id, "nothing-here", f"{epoch}-1", 10)
    assert missing.head is None and not missing.continuous


async def test_latest(backend: Backend, app_id: str) -> None:
    assert (await backend.history.latest(app_id, "l", 3)).head is None
    await backend.history.head(app_id, "l", POLICY)
    empty = await backend.history.latest(app_id, "l", 3)
    assert empty.events == [] and empty.head is not None
    sent = await publish(backend, app_id, "l", 4)
    latest = await backend.history.latest(app_id, "l", 3)
    assert [e.position for e in latest.events] == [e.position for e in sent[1:]]


async def test_exclusion_and_data_survive_the_history(backend: Backend, app_id: str) -> None:
    e = env(app_id, "x", "ev", '{"a":"\u00e9"}', exclude="1.2")
    await backend.history.publish([(e, POLICY)])
    first = f"{epoch_of(e.position)}-0"
    [kept] = (await backend.history.read(app_id, "x", first, 10)).events
    assert (kept.event, kept.data, kept.exclude, kept.position) == ("ev", '{"a":"\u00e9"}', "1.2", e.position)


async def test_history_expires_after_its_ttl_and_starts_over_under_a_new_epoch(backend: Backend, app_id: str) -> None:
    short = HistoryPolicy(size=5, ttl_s=1)
    clock = ManualClock()
    if isinstance(backend.history, MemoryHistoryStore):
        backend.history.clock = clock
    [old] = await publish(backend, app_id, "ttl", 1, short)
    clock.advance(1.5)
    # Redis expires the key on its own clock: wait until it is gone.
    for _ in range(200):
        if (await backend.history.latest(app_id, "ttl", 1)).head is None:
            break
        await asyncio.sleep(0.05)
    assert (await backend.history.latest(app_id, "ttl", 1)).head is None
    [new] = await publish(backend, app_id, "ttl", 1, short)
    assert offset_of(new.position or "") == 1 and epoch_of(new.position) != epoch_of(old.position)
    assert not (await backend.history.read(app_id, "ttl", old.position or "", 10)).continuous


# -- the envelope ------------------------------------------------------------------------------------


def test_envelopes_without_a_position_pack_as_before() -> None:
    e = Envelope("a", "c", "ev", "{}", "1.1", None, "node", 1.5)
    old = msgpack.packb(("a", "c", "ev", "{}", "1.1", None, "node", 1.5), use_bin_type=True)
    assert e.pack() == old
    assert Envelope.unpack(old) == e
    with_pos = Envelope("a", "c", "ev", "{}", position="7-3")
    assert Envelope.unpack(with_pos.pack()) == with_pos
    assert Envelope.unpack_open(with_pos.pack_open(), "7-4").position == "7-4"
    assert with_pos.pack_open() + msgpack.packb("7-3") == with_pos.pack()


# -- which channels keep history, and the publish step ----------------------------------------------


def test_history_policy_rules() -> None:
    off = AppConfig(id="1", key="k", secret="s")
    on = AppConfig(id="1", key="k", secret="s", history_size=10, history_ttl_s=30)
    some = AppConfig(id="1", key="k", secret="s", history_size=10, history_channel_prefixes=("chat-", "private-"))
    assert history_policy(off, "chat-1") is None
    assert history_policy(on, "chat-1") == HistoryPolicy(10, 30)
    assert history_policy(on, "presence-x") is not None
    assert history_policy(on, "cache-x") is None  # cache channels keep their last event instead
    assert history_policy(on, "private-cache-x") is None
    assert history_policy(on, "#server-to-user-1") is None
    assert history_policy(some, "chat-1") is not None and history_policy(some, "private-x") is not None
    assert history_policy(some, "news") is None


@pytest.mark.parametrize("bad", ["", "1", "-1", "1-", "0-1", "01-1", "1-01", "a-1", "1-1-1", 12, None])
def test_malformed_positions(bad: object) -> None:
    assert parse_position(bad) is None


async def test_publish_step_splits_history_and_plain_channels(backend: Backend, app_id: str) -> None:
    app = AppConfig(id=app_id, key="k", secret="s", history_size=3, history_channel_prefixes=("h-",))
    rec = Recorder(backend)
    for channel in ("h-1", "plain"):
        await backend.bus.subscribe(app_id, channel)
    envelopes = [env(app_id, "plain", "ev", "p"), env(app_id, "h-1", "ev", "h")]
    await publish_channel_events(backend, app, envelopes)
    [plain] = await rec.wait_for(app_id, "plain", 1)
    [kept] = await rec.wait_for(app_id, "h-1", 1)
    assert plain.position is None
    assert offset_of(kept.position or "") == 1
    no_history = AppConfig(id=app_id, key="k", secret="s")
    await publish_channel_events(backend, no_history, [env(app_id, "h-1", "ev", "again")])
    got = await rec.wait_for(app_id, "h-1", 2)
    assert got[1].position is None


def test_a_position_is_matched_whole() -> None:
    # `$` would also accept a trailing newline (issue 9: full-string matches everywhere).
    assert parse_position("12-3") == ("12", 3)
    for bad in ("12-3\n", "12-3x", " 12-3", "12-"):
        assert parse_position(bad) is None, repr(bad)
