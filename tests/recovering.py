"""Harness of the history and recovery end-to-end tests: a paced publisher of numbered events, clients
that use herald-channels-recovery (tests/node/recovery_driver.mjs), and the tally of what each client got.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from shared.protocol.signatures import body_md5, sign_http
from tests.pusherjs import NODE_DIR, NodeDriver, PusherJsClient, Report

RECOVERY_DRIVER = NODE_DIR / "recovery_driver.mjs"
EVENT = "seq"
# pusher-js 8, pusher-js 7, and laravel-echo on pusher-js 8: each with the helper.
BUILDS = ("pusher8", "pusher7", "echo")


def recovery_driver() -> NodeDriver:
    return NodeDriver(RECOVERY_DRIVER)


class Publisher:
    """Triggers `{"seq": n}` on one channel at `rate` events/s through the HTTP API, one request at a
    time (so seq order is publish order). Each seq ends up published (200), refused (an error status:
    not published) or unknown (no answer)."""

    def __init__(self, api_port: int, app: dict[str, Any], channel: str, rate: float = 100.0) -> None:
        self.url = f"http://127.0.0.1:{api_port}"
        self.app = app
        self.channel = channel
        self.rate = rate
        self.published: list[int] = []
        self.refused: list[int] = []
        self.unknown: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def sent(self) -> int:
        return len(self.published) + len(self.refused) + len(self.unknown)

    def start(self) -> Publisher:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def wait_published(self, count: int, timeout: float = 30) -> None:
        """Until `count` more events than now were published."""
        target = len(self.published) + count
        await self._wait(lambda: len(self.published) >= target, timeout, f"{count} more published events")

    async def wait_refused(self, timeout: float = 30) -> None:
        target = len(self.refused) + len(self.unknown) + 1
        await self._wait(lambda: len(self.refused) + len(self.unknown) >= target, timeout, "a refused publish")

    async def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self._task is not None and self._task.done():
                self._task.result()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"publisher: timed out waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    def _target(self, body: bytes) -> str:
        path = f"/apps/{self.app['id']}/events"
        params = [("auth_key", self.app["key"]), ("auth_timestamp", str(int(time.time()))),
                  ("auth_version", "1.0"), ("body_md5", body_md5(body))]
        signature = sign_http(self.app["secret"], "POST", path, params)
        return path + "?" + "&".join(f"{k}={v}" for k, v in params) + f"&auth_signature={signature}"

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=3.0) as http:
            start = time.monotonic()
            seq = 0
            while not self._stop.is_set():
                delay = start + seq / self.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
                    if self._stop.is_set():
                        break
                data = orjson.dumps({"seq": seq}).decode()
                body = orjson.dumps({"name": EVENT, "channel": self.channel, "data": data})
                try:
                    response = await http.post(self._target(body), content=body,
                                               headers={"Content-Type": "application/json"})
                    (self.published if response.status_code == 200 else self.refused).append(seq)
                except httpx.HTTPError:
                    self.unknown.append(seq)
                seq += 1
                self._changed.set()


class Follower:
    """A recovery driver client following one channel."""

    def __init__(self, client: PusherJsClient, build: str, channel: str) -> None:
        self.client = client
        self.build = build
        self.channel = channel

    @property
    def name(self) -> str:
        return self.client.name

    def reports(self, kind: str) -> list[Report]:
        return [r for r in self.client.reports if r["type"] == kind and r.get("channel", self.channel) == self.channel]

    def seqs(self) -> list[int]:
        return [r["seq"] for r in self.reports("delivery")]

    def recoveries(self) -> list[Report]:
        return self.reports("recovery")

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Until `check()` holds, re-checked as the client's reports come in."""
        client = self.client
        deadline = time.monotonic() + timeout
        while not check():
            client.node.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name} ({self.build}): timed out waiting for {what}; recent "
                                     f"reports:\n{client.history()}")
            client._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client._changed.wait(), min(remaining, 0.5))

    async def until_seq(self, seq: int, timeout: float = 30) -> None:
        await self.until(lambda: any(s >= seq for s in self.seqs()[-50:]), f"event {seq}", timeout)


async def follow(node: NodeDriver, name: str, build: str, key: str, port: int, channel: str,
                 options: dict[str, Any] | None = None) -> Follower:
    client = PusherJsClient(node, name)
    node.clients[name] = client
    result = await node.command("connect", client=name, build=build, key=key, port=port, options=options or {})
    assert result["supported"], f"{build}: the helper can't read positions: {client.history()}"
    await node.command("follow", client=name, channel=channel, event=EVENT)
    await client.wait_for(lambda r: r["type"] == "subscribed" and r["channel"] == channel, 20, "subscribed")
    return Follower(client, build, channel)


@dataclass
class Tally:
    build: str
    received: int
    missing: int
    duplicates: int
    out_of_order: int
    recoveries: list[tuple[bool, str | None, int]] = field(default_factory=list)
    # Milliseconds from a resubscription to the end of its recovery.
    recovery_ms: list[int] = field(default_factory=list)

    def line(self, scenario: str) -> str:
        outcomes = ", ".join(f"{'true' if ok else 'false'}({reason or count})" for ok, reason, count in self.recoveries)
        times = ", ".join(str(ms) for ms in self.recovery_ms)
        return (f"{scenario:<22} {self.build:<8} received {self.received:>5}  missing {self.missing:>4}  "
                f"duplicates {self.duplicates:>3}  out-of-order {self.out_of_order:>3}  "
                f"recoveries [{outcomes}]  recovery ms [{times}]")


def tally(follower: Follower, published: list[int]) -> Tally:
    seqs = follower.seqs()
    counts = Counter(seqs)
    out_of_order = 0
    newest = -1
    for seq in seqs:
        if seq < newest:
            out_of_order += 1
        newest = max(newest, seq)
    recoveries = follower.recoveries()
    times = []
    for recovery in recoveries:
        if recovery["cause"] != "resubscribe":
            continue
        subscribed = [r["t"] for r in follower.reports("subscribed") if r["t"] <= recovery["t"]]
        if subscribed:
            times.append(recovery["t"] - subscribed[-1])
    return Tally(
        build=follower.build,
        received=len(seqs),
        missing=len(set(published) - set(seqs)),
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        out_of_order=out_of_order,
        recoveries=[(r["recovered"], r["reason"], r["count"]) for r in recoveries],
        recovery_ms=times,
    )


async def settle(followers: list[Follower], publisher: Publisher, timeout: float = 30) -> None:
    """After the publisher stopped: until every follower has every published event (or the timeout:
    the tally then shows what is missing)."""
    wanted = set(publisher.published)
    deadline = time.monotonic() + timeout
    for follower in followers:
        remaining = max(0.1, deadline - time.monotonic())
        with contextlib.suppress(AssertionError):
            await follower.until(lambda f=follower: wanted <= set(f.seqs()), "every published event", remaining)
