"""TCP proxies for cluster tests.

`FailoverProxy`: a small load balancer; new connections go to the first backend that accepts (or, with
`rotate`, the next one in turn that accepts), so clients of a killed gateway reconnect to a live one, as
behind a Kubernetes Service. With `check_ready`, only to a backend whose GET /ready answers 200 (a
Service routes to ready pods only, so a draining gateway gets no new connections).

`cut()` stands for a network that stops carrying packets: open connections stay open but nothing goes
through them any more, and new ones are accepted but not forwarded. `resume()` heals it: the cut
connections are closed (their clients have given up on them by then) and the waiting ones go through.
`resume(stale=True)` heals it for new connections only: the cut ones stay open and silent, as TCP
connections are for a while after a real partition heals (their retransmissions have backed off, and
neither end has noticed anything yet).

`DelayProxy`: a slow link to one backend (e.g. one gateway's link to Redis), or a link slow one way.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class FailoverProxy:
    def __init__(self, backends: list[int], check_ready: bool = False, rotate: bool = False) -> None:
        self.backends = list(backends)
        self.check_ready = check_ready
        self.rotate = rotate
        self._next = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._open: set[asyncio.StreamWriter] = set()
        self._cut: set[asyncio.StreamWriter] = set()
        self._stale: set[asyncio.StreamWriter] = set()

    async def start(self) -> FailoverProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._flowing.set()
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        for writer in list(self._open):
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def cut(self) -> None:
        """Nothing goes through any more; connections are not closed."""
        self._flowing.clear()
        self._cut = set(self._open)

    def resume(self, stale: bool = False) -> None:
        if stale:
            self._stale |= self._cut
        else:
            for writer in self._cut:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()
        self._cut = set()
        self._flowing.set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        await self._flowing.wait()  # a connection made during a cut waits for the network to heal
        order = self.backends
        if self.rotate:
            self._next = (self._next + 1) % len(order)
            order = order[self._next:] + order[:self._next]
        for port in order:
            if self.check_ready and not await _ready(port):
                continue
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            client_w.close()
            return
        self._open.update((client_w, up_w))
        pumps = [asyncio.create_task(self._pump(client_r, up_w)), asyncio.create_task(self._pump(up_r, client_w))]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer in self._stale:
                    continue  # open, and carrying nothing
                if writer in self._cut or writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


READY_TIMEOUT_S = 1.0


async def _ready(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), READY_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), READY_TIMEOUT_S)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


class DelayProxy:
    """A TCP proxy to one backend that delays every byte by `delay_s` in each direction (order and
    throughput kept): a slow network link, e.g. between one gateway and Redis. `up_delay_s`, when set,
    delays what goes to the backend instead (a link slow one way); both can change at any time and
    apply to bytes read from then on."""

    def __init__(self, backend_port: int, delay_s: float, host: str = "127.0.0.1") -> None:
        self.backend_port = backend_port
        self.delay_s = delay_s
        self.up_delay_s: float | None = None
        self.host = host
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> DelayProxy:
        self.server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.backend_port)
        except OSError:
            client_w.close()
            return
        self._spawn(self._pipe(client_r, up_w, upstream=True))
        self._spawn(self._pipe(up_r, client_w, upstream=False))

    def _delay(self, upstream: bool) -> float:
        return self.up_delay_s if upstream and self.up_delay_s is not None else self.delay_s

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self._delay(upstream), data))
            queue.put_nowait((0.0, b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
