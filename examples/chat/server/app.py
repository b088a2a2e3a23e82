"""Backend of the Herald chat demo: the source of truth.

It signs users in (a few demo users, a signed cookie), authorizes their channel subscriptions and
signs them in to Herald with the PyPI `pusher` SDK, stores messages in SQLite and only then publishes
them through Herald's HTTP API (and tells @mentioned users, wherever they are, with server-to-user
events), and serves the history a page loads when it opens a room (or when Herald could not
recover what the page missed while offline).
The built front end (examples/chat/dist) is served from here too, so the page, its API and its
pusher-js auth requests share one origin.

Configuration (environment):

    CHAT_DB              SQLite file (default examples/chat/data/chat.sqlite3)
    CHAT_STATIC_DIR      built front end (default examples/chat/dist)
    CHAT_COOKIE_SECRET   key for the session cookie (default: random, sessions end with the process)
    HERALD_APP_ID, HERALD_APP_KEY, HERALD_APP_SECRET   the Herald app (default 1 / chat-key / chat-secret)
    HERALD_API_HOST, HERALD_API_PORT   Herald's HTTP API, where messages are triggered (127.0.0.1:6001)
    HERALD_WS_HOST       host the browser connects its WebSocket to (default: the host of the page)
    HERALD_WS_PORTS      comma-separated gateway ports handed to browsers (default: HERALD_API_PORT);
                         `/config?node=N` picks the Nth, otherwise they are handed out in turn

Run: python examples/chat/server/app.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pusher
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

log = logging.getLogger("chat")

HERE = Path(__file__).resolve().parent
EXAMPLE_DIR = HERE.parent

# The demo's users and rooms. A real app has a user table; the point here is who may join what.
USERS: dict[str, dict[str, str]] = {
    "alice": {"name": "Alice", "color": "#d6336c"},
    "bob": {"name": "Bob", "color": "#1c7ed6"},
    "carol": {"name": "Carol", "color": "#2f9e44"},
}
ROOMS: dict[str, dict[str, Any]] = {
    "general": {"title": "General", "members": ["alice", "bob", "carol"]},
    "random": {"title": "Random", "members": ["alice", "bob", "carol"]},
    "ops": {"title": "Ops (Alice and Carol)", "members": ["alice", "carol"]},
}
MAX_TEXT = 2000
HISTORY_LIMIT = 200
COOKIE = "chat_session"
COOKIE_MAX_AGE = 7 * 24 * 3600


@dataclass
class Settings:
    db_path: Path
    static_dir: Path
    cookie_secret: bytes
    app_id: str
    app_key: str
    app_secret: str
    api_host: str
    api_port: int
    ws_host: str | None
    ws_ports: list[int]

    @classmethod
    def from_env(cls) -> Settings:
        api_port = int(os.environ.get("HERALD_API_PORT", "6001"))
        ws_ports = [int(p) for p in os.environ.get("HERALD_WS_PORTS", "").split(",") if p.strip()]
        secret = os.environ.get("CHAT_COOKIE_SECRET")
        return cls(
            db_path=Path(os.environ.get("CHAT_DB", EXAMPLE_DIR / "data" / "chat.sqlite3")),
            static_dir=Path(os.environ.get("CHAT_STATIC_DIR", EXAMPLE_DIR / "dist")),
            cookie_secret=secret.encode() if secret else secrets.token_bytes(32),
            app_id=os.environ.get("HERALD_APP_ID", "1"),
            app_key=os.environ.get("HERALD_APP_KEY", "chat-key"),
            app_secret=os.environ.get("HERALD_APP_SECRET", "chat-secret"),
            api_host=os.environ.get("HERALD_API_HOST", "127.0.0.1"),
            api_port=api_port,
            ws_host=os.environ.get("HERALD_WS_HOST") or None,
            ws_ports=ws_ports or [api_port],
        )


# ---- storage -------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    user_id TEXT NOT NULL,
    text TEXT NOT NULL,
    client_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (user_id, client_id)
);
CREATE INDEX IF NOT EXISTS messages_room_id ON messages (room, id);
"""


class Store:
    """Messages in SQLite. One short-lived connection per call: calls run in worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    def add(self, room: str, user_id: str, text: str, client_id: str) -> tuple[dict[str, Any], bool]:
        """Stores a message; returns it and whether it is new. A retried send (same user and
        client_id) returns the stored message instead of storing it twice."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO messages (room, user_id, text, client_id, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id, client_id) DO NOTHING",
                (room, user_id, text, client_id, time.time()),
            )
            created = cursor.rowcount == 1
            row = db.execute(
                "SELECT * FROM messages WHERE user_id = ? AND client_id = ?", (user_id, client_id)
            ).fetchone()
        return _message(row), created

    def history(self, room: str, after: int | None) -> list[dict[str, Any]]:
        """Messages after `after` (oldest first), or the latest ones when `after` is None."""
        with self._db() as db:
            if after is None:
                rows = db.execute(
                    "SELECT * FROM (SELECT * FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (room, HISTORY_LIMIT),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM messages WHERE room = ? AND id > ? ORDER BY id LIMIT ?",
                    (room, after, HISTORY_LIMIT),
                ).fetchall()
        return [_message(r) for r in rows]


def _message(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "room": row["room"],
        "user_id": row["user_id"],
        "text": row["text"],
        "client_id": row["client_id"],
        "created_at": row["created_at"],
    }


# ---- sessions ------------------------------------------------------------------------------------


def sign_session(secret: bytes, user_id: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"u": user_id, "t": int(time.time())}).encode()).decode()
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def read_session(secret: bytes, value: str | None) -> str | None:
    if not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload))
    except ValueError:
        return None
    if time.time() - data.get("t", 0) > COOKIE_MAX_AGE or data.get("u") not in USERS:
        return None
    return str(data["u"])


# ---- the application -----------------------------------------------------------------------------


def channel_room(channel: str) -> str | None:
    """The room a channel belongs to: private-room-{room} (messages) or presence-room-{room} (who is
    here, typing)."""
    for prefix in ("private-room-", "presence-room-"):
        if channel.startswith(prefix):
            return channel[len(prefix):]
    return None


def may_join(user_id: str, room: str | None) -> bool:
    return room in ROOMS and user_id in ROOMS[room]["members"]


def mentions(text: str, room: str, author: str) -> list[str]:
    """Members of the room named with @id in the text, the author aside."""
    named = {m.lower() for m in re.findall(r"@(\w+)", text)}
    return [u for u in ROOMS[room]["members"] if u in named and u != author]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    store = Store(settings.db_path)
    sdk = pusher.Pusher(
        app_id=settings.app_id, key=settings.app_key, secret=settings.app_secret,
        host=settings.api_host, port=settings.api_port, ssl=False, timeout=5,
    )
    next_port = itertools.cycle(settings.ws_ports)

    def current_user(request: Request) -> str | None:
        return read_session(settings.cookie_secret, request.cookies.get(COOKIE))

    def unauthorized() -> JSONResponse:
        return JSONResponse({"error": "not signed in"}, status_code=401)

    async def form(request: Request) -> dict[str, str]:
        # pusher-js posts its auth requests form-encoded; parsed by hand to need no multipart package.
        body = (await request.body()).decode()
        return {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}

    async def login(request: Request) -> Response:
        try:
            user_id = (await request.json()).get("user")
        except ValueError:
            user_id = None
        if user_id not in USERS:
            return JSONResponse({"error": "unknown user"}, status_code=400)
        response = JSONResponse({"id": user_id, **USERS[user_id]})
        response.set_cookie(COOKIE, sign_session(settings.cookie_secret, user_id), max_age=COOKIE_MAX_AGE,
                            httponly=True, samesite="lax")
        return response

    async def logout(request: Request) -> Response:
        response = JSONResponse({})
        response.delete_cookie(COOKIE)
        return response

    async def me(request: Request) -> Response:
        user_id = current_user(request)
        if user_id is None:
            return unauthorized()
        return JSONResponse({"id": user_id, **USERS[user_id]})

    async def directory(request: Request) -> Response:
        """Who exists and which rooms the caller may enter (the login page needs the users too)."""
        user_id = current_user(request)
        rooms = [
            {"id": room, "title": r["title"], "members": r["members"]}
            for room, r in ROOMS.items() if user_id is not None and user_id in r["members"]
        ]
        return JSONResponse({"users": [{"id": u, **info} for u, info in USERS.items()], "rooms": rooms})

    async def config(request: Request) -> Response:
        """Where this browser's pusher-js connects: one of the gateways, chosen by ?node=N or in turn."""
        node = request.query_params.get("node")
        if node is not None and node.isdigit():
            port = settings.ws_ports[int(node) % len(settings.ws_ports)]
        else:
            port = next(next_port)
        return JSONResponse({
            "key": settings.app_key,
            "wsHost": settings.ws_host or request.url.hostname or "127.0.0.1",
            "wsPort": port,
        })

    async def channel_auth(request: Request) -> Response:
        user_id = current_user(request)
        if user_id is None:
            return unauthorized()
        params = await form(request)
        channel, socket_id = params.get("channel_name", ""), params.get("socket_id", "")
        if not may_join(user_id, channel_room(channel)):
            log.info("refused %s on %s", user_id, channel)
            return JSONResponse({"error": f"{user_id} may not join {channel}"}, status_code=403)
        presence = {"user_id": user_id, "user_info": USERS[user_id]} if channel.startswith("presence-") else None
        try:
            return JSONResponse(sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=presence))
        except ValueError as e:  # malformed socket id or channel name
            return JSONResponse({"error": str(e)}, status_code=400)

    async def user_auth(request: Request) -> Response:
        user_id = current_user(request)
        if user_id is None:
            return unauthorized()
        params = await form(request)
        user_data = {
            "id": user_id,
            "user_info": USERS[user_id],
            "watchlist": [u for u in USERS if u != user_id],
        }
        try:
            return JSONResponse(sdk.authenticate_user(socket_id=params.get("socket_id", ""), user_data=user_data))
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)

    def member_of_room(request: Request) -> tuple[str, str] | Response:
        """(user, room) for a signed-in user allowed in the room, or the error response."""
        user_id = current_user(request)
        if user_id is None:
            return unauthorized()
        room = request.path_params["room"]
        if not may_join(user_id, room):
            return JSONResponse({"error": "no such room"}, status_code=404)
        return user_id, room

    async def history(request: Request) -> Response:
        allowed = member_of_room(request)
        if isinstance(allowed, Response):
            return allowed
        _, room = allowed
        after_param = request.query_params.get("after")
        after = int(after_param) if after_param and after_param.isdigit() else None
        messages = await asyncio.to_thread(store.history, room, after)
        return JSONResponse({"messages": messages})

    async def post_message(request: Request) -> Response:
        allowed = member_of_room(request)
        if isinstance(allowed, Response):
            return allowed
        user_id, room = allowed
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        text = str(body.get("text", "")).strip()
        client_id = str(body.get("client_id", ""))[:64]
        socket_id = body.get("socket_id") or None
        if not text or len(text) > MAX_TEXT or not client_id:
            return JSONResponse({"error": f"text (1-{MAX_TEXT} characters) and client_id required"},
                                status_code=400)

        # 1. Persist: from here on the message exists, whatever happens to the realtime delivery.
        message, created = await asyncio.to_thread(store.add, room, user_id, text, client_id)
        # 2. Publish, leaving out the sender's own connection: its page already shows the message
        #    (optimistically) and takes the stored version from this response.
        delivered = False
        if created:
            try:
                await asyncio.to_thread(sdk.trigger, f"private-room-{room}", "message", message,
                                        socket_id=socket_id)
                delivered = True
            except Exception:
                # Stored but not pushed: pages that open the room later load it from the history.
                log.exception("trigger failed for message %s", message["id"])
            # 3. Tell each @mentioned member, wherever they are in the app (server-to-user events).
            for mentioned in mentions(text, room, user_id):
                note = {"room": room, "message_id": message["id"], "from": user_id, "text": text[:140]}
                try:
                    await asyncio.to_thread(sdk.send_to_user, mentioned, "mention", note)
                except Exception:
                    log.exception("mention of %s failed for message %s", mentioned, message["id"])
        return JSONResponse({"message": message, "delivered": delivered}, status_code=201 if created else 200)

    routes: list[BaseRoute] = [
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me", me),
        Route("/directory", directory),
        Route("/config", config),
        Route("/pusher/auth", channel_auth, methods=["POST"]),
        Route("/pusher/user-auth", user_auth, methods=["POST"]),
        Route("/rooms/{room}/messages", history, methods=["GET"]),
        Route("/rooms/{room}/messages", post_message, methods=["POST"]),
        Route("/healthz", lambda request: PlainTextResponse("ok")),
    ]
    if (settings.static_dir / "index.html").is_file():
        routes.append(Mount("/", StaticFiles(directory=settings.static_dir, html=True)))
    else:
        hint = f"The front end is not built ({settings.static_dir} has no index.html): run examples/chat/run.sh"
        routes.append(Route("/", lambda request: PlainTextResponse(hint, status_code=503)))
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description="Herald chat demo backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
