"""App registries and reloads without a network: what `replace` reports, how a change reaches open
connections (gateway/app_changes.py), and the apps file watcher keeping the running apps when a new
file is broken."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.app_changes import apply_app_changes
from shared.apps.file import FileAppRegistry
from shared.apps.registry import AppChanges, AppRegistry
from tests.unit.fakes import ManualClock, make_app, make_connection

A = make_app(id="a", key="key-a", secret="s")
B = make_app(id="b", key="key-b", secret="s")
C = make_app(id="c", key="key-c", secret="s")


async def test_replace_reports_added_changed_and_removed_apps() -> None:
    registry = AppRegistry([A, B])
    heard: list[AppChanges] = []
    registry.add_listener(heard.append)
    b2 = make_app(id="b", key="key-b2", secret="s", max_read_req_per_sec=5)
    changes = registry.replace([b2, C])
    assert heard == [changes]
    assert (changes.added, changes.updated, changes.removed) == ([C], {"b": b2}, ["a"])
    assert await registry.by_key("key-b") is None and await registry.by_key("key-b2") is b2
    assert await registry.by_id("a") is None and await registry.by_id("c") is C
    assert not registry.replace([b2, C]) and len(heard) == 1  # no change, nobody told


def test_changes_reach_open_connections() -> None:
    clock = ManualClock()
    (a1, sink_a1), (a2, sink_a2) = make_connection(A, "1.1", clock), make_connection(A, "1.2", clock)
    (b1, sink_b1), (c1, sink_c1) = make_connection(B, "2.1", clock), make_connection(C, "3.1", clock)
    a_changed = make_app(id="a", key="key-a", secret="s", max_client_events_per_sec=1)
    b_disabled = make_app(id="b", key="key-b", secret="s", enabled=False)
    closed = apply_app_changes([a1, a2, b1, c1], AppChanges(updated={"a": a_changed, "b": b_disabled},
                                                             removed=["c"]))
    assert closed == 2
    assert a1.app is a_changed and a2.app is a_changed and not sink_a1.closed and not sink_a2.closed
    assert sink_b1.close_args == (4003, "Application disabled")
    assert sink_b1.frames == [{"event": "pusher:error", "data": {"code": 4003, "message": "Application disabled"}}]
    assert sink_c1.close_args == (4001, "Application does not exist")
    assert b1.app is B  # a closed socket keeps the config it had


def write_apps(path: Path, *apps: dict[str, Any]) -> None:
    path.write_text(json.dumps({"apps": list(apps)}))


async def test_file_changes_are_picked_up_and_broken_files_keep_the_running_apps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "apps.json"
    write_apps(path, {"id": "a", "key": "key-a", "secret": "s"})
    registry = FileAppRegistry(path, poll_s=0.02)
    heard: asyncio.Queue[AppChanges] = asyncio.Queue()
    registry.add_listener(heard.put_nowait)
    await registry.start()
    try:
        write_apps(path, {"id": "a", "key": "key-a", "secret": "s", "max_backend_events_per_sec": 5},
                   {"id": "n", "key": "key-n", "secret": "s"})
        changes = await asyncio.wait_for(heard.get(), 10)
        assert [a.id for a in changes.added] == ["n"] and changes.updated["a"].max_backend_events_per_sec == 5
        assert await registry.by_key("key-n") is not None

        caplog.set_level(logging.ERROR, "herald.apps")
        path.write_text('{"apps": [{"id": "a", "key": "key-a", "secret": "s", "max_conections": 1}]}')
        await wait_for_log(caplog, "apps file not reloaded")
        assert "field 'max_conections': unknown field" in caplog.text
        assert await registry.by_key("key-n") is not None  # the running apps stay

        write_apps(path, {"id": "a", "key": "key-a", "secret": "s", "enabled": False})
        changes = await asyncio.wait_for(heard.get(), 10)
        assert changes.removed == ["n"] and not changes.updated["a"].enabled
    finally:
        await registry.close()


async def test_reload_reads_the_file_now(tmp_path: Path) -> None:
    path = tmp_path / "apps.yaml"
    path.write_text("apps: [{id: a, key: key-a, secret: s}]")
    registry = FileAppRegistry(path, poll_s=0)  # no polling: only SIGHUP (reload) reads it
    await registry.start()
    path.write_text("apps: [{id: a, key: key-a, secret: s}, {id: b, key: key-b, secret: s}]")
    await registry.reload()
    assert await registry.by_id("b") is not None
    await registry.close()


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10) -> None:
    """Wait for a log line (the watcher's only observable outcome for a rejected file)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in caplog.text:
        assert asyncio.get_running_loop().time() < deadline, f"no log line with {text!r}"
        await asyncio.sleep(0.02)
