"""A real application auth endpoint for the pusher-js clients of the end-to-end tests.

pusher-js POSTs `socket_id` and `channel_name` (form-encoded) to `/pusher/auth` and `socket_id` to
`/pusher/user-auth`; our driver adds the params `client` (the driver's client name) and `key` (the app
key the client connected with). The server signs with the PyPI `pusher` SDK exactly as an application
would, for the user configured for that client, or answers wrongly on purpose for negative tests.

It runs uvicorn in a background thread, so one instance can serve a whole session regardless of which
event loop a test uses; `reset()` between tests.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pusher
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.helpers import free_port


class AuthMode(StrEnum):
    """How the endpoint answers a channel authorization request."""

    OK = "ok"  # correct signature (presence: with channel_data of the client's user)
    WITH_CHANNEL_DATA = "with_channel_data"  # private channel signed with channel_data as third part
    BAD_SIGNATURE = "bad_signature"  # right key, digest computed with the wrong secret
    WRONG_KEY = "wrong_key"  # right digest, key part names another key
    MALFORMED = "malformed"  # auth without the "key:signature" shape
    MISSING_AUTH = "missing_auth"  # 200 without an `auth` field: pusher-js subscribes without auth
    WRONG_SOCKET = "wrong_socket"  # signed for another socket id
    TAMPERED_CHANNEL_DATA = "tampered_channel_data"  # presence: signature over other channel_data
    NO_CHANNEL_DATA = "no_channel_data"  # presence: a private-style signature without channel_data
    HTTP_403 = "http_403"  # the app refuses: pusher-js reports the error itself, nothing is sent


@dataclass
class User:
    user_id: Any  # kept as given: a number stays a number in channel_data
    user_info: Any = None
    watchlist: list[str] | None = None  # sent in the sign-in user_data


@dataclass
class AuthRequest:
    path: str
    client: str
    key: str
    socket_id: str
    channel_name: str | None
    status: int
    response: Any


@dataclass
class _ClientPolicy:
    user: User | None = None
    mode: AuthMode = AuthMode.OK
    channel_modes: dict[str, AuthMode] = field(default_factory=dict)


class AuthServer:
    def __init__(self, apps: Iterable[Mapping[str, Any]]) -> None:
        self._apps = {a["key"]: a for a in apps}
        self._lock = threading.Lock()
        self._policies: dict[str, _ClientPolicy] = {}
        self.requests: list[AuthRequest] = []
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration used by tests -------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._policies.clear()
            self.requests.clear()

    def add_app(self, app: Mapping[str, Any]) -> None:
        """Know another app (e.g. of a test's own Herald server)."""
        with self._lock:
            self._apps[app["key"]] = app

    def set_user(self, client: str, user_id: Any, user_info: Any = None, watchlist: list[str] | None = None) -> None:
        with self._lock:
            self._policy(client).user = User(user_id, user_info, watchlist)

    def set_mode(self, client: str, mode: AuthMode, channel: str | None = None) -> None:
        """Answer `client` with `mode`, for one channel or (channel=None) for all its channels."""
        with self._lock:
            policy = self._policy(client)
            if channel is None:
                policy.mode = mode
            else:
                policy.channel_modes[channel] = mode

    def requests_for(self, client: str) -> list[AuthRequest]:
        with self._lock:
            return [r for r in self.requests if r.client == client]

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/pusher/auth", self._channel_auth, methods=["POST"]),
                Route("/pusher/user-auth", self._user_auth, methods=["POST"]),
                Route("/health", lambda _r: PlainTextResponse("ok")),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="authserver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("auth server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    # ---- endpoints -------------------------------------------------------------------------------

    def _policy(self, client: str) -> _ClientPolicy:
        return self._policies.setdefault(client, _ClientPolicy())

    def _sdk(self, key: str, secret: str | None = None) -> pusher.Pusher:
        # Signatures don't involve the app id, and pusher-http-python accepts only numeric ones.
        return pusher.Pusher(app_id="1", key=key, secret=secret or self._apps[key]["secret"])

    async def _channel_auth(self, request: Request) -> Response:
        form = await _form(request)
        client, key = form.get("client", ""), form.get("key", "")
        socket_id, channel = form.get("socket_id", ""), form.get("channel_name", "")
        with self._lock:
            policy = self._policy(client)
            mode = policy.channel_modes.get(channel, policy.mode)
            user = policy.user
        status, body = self._answer(mode, key, socket_id, channel, user)
        with self._lock:
            self.requests.append(AuthRequest("/pusher/auth", client, key, socket_id, channel, status, body))
        return JSONResponse(body, status_code=status)

    def _answer(
        self, mode: AuthMode, key: str, socket_id: str, channel: str, user: User | None
    ) -> tuple[int, Any]:
        if key not in self._apps:
            return 404, {"error": f"auth server knows no app with key {key!r}"}
        sdk = self._sdk(key)
        presence = channel.startswith("presence-")
        channel_data: dict[str, Any] | None = None
        if presence or mode is AuthMode.WITH_CHANNEL_DATA:
            if user is None:
                return 403, {"error": f"no user configured for this client (channel {channel})"}
            channel_data = {"user_id": user.user_id}
            if user.user_info is not None:
                channel_data["user_info"] = user.user_info
        if mode in (AuthMode.OK, AuthMode.WITH_CHANNEL_DATA):
            return 200, sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=channel_data)
        if mode is AuthMode.BAD_SIGNATURE:
            return 200, self._sdk(key, secret="not-the-secret").authenticate(
                channel=channel, socket_id=socket_id, custom_data=channel_data
            )
        if mode is AuthMode.WRONG_KEY:
            body = sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=channel_data)
            body["auth"] = "some-other-key:" + body["auth"].split(":", 1)[1]
            return 200, body
        if mode is AuthMode.MALFORMED:
            body = sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=channel_data)
            body["auth"] = body["auth"].replace(":", "")
            return 200, body
        if mode is AuthMode.MISSING_AUTH:
            body = sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=channel_data)
            del body["auth"]
            return 200, body
        if mode is AuthMode.WRONG_SOCKET:
            other = "1.1" if socket_id != "1.1" else "2.2"
            return 200, sdk.authenticate(channel=channel, socket_id=other, custom_data=channel_data)
        if mode is AuthMode.TAMPERED_CHANNEL_DATA:
            assert channel_data is not None
            body = sdk.authenticate(channel=channel, socket_id=socket_id, custom_data=channel_data)
            body["channel_data"] = json.dumps({**channel_data, "user_id": "someone-else"})
            return 200, body
        if mode is AuthMode.NO_CHANNEL_DATA:
            return 200, sdk.authenticate(channel=channel, socket_id=socket_id)
        if mode is AuthMode.HTTP_403:
            return 403, {"error": "forbidden by the test"}
        raise AssertionError(mode)

    async def _user_auth(self, request: Request) -> Response:
        form = await _form(request)
        client, key = form.get("client", ""), form.get("key", "")
        socket_id = form.get("socket_id", "")
        with self._lock:
            policy = self._policy(client)
            mode, user = policy.mode, policy.user
        if key not in self._apps or user is None:
            status, body = 403, {"error": "no app or no user configured for this client"}
        elif mode is AuthMode.HTTP_403:
            status, body = 403, {"error": "forbidden by the test"}
        else:
            user_data: dict[str, Any] = {"id": str(user.user_id)}
            if user.user_info is not None:
                user_data["user_info"] = user.user_info
            if user.watchlist is not None:
                user_data["watchlist"] = user.watchlist
            secret = "not-the-secret" if mode is AuthMode.BAD_SIGNATURE else None
            status, body = 200, self._sdk(key, secret).authenticate_user(socket_id, user_data)
        with self._lock:
            self.requests.append(AuthRequest("/pusher/user-auth", client, key, socket_id, None, status, body))
        return JSONResponse(body, status_code=status)


async def _form(request: Request) -> dict[str, str]:
    """pusher-js posts application/x-www-form-urlencoded (parsed here without python-multipart)."""
    body = (await request.body()).decode()
    return {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}
