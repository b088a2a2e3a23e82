"""A raw Pusher-protocol WebSocket client (the `websockets` library) for what pusher-js cannot send:
malformed frames, wrong protocol versions, exact wire forms, staying silent on server pings.

    async with raw_connect(herald.port, "key-1") as c:      # reads connection_established
        await c.send({"event": "pusher:ping", "data": {}})
        assert (await c.recv())["event"] == "pusher:pong"
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_QUERY = "protocol=7&client=js&version=8.6.0&flash=false"
TIMEOUT = 5.0


def unique(prefix: str) -> str:
    """A channel (or user) name no other test uses: tests share one server."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sign(secret: str, string_to_sign: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def channel_auth(key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """`key:hex` for a private channel, or a presence channel when channel_data is given (docs/protocol.md)."""
    to_sign = f"{socket_id}:{channel}" + (f":{channel_data}" if channel_data is not None else "")
    return f"{key}:{sign(secret, to_sign)}"


class RawClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.established: dict[str, Any] | None = None  # the connection_established frame, decoded once
        self.socket_id: str = ""

    async def send(self, message: Any) -> None:
        """Send a JSON-serialisable object (or a str / bytes as-is)."""
        if isinstance(message, str | bytes):
            await self.ws.send(message)
        else:
            await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Next frame, decoded. Raises ConnectionClosed when the server closed."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"server sent a binary frame: {raw!r}"
        msg = json.loads(raw)
        assert isinstance(msg, dict), f"server sent a non-object frame: {raw}"
        return msg

    async def recv_skip_pings(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            msg = await self.recv(timeout)
            if msg.get("event") != "pusher:ping":
                return msg
            await self.send({"event": "pusher:pong", "data": {}})

    async def expect(self, event: str, channel: str | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, asserted to be `event` (on `channel` when given)."""
        msg = await self.recv_skip_pings(timeout)
        assert msg.get("event") == event, f"expected {event}, got {msg}"
        if channel is not None:
            assert msg.get("channel") == channel, f"expected channel {channel}, got {msg}"
        return msg

    async def expect_open(self) -> None:
        """Prove the connection still works: ping -> the next frame is pong."""
        await self.send({"event": "pusher:ping", "data": {}})
        msg = await self.recv()
        assert msg == {"event": "pusher:pong", "data": "{}"}, f"expected pong, got {msg}"

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str, list[dict[str, Any]]]:
        """Wait for the server to close; returns (close code, reason, frames received meanwhile)."""
        frames: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.ws.recv()
                    frames.append(json.loads(raw) if isinstance(raw, str) else {"binary": raw})
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), frames
        raise AssertionError("unreachable")

    async def subscribe(self, channel: str, auth: str | None = "", channel_data: str | None = None) -> None:
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send({"event": "pusher:subscribe", "data": data})

    async def subscribe_ok(self, channel: str, auth: str | None = "", channel_data: str | None = None) -> dict:
        await self.subscribe(channel, auth, channel_data)
        return await self.expect("pusher_internal:subscription_succeeded", channel)

    async def subscribe_private(self, key: str, secret: str, channel: str) -> dict[str, Any]:
        return await self.subscribe_ok(channel, channel_auth(key, secret, self.socket_id, channel))

    async def subscribe_presence(
        self, key: str, secret: str, channel: str, user_id: Any, user_info: Any = None
    ) -> dict[str, Any]:
        """Subscribe to a presence channel; returns the decoded roster (`data.presence`)."""
        member: dict[str, Any] = {"user_id": user_id}
        if user_info is not None:
            member["user_info"] = user_info
        channel_data = json.dumps(member)
        msg = await self.subscribe_ok(
            channel, channel_auth(key, secret, self.socket_id, channel, channel_data), channel_data
        )
        assert isinstance(msg["data"], str), msg
        roster: dict[str, Any] = json.loads(msg["data"])["presence"]
        return roster

    async def close(self) -> None:
        await self.ws.close()


async def open_raw(
    port: int, key: str, query: str | None = DEFAULT_QUERY, expect_established: bool = True, **kwargs: Any
) -> RawClient:
    url = f"ws://127.0.0.1:{port}/app/{key}" + (f"?{query}" if query is not None else "")
    ws = await connect(url, open_timeout=TIMEOUT, close_timeout=2, **kwargs)
    client = RawClient(ws)
    if expect_established:
        msg = await client.recv()
        assert msg.get("event") == "pusher:connection_established", f"first frame: {msg}"
        client.established = msg
        client.socket_id = json.loads(msg["data"])["socket_id"]
    return client


@contextlib.asynccontextmanager
async def raw_connect(
    port: int, key: str, query: str | None = DEFAULT_QUERY, expect_established: bool = True, **kwargs: Any
) -> AsyncIterator[RawClient]:
    client = await open_raw(port, key, query, expect_established, **kwargs)
    try:
        yield client
    finally:
        await client.close()
