"""Outbound frames: queued per socket, flushed for all sockets by one scheduled callback.

Herald writes pre-built frame bytes straight to each socket's transport: a broadcast costs one
`transport.write` per socket, and frames queued for a socket in the same loop iteration are joined
into one write. Every byte a socket is sent (Herald frames, pongs, close frames) counts against
`MAX_BUFFERED_BYTES` of unsent data: past it the socket is a slow reader and is dropped instead of
holding memory or delaying anyone else (gateway/wsprotocol.py).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# Unsent bytes one socket may hold in user space before it is dropped as a slow reader.
MAX_BUFFERED_BYTES = 4 * 1024 * 1024
SLOW_READER_REASON = "Connection too slow to keep up; reconnect"


class Sink(Protocol):
    """Where a connection's outgoing frames go. `payload` is the JSON text as bytes;
    `wire` is the same message already framed, when the caller built it once for many sockets."""

    def send(self, payload: bytes, wire: bytes | None = None) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued; further sends are dropped."""

    @property
    def closed(self) -> bool: ...


class Flushable(Protocol):
    def flush(self) -> None: ...


class FlushScheduler:
    """Node-wide: collects sockets with queued frames and writes them all in one loop callback.

    This is also the one place that sees every write batch, so per-batch counters (bytes out,
    deliveries) belong here rather than on per-socket objects."""

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False

    def mark(self, sink: Flushable) -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for sink in dirty:
            sink.flush()
