"""herald/backlog.py: a connect storm queued in the kernel's backlog is taken in a few loop iterations,
not one connection per iteration (libuv's own accept under uvloop, which Herald's servers run on)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from herald.backlog import Backlog

STORM = 40
ITERATIONS = 8  # loop iterations the test lets run after the clients connected


class Counted(asyncio.Protocol):
    def __init__(self, made: list[asyncio.BaseTransport], backlog: Backlog | None,
                 again: Callable[[], asyncio.Protocol]) -> None:
        self.made, self.backlog, self.again = made, backlog, again

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)
        if self.backlog is not None:  # as herald/http.py's HttpConnection does
            self.backlog.accepted(self.again)


async def storm(use_backlog: bool) -> tuple[int, bool]:
    """How many of STORM queued connections the server has after ITERATIONS loop iterations, and
    whether the port still took connections after the server closed."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.BaseTransport] = []
    backlog = Backlog() if use_backlog else None

    def factory() -> asyncio.Protocol:
        return Counted(made, backlog, factory)

    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=STORM * 2)
    if backlog is not None:
        backlog.listen_on(server.sockets)
    port = server.sockets[0].getsockname()[1]
    # The kernel completes every handshake into the backlog while the loop is not running.
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(STORM)]
    for _ in range(ITERATIONS):
        await asyncio.sleep(0)
    accepted = len(made)
    if backlog is not None:
        backlog.close()
    server.close()
    await server.wait_closed()
    for transport in made:
        transport.close()
    for client in clients:
        client.close()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        still_listening = True
    except OSError:
        still_listening = False
    return accepted, still_listening


@pytest.mark.parametrize("use_backlog", [False, True])
def test_a_queued_storm_is_taken_within_a_few_iterations(use_backlog: bool) -> None:
    accepted, still_listening = uvloop.run(storm(use_backlog))
    assert not still_listening, "the port kept listening after the server closed"
    if use_backlog:
        assert accepted == STORM, f"{accepted} of {STORM} queued connections taken in {ITERATIONS} iterations"
    else:
        # What the backlog is for: libuv alone takes one connection per iteration.
        assert 0 < accepted <= ITERATIONS, f"libuv took {accepted} connections in {ITERATIONS} iterations"
