"""Pusher's HTTP API through the npm `pusher` SDK (pusher-http-node 5.3.4), run with node.

tests/node/sdk_trigger.mjs makes the SDK calls and prints their results; subscribers are real
WebSocket clients from test_http_api.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_http_api import App, app_with_key, sdk_for, subscriber
from tests.helpers import REPO, HeraldProcess

NODE_DIR = REPO / "tests" / "node"
SCRIPT = NODE_DIR / "sdk_trigger.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the SDK installed from the lockfile (never skipped silently: fails)."""
    exe = shutil.which("node")
    assert exe, "node is required for the Node SDK tests (install Node.js 20+)"
    if not (NODE_DIR / "node_modules" / "pusher" / "package.json").exists():
        npm = shutil.which("npm")
        assert npm, "npm is required to install tests/node dependencies"
        subprocess.run([npm, "ci" if (NODE_DIR / "package-lock.json").exists() else "install"],
                       cwd=NODE_DIR, check=True, timeout=300)
    version = json.loads(Path(NODE_DIR / "node_modules" / "pusher" / "package.json").read_text())["version"]
    assert version == "5.3.4", f"tests/node has pusher {version}, expected the pinned 5.3.4"
    return exe


async def node_sdk(node: str, herald: HeraldProcess, app: App, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    config = {"appId": app.id, "key": app.key, "secret": app.secret, "host": "127.0.0.1", "port": herald.port}
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), json.dumps({"config": config, "calls": calls}),
        cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"node exited {proc.returncode}: {err.decode()}"
    results: list[dict[str, Any]] = json.loads(out)
    assert len(results) == len(calls)
    return results


def ok(result: dict[str, Any]) -> Any:
    assert result["ok"] and result["status"] == 200, result
    return result["body"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_node_trigger_and_channel_queries(node: str, herald_server: HeraldProcess) -> None:
    channel, presence = unique("node"), unique("presence-node")
    app = app_with_key(herald_server, "key-1")
    py_sdk = sdk_for(herald_server, app)  # only to sign the presence subscriptions
    async with subscriber(herald_server) as a, subscriber(herald_server) as b:
        await a.subscribe(channel)
        await b.subscribe(channel)
        await a.subscribe_presence(py_sdk, presence, "u1")
        await b.subscribe_presence(py_sdk, presence, "u2")

        results = await node_sdk(node, herald_server, app, [
            {"op": "trigger", "args": [channel, "from-node", {"hello": "node"}]},
            {"op": "trigger", "args": [[channel, presence], "with-info", "plain",
                                       {"info": "user_count,subscription_count", "socket_id": a.socket_id}]},
            {"op": "triggerBatch", "args": [[
                {"channel": channel, "name": "b1", "data": "1"},
                {"channel": presence, "name": "b2", "data": "2", "info": "user_count"},
            ]]},
            {"op": "get", "args": [{"path": f"/channels/{channel}", "params": {"info": "subscription_count"}}]},
            {"op": "get", "args": [{"path": "/channels", "params": {"filter_by_prefix": presence,
                                                                   "info": "user_count"}}]},
            {"op": "get", "args": [{"path": f"/channels/{presence}/users"}]},
            {"op": "terminateUserConnections", "args": ["u1"]},
            {"op": "sendToUser", "args": ["u1", "hi", {"x": 1}]},
        ])

        assert ok(results[0]) == {}
        assert ok(results[1]) == {"channels": {
            channel: {"subscription_count": 2},
            presence: {"user_count": 2, "subscription_count": 2},
        }}
        assert ok(results[2]) == {"batch": [{}, {"user_count": 2}]}
        assert ok(results[3]) == {"occupied": True, "subscription_count": 2}
        assert ok(results[4]) == {"channels": {presence: {"user_count": 2}}}
        assert sorted(u["id"] for u in ok(results[5])["users"]) == ["u1", "u2"]
        assert ok(results[6]) == {}
        assert ok(results[7]) == {}

        # pusher-http-node JSON-encodes objects and sends strings as they are.
        assert (await a.expect_event(channel, "from-node"))["data"] == '{"hello":"node"}'
        assert (await b.expect_event(channel, "from-node"))["data"] == '{"hello":"node"}'
        # a was excluded from "with-info" on both channels; b got it on both, in request order.
        await b.expect_event(channel, "with-info")
        await b.expect_event(presence, "with-info")
        await a.expect_event(channel, "b1")
        await b.expect_event(channel, "b1")
        await a.expect_event(presence, "b2")
        await b.expect_event(presence, "b2")


async def test_node_errors(node: str, herald_server: HeraldProcess) -> None:
    app = app_with_key(herald_server, "key-1")
    results = await node_sdk(node, herald_server, app, [
        {"op": "get", "args": [{"path": "/channels/public-x", "params": {"info": "user_count"}}]},
        {"op": "triggerBatch", "args": [[{"channel": "c", "name": "e", "data": "d"}] * 11]},
        {"op": "trigger", "args": ["c", "e", "x" * 10241]},
        {"op": "trigger", "args": [["private-encrypted-x", "y"], "e", "d"]},
    ])
    statuses = [(r.get("status"), json.loads(r["body"])["error"]) for r in results[:3]]
    assert statuses == [
        (400, "user_count is only available for presence channels, not 'public-x'"),
        (400, "Cannot batch-send more than 10 messages at once"),
        (413, "data is 10241 bytes; the limit is 10240 bytes"),
    ]
    # The SDK refuses this one itself (Herald's own 400 for it is tested with raw requests).
    assert results[3] == {"ok": False, "thrown": "You cannot trigger to multiple channels when using "
                                                 "encrypted channels"}

    wrong = App(app.id, app.key, "wrong-secret")
    bad = await node_sdk(node, herald_server, wrong, [{"op": "trigger", "args": ["c", "e", "d"]}])
    assert bad[0]["status"] == 401 and "Invalid signature" in bad[0]["body"]
