"""Python side of the pusher-js harness: drives real pusher-js clients in a Node process.

    async with NodeDriver() as node:
        a = await node.connect("a", "key-1", herald.port, auth=auth_server)
        await a.subscribe("private-x")            # waits for pusher:subscription_succeeded
        await a.trigger("private-x", "client-hi", {"n": 1})
        report = await a.wait_event("private-x", "client-hi")

Every client keeps the list of reports tests/node/driver.mjs produced for it (see that file for the
report types). `wait_for` returns the first matching report after the client's cursor and moves the
cursor past it, so consecutive waits see reports in order and nothing is matched twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.authserver import AuthServer

NODE_DIR = Path(__file__).resolve().parent / "node"
DRIVER = NODE_DIR / "driver.mjs"
DEFAULT_TIMEOUT = 10.0

Report = dict[str, Any]
Predicate = Callable[[Report], bool]


class DriverError(Exception):
    pass


def node_available() -> str | None:
    """Why the pusher-js harness cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "pusher-js").is_dir():
        return "tests/node/node_modules missing: run `cd tests/node && npm ci`"
    return None


class PusherJsClient:
    """One `new Pusher(key, options)` instance inside the driver."""

    def __init__(self, node: NodeDriver, name: str) -> None:
        self.node = node
        self.name = name
        self.reports: list[Report] = []
        self.cursor = 0
        self._changed = asyncio.Event()

    def _add(self, report: Report) -> None:
        self.reports.append(report)
        self._changed.set()

    # ---- observing -------------------------------------------------------------------------------

    @property
    def state(self) -> str | None:
        states = [r["current"] for r in self.reports if r["type"] == "state"]
        return states[-1] if states else None

    @property
    def socket_id(self) -> str | None:
        ids = [r["socket_id"] for r in self.reports if r["type"] == "state" and r["current"] == "connected"]
        return ids[-1] if ids else None

    def history(self, last: int = 40) -> str:
        lines = [json.dumps(r) for r in self.reports[-last:]]
        return "\n".join(lines)

    async def wait_for(self, predicate: Predicate, timeout: float = DEFAULT_TIMEOUT, what: str = "") -> Report:
        """The first report after the cursor matching `predicate`; the cursor moves past it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i in range(self.cursor, len(self.reports)):
                if predicate(self.reports[i]):
                    self.cursor = i + 1
                    return self.reports[i]
            self.node.check_alive()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"client {self.name}: no report matching {what or predicate} within {timeout}s "
                    f"(cursor {self.cursor}); recent reports:\n{self.history()}\n"
                    f"driver stderr (tail):\n{self.node.stderr_tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def wait_state(self, state: str, timeout: float = DEFAULT_TIMEOUT) -> Report:
        return await self.wait_for(
            lambda r: r["type"] == "state" and r["current"] == state, timeout, f"state {state}"
        )

    async def wait_event(self, channel: str | None, event: str, timeout: float = DEFAULT_TIMEOUT) -> Report:
        """An app-visible channel event (what `channel.bind(event, ...)` would receive)."""
        return await self.wait_for(
            lambda r: r["type"] == "event" and r["event"] == event and (channel is None or r["channel"] == channel),
            timeout,
            f"event {event} on {channel}",
        )

    async def wait_error(self, timeout: float = DEFAULT_TIMEOUT) -> Report:
        return await self.wait_for(lambda r: r["type"] == "error", timeout, "a connection error")

    async def next_message(self, timeout: float = DEFAULT_TIMEOUT, skip_liveness: bool = True) -> Report:
        """The next frame pusher-js decoded (pusher:ping/pong skipped unless asked)."""

        def match(r: Report) -> bool:
            if r["type"] != "message":
                return False
            return not (skip_liveness and r["event"] in ("pusher:ping", "pusher:pong"))

        return await self.wait_for(match, timeout, "the next frame")

    def last_frame(self, channel: str | None = None) -> Report:
        """The latest frame before the cursor (on `channel` if given): e.g. the frame behind the event
        the last wait returned, as a frame's 'message' report precedes the 'event' reports it causes."""
        for r in reversed(self.reports[: self.cursor]):
            if r["type"] == "message" and (channel is None or r.get("channel") == channel):
                return r
        raise AssertionError(f"client {self.name}: no frame on {channel} yet:\n{self.history()}")

    def skip_to_end(self) -> None:
        """Forget everything received so far."""
        self.cursor = len(self.reports)

    # ---- acting ----------------------------------------------------------------------------------

    async def subscribe(self, channel: str, wait: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Report | None:
        """`pusher.subscribe(channel)`; by default waits for `pusher:subscription_succeeded` and fails
        on `pusher:subscription_error`."""
        await self.node.command("subscribe", client=self.name, channel=channel)
        if not wait:
            return None
        report = await self._subscription_result(channel, timeout)
        if report["event"] != "pusher:subscription_succeeded":
            raise AssertionError(f"client {self.name}: subscription to {channel} failed: {report}")
        return report

    async def subscribe_expect_error(self, channel: str, timeout: float = DEFAULT_TIMEOUT) -> Report:
        """Subscribe and return the `pusher:subscription_error` the app sees (fails on success)."""
        await self.node.command("subscribe", client=self.name, channel=channel)
        report = await self._subscription_result(channel, timeout)
        if report["event"] != "pusher:subscription_error":
            raise AssertionError(f"client {self.name}: subscription to {channel} unexpectedly succeeded")
        return report

    async def _subscription_result(self, channel: str, timeout: float) -> Report:
        return await self.wait_for(
            lambda r: r["type"] == "event"
            and r["channel"] == channel
            and r["event"] in ("pusher:subscription_succeeded", "pusher:subscription_error"),
            timeout,
            f"subscription result for {channel}",
        )

    async def unsubscribe(self, channel: str) -> None:
        await self.node.command("unsubscribe", client=self.name, channel=channel)

    async def trigger(self, channel: str, event: str, data: Any) -> bool:
        """`channel.trigger(event, data)`: True when pusher-js handed the frame to the socket."""
        return bool(await self.node.command("trigger", client=self.name, channel=channel, event=event, data=data))

    async def send_event(self, event: str, data: Any, channel: str | None = None) -> bool:
        """`pusher.send_event(event, data, channel)`: any frame, even on channels not joined."""
        return bool(
            await self.node.command("send_event", client=self.name, event=event, data=data, channel=channel)
        )

    async def members(self, channel: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.node.command("members", client=self.name, channel=channel)
        return result

    async def query_state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.node.command("state", client=self.name)
        return result

    async def signin(self) -> None:
        await self.node.command("signin", client=self.name)

    async def barrier(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Send pusher:ping and wait for the pong: the server has handled everything sent before."""
        await self.send_event("pusher:ping", {})
        await self.wait_for(
            lambda r: r["type"] == "message" and r["event"] == "pusher:pong", timeout, "pong (barrier)"
        )

    async def disconnect(self, wait: bool = True) -> None:
        await self.node.command("disconnect", client=self.name)
        if wait and self.state != "disconnected":
            await self.wait_state("disconnected")

    async def reconnect(self) -> None:
        await self.node.command("reconnect", client=self.name)


class NodeDriver:
    """The `node tests/node/driver.mjs` process and its clients."""

    def __init__(self, script: Path = DRIVER) -> None:
        self.script = script
        self.proc: asyncio.subprocess.Process | None = None
        self.clients: dict[str, PusherJsClient] = {}
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: asyncio.Future[None] | None = None
        self._fatal: list[str] = []

    async def __aenter__(self) -> NodeDriver:
        reason = node_available()
        if reason:
            raise DriverError(reason)
        self._ready = asyncio.get_running_loop().create_future()
        self.proc = await asyncio.create_subprocess_exec(
            "node",
            str(self.script),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
            limit=16 * 1024 * 1024,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        try:
            await asyncio.wait_for(self._ready, 20)
        except TimeoutError:
            await self.__aexit__(None, None, None)
            raise DriverError(
                f"driver not ready after 20 s (exit code {self.proc.returncode}); stderr:\n{self.stderr_tail()}"
            ) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 2)

    # ---- plumbing --------------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                report: Report = json.loads(line)
            except ValueError:
                self._stderr.append(f"[non-JSON stdout] {line!r}")
                continue
            kind = report.get("type")
            if kind == "ready":
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
            elif kind == "result":
                fut = self._pending.pop(report.get("id", -1), None)
                if fut is not None and not fut.done():
                    if report["ok"]:
                        fut.set_result(report.get("result"))
                    else:
                        fut.set_exception(DriverError(report.get("error")))
            elif kind == "fatal":
                self._fatal.append(str(report.get("error")))
            else:
                client = self.clients.get(report.get("client", ""))
                if client is not None:
                    client._add(report)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DriverError(f"driver exited; stderr:\n{self.stderr_tail()}"))
        for client in self.clients.values():
            client._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def check_alive(self) -> None:
        if self._fatal:
            raise DriverError(f"driver reported an uncaught exception: {self._fatal[0]}")
        if self.proc is not None and self.proc.returncode is not None:
            raise DriverError(f"driver exited with {self.proc.returncode}:\n{self.stderr_tail()}")

    async def command(self, op: str, **args: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self.check_alive()
        self._next_id += 1
        cmd_id = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cmd_id] = fut
        self.proc.stdin.write((json.dumps({"id": cmd_id, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, DEFAULT_TIMEOUT)

    # ---- clients ---------------------------------------------------------------------------------

    async def connect(
        self,
        name: str,
        key: str,
        port: int,
        *,
        auth: AuthServer | None = None,
        options: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        origin: str | None = None,
    ) -> PusherJsClient:
        """`new Pusher(key, {wsHost: 127.0.0.1, wsPort: port, ...})`; waits for `connected` unless
        wait=False. With `auth`, channel authorization and user authentication go to that server.
        With `origin`, this app key's handshakes carry that Origin header, as a browser's would."""
        client = PusherJsClient(self, name)
        self.clients[name] = client
        args: dict[str, Any] = {"client": name, "key": key, "port": port, "options": options or {}}
        if origin is not None:
            args["origin"] = origin
        if auth is not None:
            args["authPort"] = auth.port
        await self.command("connect", **args)
        if wait:
            report = await client.wait_for(
                lambda r: (r["type"] == "state" and r["current"] in ("connected", "disconnected", "failed")),
                timeout,
                "connected",
            )
            if report["current"] != "connected":
                raise AssertionError(f"client {name} did not connect:\n{client.history()}")
        return client
