"""Instruments of the chaos scenarios: a signed HTTP API client, a numbered-event publisher, raw
WebSocket listeners that record every frame, and the checks every scenario states (lost, duplicate and
out-of-order deliveries; rosters against `/users`; spurious member events; webhooks once)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.protocol.signatures import sign_channel, sign_http
from shared.protocol.users import loads_exact, user_key
from tests.clusterutil import until
from tests.webhook_receiver import WebhookReceiver

TIMEOUT_S = 10.0


class Api:
    """The HTTP API of one trigger-api process, signed as the SDKs sign."""

    def __init__(self, port: int, app: dict[str, Any]) -> None:
        self.app = app
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT_S)

    async def request(self, method: str, path: str, body: Any = None,
                      params: dict[str, str] | None = None) -> httpx.Response:
        path = f"/apps/{self.app['id']}{path}"
        raw = json.dumps(body).encode() if body is not None else b""
        query = {**(params or {}), "auth_key": self.app["key"], "auth_timestamp": str(int(time.time())),
                 "auth_version": "1.0"}
        if raw:
            query["body_md5"] = hashlib.md5(raw).hexdigest()
        query["auth_signature"] = sign_http(self.app["secret"], method, path, query.items())
        url = path + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return await self.http.request(method, url, content=raw or None,
                                       headers={"Content-Type": "application/json"} if raw else None)

    async def trigger(self, channel: str, name: str, data: str) -> int:
        try:
            resp = await self.request("POST", "/events", {"name": name, "data": data, "channel": channel})
        except httpx.HTTPError:
            return 0
        return resp.status_code

    async def users(self, channel: str) -> tuple[int, list[str] | None]:
        try:
            resp = await self.request("GET", f"/channels/{channel}/users")
        except httpx.HTTPError:
            return 0, None
        if resp.status_code != 200:
            return resp.status_code, None
        return 200, sorted(u["id"] for u in resp.json()["users"])

    async def user_ids(self, channel: str) -> list[str]:
        status, ids = await self.users(channel)
        assert status == 200 and ids is not None, status
        return ids

    async def close(self) -> None:
        await self.http.aclose()


@dataclass
class Publisher:
    """Publishes `{"n": seq}` to a channel every `interval_s`, one request at a time, recording each
    answer: an event answered 200 must reach every socket that was subscribed when it was accepted."""

    api: Api
    channel: str
    interval_s: float = 0.01
    event: str = "tick"
    answers: list[tuple[int, int, float]] = field(default_factory=list)  # (seq, status, time answered)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Publisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        seq = 0
        while True:
            seq += 1
            started = time.monotonic()
            status = await self.api.trigger(self.channel, self.event, json.dumps({"n": seq}))
            self.answers.append((seq, status, time.monotonic()))
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    @property
    def acked(self) -> list[int]:
        return [seq for seq, status, _ in self.answers if status == 200]

    @property
    def refused(self) -> list[tuple[int, int]]:
        return [(seq, status) for seq, status, _ in self.answers if status != 200]

    async def wait_acked(self, count: int, timeout: float = 30) -> None:
        goal = len(self.acked) + count
        await until(lambda: len(self.acked) >= goal, timeout, f"{count} more acknowledged events")


class Listener:
    """A raw protocol-7 client that records every frame (and answers pings), for counting deliveries
    exactly; it does not reconnect (use pusher-js for that)."""

    def __init__(self, name: str, ws: ClientConnection, socket_id: str) -> None:
        self.name = name
        self.ws = ws
        self.socket_id = socket_id
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.closed: float | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, name: str, port: int, key: str, host: str = "127.0.0.1") -> Listener:
        ws = await connect(f"ws://{host}:{port}/app/{key}?protocol=7&client=js&version=8.4.0",
                           open_timeout=TIMEOUT_S, close_timeout=2, max_queue=None)
        first = json.loads(await ws.recv())
        assert first["event"] == "pusher:connection_established", first
        return cls(name, ws, json.loads(first["data"])["socket_id"])

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("event") == "pusher:ping":
                    await self.ws.send('{"event":"pusher:pong","data":{}}')
                    continue
                self.frames.append((time.monotonic(), frame))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = time.monotonic()
            self._changed.set()

    async def wait_frame(self, match: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT_S,
                         what: str = "a frame") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for _, frame in self.frames[seen:]:
                if match(frame):
                    return frame
            seen = len(self.frames)
            if self.closed is not None:
                raise AssertionError(f"{self.name} closed while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def subscribe(self, channel: str, app: dict[str, Any], user: Any = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            channel_data = json.dumps({"user_id": user, "user_info": {"name": str(user)}}) \
                if channel.startswith("presence-") else None
            data["auth"] = sign_channel(app["key"], app["secret"], self.socket_id, channel, channel_data)
            if channel_data is not None:
                data["channel_data"] = channel_data
        await self.ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
        return await self.wait_frame(
            lambda f: f.get("channel") == channel and f["event"] in (
                "pusher_internal:subscription_succeeded", "pusher:subscription_error"),
            what=f"the subscription result for {channel}")

    def seqs(self, channel: str, event: str = "tick") -> list[int]:
        return [json.loads(f["data"])["n"] for _, f in self.frames
                if f.get("channel") == channel and f["event"] == event]

    def roster(self, channel: str) -> tuple[set[str], list[str]]:
        return replay_roster([f for _, f in self.frames], channel)

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def replay_roster(frames: Iterable[dict[str, Any]], channel: str) -> tuple[set[str], list[str]]:
    """A presence subscriber's roster rebuilt from the frames it received, and every spurious member
    event on the way (a member_added for a user it has, a member_removed for one it hasn't): what app
    code would see twice or wrongly."""
    present: set[str] = set()
    problems: list[str] = []
    for frame in frames:
        if frame.get("channel") != channel:
            continue
        event = frame["event"]
        if event == "pusher_internal:subscription_succeeded":
            present = {user_key(i) for i in loads_exact(frame["data"])["presence"]["ids"]}
        elif event in ("pusher_internal:member_added", "pusher_internal:member_removed"):
            user = user_key(loads_exact(frame["data"])["user_id"])
            if event.endswith("added"):
                if user in present:
                    problems.append(f"member_added {user} while present")
                present.add(user)
            else:
                if user not in present:
                    problems.append(f"member_removed {user} while absent")
                present.discard(user)
    return present, problems


@dataclass
class DeliveryReport:
    lost: list[int]
    duplicates: list[int]
    out_of_order: int

    def __str__(self) -> str:
        lost = self.lost[:10]
        return f"lost {len(self.lost)} {lost}, duplicates {len(self.duplicates)}, out of order {self.out_of_order}"

    @property
    def clean(self) -> bool:
        return not self.lost and not self.duplicates and not self.out_of_order


def deliveries(acked: Sequence[int], received: Sequence[int]) -> DeliveryReport:
    got = set(received)
    seen: set[int] = set()
    duplicates = []
    for n in received:
        if n in seen:
            duplicates.append(n)
        seen.add(n)
    out_of_order = sum(1 for a, b in itertools.pairwise(received) if b < a)
    return DeliveryReport([n for n in acked if n not in got], duplicates, out_of_order)


def webhook_problems(receiver: WebhookReceiver) -> list[str]:
    """Webhooks, in the order their transitions were queued (`time_ms`: deliveries run in parallel, so
    arrival order says little), must alternate per channel (occupied/vacated) and per member
    (added/removed): a repeat is a duplicate, a lost one or an out-of-order one."""
    state: dict[tuple[str, ...], str] = {}
    problems = []
    pairs = {"channel_occupied": ("c", True), "channel_vacated": ("c", False),
             "member_added": ("m", True), "member_removed": ("m", False)}
    ordered = sorted(((r.time_ms, i, e) for i, r in enumerate(receiver.accepted()) for e in r.events),
                     key=lambda x: (x[0], x[1]))
    for _, _, e in ordered:
        kind = pairs.get(e["name"])
        if kind is None:
            continue
        key = (e["channel"],) if kind[0] == "c" else (e["channel"], str(e.get("user_id")))
        up = "up" if kind[1] else "down"
        if state.get(key) == up:
            problems.append(f"{e['name']} {key} twice in a row")
        state[key] = up
    return problems


class Timer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.started
