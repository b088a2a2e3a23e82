"""The chat example (examples/chat) end to end in headless Chromium, against a Herald cluster.

Redis, two gateways and a trigger API (as in production), the chat backend configured with the
trigger API and the two gateways, and the built page. examples/chat/e2e/browser.mjs (playwright-core
driving the Debian `chromium` binary: nothing is downloaded) then plays two users in two browser
contexts, Alice on gateway A and Bob on gateway B: both online, typing, an optimistic send, a reply,
Bob's connection cut and restored (the message sent meanwhile arrives over his socket, once: Herald's
channel history through herald-channels-recovery, no HTTP refetch), Bob leaving, Bob back, an @mention
reaching him in another room (a server-to-user event). It saves a screenshot of each step
to tests/artifacts/chat/.

This test does not skip: a missing browser or missing npm packages fail it with what to install.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clusterutil import Cluster, start_cluster
from tests.helpers import REPO, free_port, wait_http_ok
from tests.redis_server import RedisServer

CHAT = REPO / "examples" / "chat"
SCREENSHOTS = REPO / "tests" / "artifacts" / "chat"
# As examples/chat/herald-apps.json: the rooms' channels keep history, so a reconnecting page recovers.
CHAT_APP: dict[str, Any] = {"id": "1", "key": "chat-key", "secret": "chat-secret", "enable_client_messages": True,
                            "history_size": 500, "history_ttl_s": 86400, "history_channel_prefixes": ["private-room-"]}
BROWSER_TIMEOUT_S = 90


def chromium_binary() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"Chromium not found at {path}: apt-get install -y chromium (scripts/test.sh does it as root), "
                    "or set CHROMIUM to the binary", pytrace=False)
    return path


def require_node_packages() -> None:
    missing = []
    if shutil.which("node") is None:
        missing.append("node is not installed (apt-get install -y nodejs npm)")
    if not (CHAT / "node_modules" / "playwright-core").is_dir():
        missing.append("examples/chat/node_modules is missing: (cd examples/chat && npm ci)")
    if not (REPO / "react" / "dist" / "index.js").is_file():
        missing.append("react/dist is not built: (cd react && npm ci && npm run build)")
    if missing:
        pytest.fail("the chat browser test cannot run:\n" + "\n".join(missing), pytrace=False)


def build_page(out_dir: Path) -> None:
    """Builds the page from the current sources into out_dir (not examples/chat/dist, which the demo uses)."""
    result = subprocess.run(
        ["node", "node_modules/vite/bin/vite.js", "build", "--outDir", str(out_dir), "--emptyOutDir",
         "--logLevel", "warn"],
        cwd=CHAT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"vite build failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = RedisServer(tmp_path).start()
    try:
        cluster = start_cluster(tmp_path, redis, apps=[CHAT_APP], gateways=2)
    except BaseException:
        redis.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


def start_backend(
    tmp_path: Path, cluster: Cluster, static_dir: Path, proxy_port: int
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log_path = tmp_path / "chat-backend.log"
    env: dict[str, str] = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CHAT_DB": str(tmp_path / "chat.sqlite3"),
        "CHAT_STATIC_DIR": str(static_dir),
        "CHAT_COOKIE_SECRET": "test-secret",
        "HERALD_APP_ID": CHAT_APP["id"],
        "HERALD_APP_KEY": CHAT_APP["key"],
        "HERALD_APP_SECRET": CHAT_APP["secret"],
        "HERALD_API_HOST": "127.0.0.1",
        "HERALD_API_PORT": str(cluster.api.port),
        "HERALD_WS_HOST": "127.0.0.1",
        # node 0: gateway A directly; node 1: the driver's proxy in front of gateway B.
        "HERALD_WS_PORTS": f"{cluster.ports[0]},{proxy_port}",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(CHAT / "server" / "app.py"), "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
    wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc, log_path)
    return proc, f"http://127.0.0.1:{port}", tmp_path / "chat.sqlite3"


def stored_messages(db_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT id, room, user_id, text FROM messages ORDER BY id").fetchall()


@pytest.mark.timeout(180)
async def test_two_users_chat_across_two_gateways(tmp_path: Path, cluster: Cluster) -> None:
    browser = chromium_binary()
    require_node_packages()
    static_dir = tmp_path / "web"
    build_page(static_dir)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()

    proxy_port = free_port()
    backend, url, db_path = start_backend(tmp_path, cluster, static_dir, proxy_port)
    try:
        driver = await asyncio.create_subprocess_exec(
            "node", str(CHAT / "e2e" / "browser.mjs"), cwd=CHAT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "CHAT_URL": url, "GATEWAY_A": str(cluster.ports[0]),
                 "GATEWAY_B": str(cluster.ports[1]), "PROXY_PORT": str(proxy_port),
                 "SCREENSHOT_DIR": str(SCREENSHOTS), "CHROMIUM": browser},
        )
        try:
            out, _ = await asyncio.wait_for(driver.communicate(), BROWSER_TIMEOUT_S)
        except TimeoutError:
            driver.kill()
            out, _ = await driver.communicate()
            pytest.fail(f"the browser driver did not finish in {BROWSER_TIMEOUT_S}s:\n{out.decode()}")
    finally:
        backend.terminate()
        backend.wait(10)

    output = out.decode(errors="replace")
    print(output)  # the steps and the screenshot paths, shown with -s or on failure
    steps = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
    assert driver.returncode == 0 and steps and steps[-1]["step"] == "done", f"browser steps failed:\n{output}\n{logs}"

    shots = [Path(s["file"]) for s in steps if s["step"] == "screenshot"]
    assert len(shots) == 13
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot

    # The server is the source of truth: every message stored once, in order, by its author.
    assert [row[1:] for row in stored_messages(db_path)] == [
        ("general", "alice", "Hi Bob! Herald works across gateways."),
        ("general", "bob", "Hello Alice, loud and clear."),
        ("general", "alice", "Did you get this while you were away?"),
        ("general", "alice", "@bob are you in Random?"),
    ]


# ---- the backend alone (in process, no browser): what the browser test cannot see ------------------


def load_backend() -> Any:
    spec = importlib.util.spec_from_file_location("chat_backend", CHAT / "server" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chat_backend"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def backend_client(tmp_path: Path, api_port: int) -> httpx.AsyncClient:
    backend = load_backend()
    settings = backend.Settings(
        db_path=tmp_path / "chat.sqlite3", static_dir=tmp_path / "no-build", cookie_secret=b"k",
        app_id="1", app_key="chat-key", app_secret="chat-secret", api_host="127.0.0.1", api_port=api_port,
        ws_host=None, ws_ports=[api_port],
    )
    transport = httpx.ASGITransport(app=backend.create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def sign_in(client: httpx.AsyncClient, user: str) -> None:
    assert (await client.post("/login", json={"user": user})).status_code == 200


async def test_chat_backend_authorizes_only_the_rooms_of_the_user(tmp_path: Path) -> None:
    async with backend_client(tmp_path, free_port()) as client:
        form = {"socket_id": "123.456", "channel_name": "private-room-ops"}
        assert (await client.post("/pusher/auth", data=form)).status_code == 401  # not signed in

        await sign_in(client, "bob")
        assert (await client.post("/pusher/auth", data=form)).status_code == 403  # Alice's and Carol's room
        other = {**form, "channel_name": "private-elsewhere"}
        assert (await client.post("/pusher/auth", data=other)).status_code == 403
        rooms = (await client.get("/directory")).json()["rooms"]
        assert [r["id"] for r in rooms] == ["general", "random"]

        presence = {**form, "channel_name": "presence-room-general"}
        answer = (await client.post("/pusher/auth", data=presence)).json()
        assert json.loads(answer["channel_data"]) == {"user_id": "bob",
                                                      "user_info": {"name": "Bob", "color": "#1c7ed6"}}
        signed = f"123.456:presence-room-general:{answer['channel_data']}"
        assert answer["auth"] == f"chat-key:{hmac.new(b'chat-secret', signed.encode(), hashlib.sha256).hexdigest()}"

        user = (await client.post("/pusher/user-auth", data={"socket_id": "123.456"})).json()
        assert json.loads(user["user_data"]) == {"id": "bob", "user_info": {"name": "Bob", "color": "#1c7ed6"},
                                                 "watchlist": ["alice", "carol"]}
        signed = f"123.456::user::{user['user_data']}"
        assert user["auth"] == f"chat-key:{hmac.new(b'chat-secret', signed.encode(), hashlib.sha256).hexdigest()}"


async def test_chat_backend_stores_first_even_when_herald_is_down(tmp_path: Path) -> None:
    async with backend_client(tmp_path, free_port()) as client:  # nothing listens on the API port
        await sign_in(client, "alice")
        body = {"text": "still here", "client_id": "c-1", "socket_id": "1.2"}
        first = await client.post("/rooms/general/messages", json=body)
        assert first.status_code == 201 and first.json()["delivered"] is False
        stored = first.json()["message"]
        assert (await client.get("/rooms/general/messages")).json()["messages"] == [stored]
        after = (await client.get(f"/rooms/general/messages?after={stored['id']}")).json()
        assert after["messages"] == []

        retry = await client.post("/rooms/general/messages", json=body)  # same client_id: the stored one
        assert retry.status_code == 200 and retry.json()["message"] == stored
        assert len((await client.get("/rooms/general/messages")).json()["messages"]) == 1

        assert (await client.post("/rooms/ops/messages", json={**body, "client_id": "c-2"})).status_code == 201
        await sign_in(client, "bob")
        assert (await client.post("/rooms/ops/messages", json={**body, "client_id": "c-3"})).status_code == 404
        assert (await client.get("/rooms/ops/messages")).status_code == 404
