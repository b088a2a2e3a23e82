"""Herald's HTTP protocol runs a hot handler inside the callback that completed its request when the
site says its handlers never wait (everything in memory); a handler that does wait after all is carried
on by a task, with the same answer. Driven over a recording transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from herald.http import Answer, HttpConnection, HttpLimits, Request, Site

REQUEST = b"POST /hot HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> Any:
        return None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class State:
    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.default_headers: list[tuple[bytes, bytes]] = []
        self.total_requests = 0


async def immediate(request: Request) -> Answer:
    return 200, [], b"now:" + request.body


async def waits(request: Request) -> Answer:
    await asyncio.sleep(0.01)
    # From here on the handler runs in a task, so what needs one (asyncio.timeout) works.
    assert asyncio.current_task() is not None
    async with asyncio.timeout(1):
        await asyncio.sleep(0)
    return 201, [], b"later:" + request.body


def connection(handler: Any, eager: bool) -> tuple[HttpConnection, Transport, State]:
    site = Site(None, HttpLimits(), fast=lambda method, path: handler, eager=eager)
    state = State()
    conn = HttpConnection(None, state, {}, site=site)
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport, state


@pytest.mark.parametrize("eager", [True, False])
async def test_a_handler_that_never_waits(eager: bool) -> None:
    conn, transport, state = connection(immediate, eager)
    conn.data_received(REQUEST)
    if eager:
        assert transport.written.endswith(b"now:{}"), "answered inside data_received"
        assert not state.tasks
    else:
        assert not transport.written
        await asyncio.gather(*state.tasks)
        assert transport.written.endswith(b"now:{}")


async def test_an_eager_handler_that_waits_is_carried_on_by_a_task() -> None:
    conn, transport, state = connection(waits, eager=True)
    conn.data_received(REQUEST + REQUEST)  # pipelined: the second waits for the first
    assert not transport.written and len(state.tasks) == 1
    while state.tasks:
        await asyncio.gather(*list(state.tasks))
    assert transport.written.count(b"HTTP/1.1 201 ") == 2
    assert transport.written.endswith(b"later:{}")
