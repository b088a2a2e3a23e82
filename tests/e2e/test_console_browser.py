"""The debug console (trigger_api/console, docs/console.md) in headless Chromium against a cluster:
Redis, two gateways, and a trigger API with `--console` and a console token.

tests/node/console_driver.mjs drives the page (playwright-core with the Debian `chromium`; nothing is
downloaded); pusher-js clients run in tests/node/driver.mjs; events come from the PyPI `pusher` SDK.
Four pages: one signed in with app 1's key and secret, one with the console token for app 2, one with a
wrong secret. Screenshots of each step go to tests/artifacts/console/.

This test does not skip: a missing browser or npm package fails it with what to install.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.authserver import AuthServer
from tests.clusterutil import Cluster, join_presence, knowing, start_cluster
from tests.helpers import REPO
from tests.pusherjs import NODE_DIR, NodeDriver
from tests.redis_server import RedisServer
from tests.webhook_receiver import WebhookReceiver

pytest_plugins = ["tests.wsfixtures"]

SCREENSHOTS = REPO / "tests" / "artifacts" / "console"
DRIVER = NODE_DIR / "console_driver.mjs"
TOKEN = "operator-console-token-7f3a"
APP: dict[str, Any] = {"id": "1", "key": "console-key", "secret": "console-secret", "enable_client_messages": True}
OTHER: dict[str, Any] = {"id": "2", "key": "other-key", "secret": "other-secret", "enable_client_messages": True}
STEP_TIMEOUT_S = 40


def chromium_binary() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"Chromium not found at {path}: apt-get install -y chromium (scripts/test.sh does it as root), "
                    "or set CHROMIUM to the binary", pytrace=False)
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/node/node_modules/playwright-core is missing: (cd tests/node && npm ci)", pytrace=False)
    return path


class ConsolePages:
    """The `node console_driver.mjs` process: one command per line, one reply per line."""

    def __init__(self, chromium: str) -> None:
        self.chromium = chromium
        self.proc: asyncio.subprocess.Process | None = None
        self._next = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=100)
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: asyncio.Future[None] | None = None

    async def __aenter__(self) -> ConsolePages:
        self._ready = asyncio.get_running_loop().create_future()
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(DRIVER), cwd=NODE_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024,
            env={**os.environ, "CHROMIUM": self.chromium, "SCREENSHOT_DIR": str(SCREENSHOTS)},
        )
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._read_stderr())]
        await asyncio.wait_for(self._ready, 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            task.cancel()

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            msg = json.loads(raw)
            if msg["type"] == "ready" and self._ready is not None:
                self._ready.set_result(None)
            elif msg["type"] == "result":
                fut = self._pending.pop(msg["id"])
                if msg["ok"]:
                    fut.set_result(msg["result"])
                else:
                    fut.set_exception(AssertionError(msg["error"]))
        for fut in self._pending.values():
            fut.set_exception(AssertionError(f"console driver exited:\n{self.stderr_tail()}"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(AssertionError(f"console driver exited:\n{self.stderr_tail()}"))

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    async def do(self, op: str, **args: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = fut
        self.proc.stdin.write(json.dumps({"id": self._next, "op": op, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, STEP_TIMEOUT_S + 10)

    async def row(self, page: str, **match: str) -> str:
        text: str = await self.do("wait_row", page=page, timeout=STEP_TIMEOUT_S * 1000, **match)
        return text

    async def shot(self, page: str, name: str) -> Path:
        return Path(await self.do("screenshot", page=page, file=name))


def start(tmp_path: Path, receiver: WebhookReceiver) -> Cluster:
    app = {**APP, "webhooks": [{"url": receiver.url("/console"), "event_types": ["channel_occupied"]}]}
    redis = RedisServer(tmp_path).start()
    try:
        return start_cluster(tmp_path, redis, [app, OTHER], gateways=2,
                             api_args=["--console", "--console-token", TOKEN])
    except BaseException:
        redis.stop()
        raise


@pytest.mark.timeout(300)
async def test_console_shows_one_app_live_across_the_cluster(
    tmp_path: Path, node: NodeDriver, auth_server: AuthServer
) -> None:
    chromium = chromium_binary()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    receiver = WebhookReceiver([APP]).start()
    cluster = start(tmp_path, receiver)
    knowing(auth_server, [APP, OTHER])
    url = f"{cluster.api.http_url}/console"
    shots: list[Path] = []
    try:
        async with ConsolePages(chromium) as pages:
            # A wrong secret: an error, no console, and the API refuses the stream too.
            await pages.do("open", page="wrong", url=url)
            await pages.do("signin", page="wrong", key=APP["key"], secret="not-the-secret")
            await pages.do("wait_text", page="wrong", selector="#signin-error", text="Wrong app key or secret")
            assert await pages.do("visible", page="wrong", selector="#console") is False
            shots.append(await pages.shot("wrong", "01-wrong-secret.png"))
            async with httpx.AsyncClient() as http:
                refused = await http.get(f"{cluster.api.http_url}/console/api/stream",
                                         auth=(APP["key"], "not-the-secret"))
            assert refused.status_code == 401

            # App 1 with its key and secret; app 2 with the operator's console token.
            await pages.do("open", page="app1", url=url)
            await pages.do("signin", page="app1", key=APP["key"], secret=APP["secret"])
            await pages.do("wait_status", page="app1", text="live", timeout=STEP_TIMEOUT_S * 1000)
            await pages.do("open", page="app2", url=url)
            await pages.do("signin_token", page="app2", token=TOKEN, app_id=OTHER["id"])
            await pages.do("wait_status", page="app2", text="live", timeout=STEP_TIMEOUT_S * 1000)

            # Events triggered through the SDK appear in their own app's console only.
            await asyncio.to_thread(cluster.sdk(OTHER).trigger, "orders", "other-app-order", {"secret": "b-only"})
            await asyncio.to_thread(cluster.sdk(APP).trigger, "orders", "order-shipped", {"order": 42})
            text = await pages.row("app1", kind="api_event", event="order-shipped", channel="orders")
            assert '{"order": 42}' in text or '{"order":42}' in text, text
            await pages.row("app2", kind="api_event", event="other-app-order", channel="orders")
            shots.append(await pages.shot("app1", "02-api-event.png"))

            # A pusher-js client joining a presence channel (on the other gateway) is in the roster, and
            # its member change, its client event and the channel_occupied webhook are in the stream.
            alice = await join_presence(node, auth_server, "alice", cluster.ports[1], "alice", "presence-lobby",
                                        APP["key"])
            bob = await join_presence(node, auth_server, "bob", cluster.ports[0], "bob", "presence-lobby",
                                      APP["key"])
            await pages.do("wait_roster", page="app1", channel="presence-lobby", user="alice", present=True)
            await pages.do("wait_roster", page="app1", channel="presence-lobby", user="bob", present=True)
            await pages.row("app1", kind="member", event="pusher_internal:member_added", channel="presence-lobby")
            assert await alice.trigger("presence-lobby", "client-typing", {"typing": True})
            typing = await pages.row("app1", kind="client_event", event="client-typing", channel="presence-lobby")
            assert "from user alice" in typing, typing
            hook = await pages.row("app1", kind="webhook")
            assert "channel_occupied presence-lobby" in hook and "→ ok" in hook, hook
            shots.append(await pages.shot("app1", "03-presence-roster.png"))

            # The test event form reaches a pusher-js client.
            carol = await node.connect("carol", APP["key"], cluster.ports[0])
            await carol.subscribe("console-test")
            result = await pages.do("send_test", page="app1", channel="console-test", event="console-ping",
                                    data='{"from":"console"}')
            assert result == "Published to 1 channel", result
            ping = await carol.wait_event("console-test", "console-ping")
            assert ping["data"] == {"from": "console"}
            await pages.row("app1", kind="api_event", event="console-ping", channel="console-test")
            # The live count covers both gateways (reported by each while the app is watched).
            await pages.do("wait_text", page="app1", selector="#connections", text="3",
                           timeout=STEP_TIMEOUT_S * 1000)
            shots.append(await pages.shot("app1", "04-test-event.png"))

            # Alice leaves: out of the roster, and a member_removed in the stream.
            await alice.disconnect()
            await pages.do("wait_roster", page="app1", channel="presence-lobby", user="alice", present=False)
            await pages.row("app1", kind="member", event="pusher_internal:member_removed", channel="presence-lobby")
            await pages.do("wait_roster", page="app1", channel="presence-lobby", user="bob", present=True)
            await pages.do("wait_text", page="app1", selector="#connections", text="2",
                           timeout=STEP_TIMEOUT_S * 1000)
            shots.append(await pages.shot("app1", "05-member-left.png"))
            await bob.disconnect()

            # Isolation: nothing of app 2 in app 1's console and nothing of app 1 in app 2's.
            rows1 = await pages.do("rows", page="app1")
            rows2 = await pages.do("rows", page="app2")
            assert not [r for r in rows1 if "other-app" in r["text"] or "b-only" in r["text"]], rows1
            assert [r["event"] for r in rows2 if r["kind"] != "internal"] == ["other-app-order"], rows2
            shots.append(await pages.shot("app2", "06-other-app.png"))
            assert await pages.do("rows", page="wrong") == []
            for page in ("wrong", "app1", "app2"):
                assert await pages.do("errors", page=page) == [], page
    finally:
        cluster.stop()
        receiver.stop()
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
    print("\n".join(f"screenshot: {s}" for s in shots))
