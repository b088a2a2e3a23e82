"""The part of uvicorn that Herald's own HTTP protocol (herald/http.py) relies on. uvicorn is pinned in
pyproject.toml; if an upgrade changes any of this, these tests say what changed instead of Herald failing
in production."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from herald.http import HttpConnection, HttpLimits, Site


async def asgi_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_http_factory_is_used_as_the_protocol_class() -> None:
    factory = Site(asgi_ok, HttpLimits()).protocol_factory()
    config = uvicorn.Config(asgi_ok, http=factory, ws="none", lifespan="on")  # type: ignore[arg-type]
    config.load()
    assert config.http_protocol_class is factory, "uvicorn no longer takes a protocol factory as `http=`"


def test_server_state_has_the_sets_herald_registers_in() -> None:
    state = ServerState()
    assert isinstance(state.connections, set) and isinstance(state.tasks, set)
    assert isinstance(state.default_headers, list)
    assert hasattr(state, "total_requests")


def test_the_protocol_takes_what_uvicorn_passes() -> None:
    """uvicorn's Server.startup calls the factory with config=, server_state=, app_state= and _loop=."""
    source = inspect.getsource(uvicorn.Server.startup)
    for argument in ("config=config", "server_state=self.server_state", "app_state=self.lifespan.state"):
        assert argument in source, f"uvicorn.Server.startup no longer passes {argument} to the protocol"
    params = inspect.signature(HttpConnection).parameters
    assert {"config", "server_state", "app_state", "_loop"} <= set(params)


def test_startup_and_shutdown_are_what_the_draining_server_extends() -> None:
    """herald/server.py's DrainingServer reads `servers` after `startup(sockets)` (the backlog's
    listening sockets, herald/backlog.py) and closes its duplicates before `shutdown(sockets)`."""
    for method in (uvicorn.Server.startup, uvicorn.Server.shutdown):
        assert list(inspect.signature(method).parameters) == ["self", "sockets"], method
    assert "self.servers" in inspect.getsource(uvicorn.Server.startup)


async def test_serves_registers_and_shuts_down_through_uvicorn() -> None:
    """A real uvicorn.Server with Herald's protocol: a request is answered, the connection is in
    `server_state.connections` while open, and uvicorn's shutdown closes it through `shutdown()`."""
    made: list[HttpConnection] = []
    site = Site(asgi_ok, HttpLimits())

    def factory(**kwargs: Any) -> HttpConnection:
        conn = HttpConnection(**kwargs, site=site)
        made.append(conn)
        return conn

    config = uvicorn.Config(asgi_ok, host="127.0.0.1", port=0, http=factory, ws="none",  # type: ignore[arg-type]
                            lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert await reader.readexactly(2) == b"ok"
    assert len(made) == 1 and made[0] in server.server_state.connections
    server.should_exit = True
    assert await asyncio.wait_for(reader.read(), 5) == b"", "uvicorn's shutdown did not close the connection"
    await asyncio.wait_for(task, 10)
    assert not server.server_state.connections
    writer.close()
