"""Outbound frames: queued per socket, flushed for all sockets by one scheduled callback.

On uvicorn's `websockets` protocol Herald writes pre-built frame bytes straight to each socket's
transport: a broadcast costs one `transport.write` per socket, and frames queued for a socket in the
same loop iteration are joined into one write. A socket whose unsent bytes exceed
`MAX_BUFFERED_BYTES` is a slow reader; it is closed (4100, pusher-js reconnects after a back-off)
instead of holding memory or delaying anyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.frames import text_frame
from shared.protocol import codes

log = logging.getLogger("herald.gateway")

MAX_BUFFERED_BYTES = 4 * 1024 * 1024
SLOW_READER_REASON = "Connection too slow to keep up; reconnect"

# Strong references to fire-and-forget close tasks (the loop only keeps weak ones).
_background: set[asyncio.Future[None]] = set()

AsgiSend = Callable[[dict[str, Any]], Awaitable[None]]


class Sink(Protocol):
    """Where a connection's outgoing frames go. `payload` is the JSON text as bytes;
    `wire` is the same message already framed, when the caller built it once for many sockets."""

    def send(self, payload: bytes, wire: bytes | None = None) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued; further sends are dropped."""

    @property
    def closed(self) -> bool: ...


class FlushScheduler:
    """Node-wide: collects sockets with queued frames and writes them all in one loop callback."""

    def __init__(self) -> None:
        self._dirty: list[TransportSink] = []
        self._scheduled = False

    def mark(self, sink: TransportSink) -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for sink in dirty:
            sink.flush()


class TransportSink:
    __slots__ = ("_close_cb", "_closed", "_pending", "_scheduler", "_send", "_transport")

    def __init__(self, transport: asyncio.Transport, asgi_send: AsgiSend, scheduler: FlushScheduler) -> None:
        self._transport = transport
        self._send = asgi_send
        self._scheduler = scheduler
        self._pending: list[bytes] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or self._transport.is_closing()

    def send(self, payload: bytes, wire: bytes | None = None) -> None:
        if self._closed:
            return
        if not self._pending:
            self._scheduler.mark(self)
        self._pending.append(wire if wire is not None else text_frame(payload))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._transport.get_write_buffer_size() > MAX_BUFFERED_BYTES and not self._closed:
            log.info("closing slow reader: %d bytes unsent", self._transport.get_write_buffer_size())
            self._closed = True
            # The close frame can't overtake the backlog; drop it so the socket ends now.
            self._transport.abort()

    def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        task = asyncio.ensure_future(_asgi_close(self._send, code, reason))
        _background.add(task)
        task.add_done_callback(_background.discard)


class QueueSink:
    """Fallback for ASGI servers whose transport Herald can't reach: one writer task per socket."""

    __slots__ = ("_closed", "_queue", "_send", "_task")

    def __init__(self, asgi_send: AsgiSend) -> None:
        self._send = asgi_send
        self._queue: asyncio.Queue[tuple[int, str] | bytes] = asyncio.Queue()
        self._closed = False
        self._task = asyncio.ensure_future(self._run())

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, payload: bytes, wire: bytes | None = None) -> None:
        if not self._closed:
            if self._queue.qsize() * 256 > MAX_BUFFERED_BYTES:
                self._closed = True
                self._queue.put_nowait((codes.OVER_CAPACITY, SLOW_READER_REASON))
                return
            self._queue.put_nowait(payload)

    def close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait((code, reason))

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, tuple):
                    await _asgi_close(self._send, *item)
                    return
                await self._send({"type": "websocket.send", "text": item.decode()})
        except Exception:  # the peer went away; nothing left to deliver
            self._closed = True

    def cancel(self) -> None:
        self._task.cancel()


async def _asgi_close(send: AsgiSend, code: int, reason: str) -> None:
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason})
    except Exception:  # already closed by the peer
        log.debug("close after disconnect ignored")


def transport_of(asgi_send: AsgiSend) -> asyncio.Transport | None:
    """The raw transport behind uvicorn's `websockets` protocol, if that is what serves us.

    Works for uvicorn's `websockets-sansio` and legacy `websockets` protocols. Only used when no
    extension (permessage-deflate) was negotiated, since the frames written here are uncompressed.
    """
    owner = getattr(asgi_send, "__self__", None)
    transport = getattr(owner, "transport", None)
    extensions = getattr(owner, "extensions", None) or getattr(getattr(owner, "conn", None), "extensions", None)
    # uvloop's transports don't subclass asyncio.Transport, so check for the methods used.
    if not extensions and all(hasattr(transport, m) for m in ("write", "is_closing", "get_write_buffer_size")):
        return transport
    return None


RAW_SEND_SCOPE_KEY = "herald.raw_send"


class CaptureRawSend:
    """Outermost ASGI middleware: keeps the server's own `send` in the scope, because frameworks wrap
    it and the wrapper hides the protocol object whose transport Herald writes to."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: AsgiSend) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_SCOPE_KEY] = send
        await self.app(scope, receive, send)
