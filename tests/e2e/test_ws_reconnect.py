"""Reconnection behaviour of real pusher-js against Herald (checklist item 20).

4200 (sent to every socket when a node drains on SIGTERM) makes pusher-js reconnect at once and
resubscribe; refusal codes make it give up (4001/4003/4004 are in test_ws_connection.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.authserver import AuthServer
from tests.helpers import HeraldProcess, start_herald
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.rawclient import open_raw, unique

pytest_plugins = ["tests.wsfixtures"]

APP: dict[str, Any] = {"id": "20", "key": "key-rc", "secret": "secret-rc", "enable_client_messages": True}
DRAIN = ["--drain-seconds", "0.2"]


async def start(tmp_path: Path, port: int | None = None, name: str = "rc") -> HeraldProcess:
    return await asyncio.to_thread(start_herald, tmp_path, apps=[APP], extra_args=DRAIN, port=port, name=name)


async def stop(herald: HeraldProcess) -> None:
    await asyncio.to_thread(herald.stop)


async def wait_resubscribed(client: PusherJsClient, channels: list[str], timeout: float = 10) -> None:
    pending = set(channels)
    while pending:
        report = await client.wait_event(None, "pusher:subscription_succeeded", timeout)
        pending.discard(report["channel"])


async def test_drain_closes_with_4200(tmp_path: Path) -> None:
    herald = await start(tmp_path)
    try:
        c = await open_raw(herald.port, APP["key"])
        await stop(herald)
        code, reason, _frames = await c.closed()
        assert code == 4200, (code, reason)
    finally:
        await stop(herald)


class Forwarder:
    """A TCP port standing for a load balancer in front of Herald nodes: each new connection goes to
    the current `target` port. (Restarting a node on the same port would make pusher-js wait its 15 s
    strategy timeout after the refused connect; real deployments reconnect to another node.)"""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Forwarder:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.close()


async def test_pusherjs_reconnects_to_another_node_and_resubscribes_after_4200(
    tmp_path: Path, node: NodeDriver, auth_server: AuthServer
) -> None:
    auth_server.add_app(APP)
    auth_server.set_user("a", "alice", {"name": "Alice"})
    auth_server.set_user("b", "bob", {"name": "Bob"})
    public, private, presence = unique("news"), unique("private-chat"), unique("presence-room")
    channels = [public, private, presence]

    first = await start(tmp_path, name="rc-first")
    second: HeraldProcess | None = None
    try:
        async with Forwarder(first.port) as lb:
            a = await node.connect("a", APP["key"], lb.port, auth=auth_server)
            b = await node.connect("b", APP["key"], lb.port, auth=auth_server)
            for client in (a, b):
                for channel in channels:
                    await client.subscribe(channel)
            old_ids = {a.socket_id, b.socket_id}

            second = await start(tmp_path, name="rc-second")
            lb.target = second.port
            await stop(first)  # drains: every socket is closed with 4200
            for client in (a, b):
                error = await client.wait_error()
                assert error["error"]["data"]["code"] == 4200, client.history()
                await client.wait_state("connecting")
                await client.wait_state("connected", timeout=5)
                await wait_resubscribed(client, channels)
            assert a.socket_id not in old_ids and b.socket_id not in old_ids

            # The new subscriptions work: presence roster has both, client events flow.
            members = await a.members(presence)
            assert members["count"] == 2 and members["me"] == {"id": "alice", "info": {"name": "Alice"}}
            await a.trigger(private, "client-back", {"ok": True})
            got = await b.wait_event(private, "client-back")
            assert got["data"] == {"ok": True}
    finally:
        await stop(first)
        if second is not None:
            await stop(second)


async def test_pusherjs_reconnects_after_restart_on_same_port(tmp_path: Path, node: NodeDriver) -> None:
    """The single-node case: the node restarts on its port. pusher-js's first reconnect attempts hit
    the draining node (4200 again) or a closed port; it gets back once the new process listens."""
    channel = unique("news")
    first = await start(tmp_path, name="rc-first")
    port = first.port
    second: HeraldProcess | None = None
    try:
        a = await node.connect("a", APP["key"], port)
        await a.subscribe(channel)
        await stop(first)
        error = await a.wait_error()
        assert error["error"]["data"]["code"] == 4200, a.history()
        await a.wait_state("connecting")
        second = await start(tmp_path, port=port, name="rc-second")
        # Up to pusher-js's 15 s ws strategy timeout after a refused connect, plus margin.
        await a.wait_state("connected", timeout=25)
        await wait_resubscribed(a, [channel])
    finally:
        await stop(first)
        if second is not None:
            await stop(second)


async def test_pusherjs_does_not_reconnect_after_4009(tmp_path: Path, node: NodeDriver) -> None:
    # A 4009 close without sign-in: an app requiring authorized connections closes a socket that
    # neither signs in nor joins a private channel within its timeout.
    app: dict[str, Any] = {"id": "21", "key": "key-authz", "secret": "secret-authz",
           "enable_user_authentication": True, "user_authentication_timeout_s": 1}
    herald = await asyncio.to_thread(start_herald, tmp_path, apps=[app], name="authz")
    try:
        a = await node.connect("a", app["key"], herald.port)
        error = await a.wait_error(timeout=5)
        assert error["error"]["data"]["code"] == 4009, a.history()
        await a.wait_state("disconnected")
        await asyncio.sleep(1.5)  # pusher-js retries after at most 1 s when it retries at all
        assert [r for r in a.reports[a.cursor :] if r["type"] == "state"] == [], a.history()
        assert (await a.query_state())["state"] == "disconnected"
    finally:
        await stop(herald)


async def test_drained_pusherjs_does_not_hammer_the_draining_node(tmp_path: Path, node: NodeDriver) -> None:
    herald = await asyncio.to_thread(
        start_herald, tmp_path, apps=[APP], extra_args=["--drain-seconds", "2"], name="hammer"
    )
    try:
        a = await node.connect("a", APP["key"], herald.port)
        await stop(herald)  # returns when the process has exited, after the 2 s drain
        refusals = [r for r in a.reports if r["type"] == "error"]
        # One close for the drain, then at most a couple of attempts within those 2 s.
        assert len(refusals) <= 5, f"{len(refusals)} errors while the node drained:\n{a.history(10)}"
    finally:
        await stop(herald)
