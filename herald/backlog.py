"""Taking connections out of the kernel's listen backlog during a connect storm.

libuv (under uvloop) accepts one connection each time the loop finds a listening socket readable,
that is at most one per loop iteration. While a gateway fans events out to many sockets its
iterations last milliseconds, so a reconnect storm waits in the kernel's backlog: measured, 47
connects per second against a node delivering 100 events/s to 1,000 subscribers, with ~97
connections queued throughout (loadtest/README.md, "Storms"). `Backlog` reads the same listening
sockets: after an iteration in which a WebSocket upgrade arrived, it accepts what else is waiting
(at most ACCEPTS_PER_ITERATION per socket) and hands each one to the loop with the server's own
protocol. When nothing waits, that costs one `accept` call that fails with EAGAIN. Plain HTTP
requests don't trigger it (herald/http.py): with a new connection per request, looking cost ~7% more
CPU per publish in the benchmark, and the HTTP API is not where storms happen.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("herald.http")

# Per listening socket and loop iteration: enough to empty a storm's backlog in a few iterations;
# admission (gateway/endpoint.py) still bounds how many upgrades are answered per iteration.
ACCEPTS_PER_ITERATION = 64


class Backlog:
    def __init__(self) -> None:
        self._listeners: list[socket.socket] = []
        self._protocol: Callable[[], asyncio.Protocol] | None = None
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def listen_on(self, sockets: Iterable[Any]) -> None:
        """The server's listening sockets (asyncio's `Server.sockets`), read through duplicates of
        their descriptors; `close` must be called when the server stops listening."""
        for listening in sockets:
            duplicate = socket.socket(fileno=os.dup(listening.fileno()))
            duplicate.setblocking(False)
            self._listeners.append(duplicate)

    def close(self) -> None:
        """Before the server closes its sockets: a duplicate would keep the port listening."""
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    def accepted(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        """A connection came in (`protocol` makes another like it): look for more waiting after this
        iteration."""
        if self._listeners and not self._scheduled:
            self._protocol = protocol
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            for _ in range(ACCEPTS_PER_ITERATION):
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # out of descriptors, say: the loop's own accept sheds load
                    log.warning("accept failed: %s", exc)
                    break
                task = loop.create_task(self._serve(loop, sock))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        assert self._protocol is not None
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # As the loop's own TCP transports are: every write goes out at once.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.connect_accepted_socket(self._protocol, sock)
        except OSError:
            sock.close()  # the client left before the transport was made
