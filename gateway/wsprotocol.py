"""One client WebSocket after the HTTP upgrade: RFC 6455 framing, callback-driven, no task per socket.

The object is both the socket's asyncio protocol (bytes in) and its `Sink` (frames out), so an idle
connection costs this object, its `Connection` and the transport, nothing else: no reader task, no
queue, no per-socket buffer until bytes actually wait. Client messages are handed to the protocol
handler in order; a task exists only while a message is being handled (and handles any that arrive
meanwhile). Every byte written (Herald frames, pongs, close frames) goes through `_write`, which drops
the socket once more than `MAX_BUFFERED_BYTES` wait unsent, so a client that never reads cannot grow
the server's memory, whatever it sends.

Written for Herald instead of using the `websockets` protocol objects: their per-connection state
(reader, parser generator, queues) was most of the 24 KiB an idle socket cost, and their handshake
most of the CPU per connection (see loadtest/README.md). Unmasking uses the `websockets` C speedup.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from websockets.speedups import apply_mask  # C: ~0.1 us per client frame, vs a Python loop per byte

from gateway.frames import (
    MAX_CONTROL_PAYLOAD_BYTES,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_frame,
    pong_frame,
    text_frame,
)
from gateway.outbound import MAX_BUFFERED_BYTES
from shared import metrics
from shared.protocol import codes

if TYPE_CHECKING:
    from gateway.connection import Connection
    from gateway.endpoint import Gateway

log = logging.getLogger("herald.gateway")

# Inbound messages above this are refused with close 1009; the apps' own limits are lower.
MAX_MESSAGE_BYTES = 256 * 1024
# After Herald's close frame, how long the client has to answer with its own before TCP is dropped.
CLOSE_TIMEOUT_S = 5.0
# Client messages waiting behind one being handled; reading from the socket pauses at this many.
MAX_QUEUED_MESSAGES = 64

# Close codes of RFC 6455 section 7.4.1.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012
_RECEIVABLE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# _CLOSING: Herald's close frame is out, waiting for the client's; _GONE: transport closed or aborted.
_OPEN, _CLOSING, _GONE = 0, 1, 2

# Metrics (docs/metrics.md): plain dict counters. Bytes out are counted where frames are built: per
# broadcast by the hub, per frame of one socket by its Connection, and here for the frames only this
# layer writes (close, pong); the flush path itself counts nothing.
_BYTES_IN = metrics.BYTES_IN.values
_BYTES_OUT = metrics.BYTES_OUT.values
CLOSE_ABNORMAL = 1006  # the label of a connection that ended without a close frame
# Close codes counted under their own label; a client's other codes count as "other".
_KNOWN_CLOSE_CODES = frozenset({*_RECEIVABLE_CLOSE_CODES, CLOSE_NO_STATUS, CLOSE_ABNORMAL,
                                *(v for k, v in vars(codes).items() if k.isupper() and isinstance(v, int)
                                  and 4000 <= v <= 4999)})


def count_close(code: int) -> None:
    metrics.CONNECTIONS_CLOSED.labels(str(code) if code in _KNOWN_CLOSE_CODES else "other").inc()


def handshake_error(method: str, headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, bytes | None]:
    """Check an upgrade request (RFC 6455 section 4.2.1); returns (problem, None) or ("", client key)."""
    if method != "GET":
        return "WebSocket upgrades must use GET", None
    key = version = None
    upgrade = connection = b""
    for name, value in headers:
        if name == b"sec-websocket-key":
            key = value
        elif name == b"sec-websocket-version":
            version = value
        elif name == b"upgrade":
            upgrade = value
        elif name == b"connection":
            connection = value
    if b"websocket" not in upgrade.lower() or b"upgrade" not in connection.lower():
        return "Missing 'Upgrade: websocket' / 'Connection: Upgrade'", None
    if version != b"13":
        return "Unsupported Sec-WebSocket-Version (13 is required)", None
    if key is None:
        return "Missing Sec-WebSocket-Key", None
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        return "Invalid Sec-WebSocket-Key", None
    return "", key


def accept_response(key: bytes) -> bytes:
    """The 101 answer: no subprotocol and no extension, so frames stay plain and pre-built ones fit."""
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


class WebSocket(asyncio.Protocol):
    __slots__ = ("_buf", "_frag", "_frag_op", "_inbox", "_lost", "_pending", "_skip", "_state", "_timer",
                 "conn", "gateway", "transport")

    def __init__(self, gateway: Gateway, transport: Any) -> None:
        self.gateway = gateway
        self.transport = transport
        self.conn: Connection | None = None  # set once admitted (gateway.endpoint)
        self._buf = b""
        self._frag: list[bytes] | None = None
        self._frag_op = 0
        self._inbox: deque[str | None] | None = None  # not None while a message is being handled
        self._pending: list[bytes] | None = None
        self._state = _OPEN
        self._lost = False
        self._skip = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- Sink ------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state != _OPEN

    def send(self, payload: bytes, wire: bytes | None = None) -> None:
        if self._state:
            return
        self.queue(wire if wire is not None else text_frame(payload))

    def queue(self, frame: bytes) -> None:
        """Raw bytes to write at the next flush (joined with the others queued this iteration)."""
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            self.gateway.scheduler.mark(self)
        else:
            pending.append(frame)

    def hold(self, data: bytes) -> None:
        """Bytes written with the next flush, which the caller triggers (the 101 before admission)."""
        self._pending = [data]

    def flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._state != _GONE:
            self._write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self, code: int, reason: str) -> None:
        if self._state:
            return
        self.flush()
        if self._state:
            return  # the flush found a slow reader and dropped it
        self._state = _CLOSING
        if self.conn is not None:
            count_close(code)
        frame = close_frame(code, reason)
        _BYTES_OUT[()] += len(frame)
        self._write(frame)
        if self._state == _CLOSING:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._abort)

    def shutdown(self) -> None:
        """uvicorn's shutdown (after Herald's drain): whatever is still open gets 1012."""
        self.close(CLOSE_SERVICE_RESTART, "Server restarting")

    def _write(self, data: bytes) -> None:
        transport = self.transport
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            log.info("closing slow reader: %d bytes unsent", transport.get_write_buffer_size())
            metrics.SLOW_READER_DISCONNECTS.inc()
            # A close frame can't overtake the backlog; drop the socket now.
            self._abort()

    def _abort(self) -> None:
        if self._state == _OPEN and self.conn is not None:
            count_close(CLOSE_ABNORMAL)
        self._state = _GONE
        self._pending = None
        self.transport.abort()

    # -- bytes in --------------------------------------------------------------------------------

    def start(self) -> None:
        """Admitted: handle whatever the client sent before (gateway.endpoint buffers until then)."""
        if self._buf and not self._lost:
            data, self._buf = self._buf, b""
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        _BYTES_IN[()] += len(data)
        if self._skip:  # the rest of a refused oversized frame: never buffered
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip:]
            self._skip = 0
        buf = self._buf + data if self._buf else data
        if self.conn is None and self._state == _OPEN:  # not admitted yet: keep a bounded amount
            self._buf = buf
            if len(buf) > MAX_MESSAGE_BYTES + 14:
                self._buf = b""
                self._fail(CLOSE_TOO_BIG, "Message too big")
            return
        n = len(buf)
        pos = 0
        # After Herald's close frame, frames are still parsed (data ones ignored) to see the client's.
        while n - pos >= 2 and self._state != _GONE:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[head:head + 2], "big")
                head += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[head:head + 8], "big")
                head += 8
            masked = b1 & 0x80
            end = head + (4 if masked else 0) + length
            if length + (sum(map(len, self._frag)) if self._frag else 0) > MAX_MESSAGE_BYTES:
                self._fail(CLOSE_TOO_BIG, f"Message larger than {MAX_MESSAGE_BYTES} bytes")
                if end > n:
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                break
            if self._state == _OPEN and not masked:
                self._fail(CLOSE_PROTOCOL_ERROR, "Client frames must be masked")
            elif self._state == _OPEN and b0 & 0x70:
                self._fail(CLOSE_PROTOCOL_ERROR, "No extension was negotiated (RSV bits set)")
            if masked:
                payload = apply_mask(buf[head + 4:end], buf[head:head + 4]) if length else b""
            else:
                payload = buf[head:end]
            pos = end
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload)
        self._buf = buf[pos:] if pos < n and self._state != _GONE else b""

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > MAX_CONTROL_PAYLOAD_BYTES:
                return self._fail(CLOSE_PROTOCOL_ERROR, "Invalid control frame")
            if opcode == OP_PING:
                if self._state == _OPEN:
                    pong = pong_frame(payload)
                    _BYTES_OUT[()] += len(pong)
                    self.queue(pong)  # counted against the bound like any write
            elif opcode == OP_CLOSE:
                self._close_received(payload)
            elif opcode != OP_PONG:
                self._fail(CLOSE_PROTOCOL_ERROR, f"Unknown opcode {opcode}")
            return None
        if opcode == OP_CONTINUATION:
            if self._frag is None:
                return self._fail(CLOSE_PROTOCOL_ERROR, "Continuation frame without a message")
            self._frag.append(payload)
            if not fin:
                return None
            payload = b"".join(self._frag)
            opcode = self._frag_op
            self._frag = None
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._frag is not None:
                return self._fail(CLOSE_PROTOCOL_ERROR, "New message before the last one ended")
            if not fin:
                self._frag = [payload]
                self._frag_op = opcode
                return None
        else:
            return self._fail(CLOSE_PROTOCOL_ERROR, f"Unknown opcode {opcode}")
        if self._state != _OPEN:
            return None  # closing: data is no longer handled
        if opcode == OP_TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return self._fail(CLOSE_INVALID_DATA, "Text frame is not valid UTF-8")
            self._message(text)
        else:
            self._message(None)
        return None

    def _close_received(self, payload: bytes) -> None:
        if self._state == _OPEN:
            code = CLOSE_NO_STATUS
            if len(payload) >= 2:
                code = int.from_bytes(payload[:2], "big")
                try:
                    payload[2:].decode()
                except UnicodeDecodeError:
                    return self._fail(CLOSE_INVALID_DATA, "Close reason is not valid UTF-8")
            if len(payload) == 1 or (code not in _RECEIVABLE_CLOSE_CODES and not 3000 <= code <= 4999
                                     and code != CLOSE_NO_STATUS):
                return self._fail(CLOSE_PROTOCOL_ERROR, "Invalid close frame")
            self.flush()
            if self._state == _OPEN:  # (a slow reader's flush dropped it, counted as 1006)
                if self.conn is not None:
                    count_close(code)
                # Echo the client's code (RFC 6455 section 5.5.1); none given, none echoed.
                echo = b"\x88\x00" if code == CLOSE_NO_STATUS else close_frame(code, "")
                _BYTES_OUT[()] += len(echo)
                self._write(echo)
        if self._state != _GONE:
            self._state = _GONE
            self.transport.close()  # the server closes TCP first (section 7.1.1)
        return None

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): close frame, no further input handled."""
        log.debug("closing WebSocket with %d: %s", code, reason)
        self._frag = None
        if self._state == _OPEN:
            self.close(code, reason)

    # -- messages to the protocol handler, in order --------------------------------------------

    def _message(self, text: str | None) -> None:
        inbox = self._inbox
        if inbox is not None:  # one is being handled: keep order
            inbox.append(text)
            if len(inbox) == MAX_QUEUED_MESSAGES:
                self.transport.pause_reading()
            return
        conn = self.conn
        assert conn is not None
        if text is None:
            self.gateway.handler.handle_binary(conn)
            return
        self._inbox = deque()
        self.gateway.spawn(self._handle(conn, text))

    async def _handle(self, conn: Connection, text: str | None) -> None:
        handler = self.gateway.handler
        try:
            while True:
                if text is None:
                    handler.handle_binary(conn)
                else:
                    await handler.handle_text(conn, text)
                inbox = self._inbox
                if not inbox:
                    break
                if len(inbox) == MAX_QUEUED_MESSAGES and not self._lost:
                    self.transport.resume_reading()
                text = inbox.popleft()
        finally:
            self._inbox = None
            if self._lost:
                await self.gateway.release(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._state == _OPEN and self.conn is not None:
            count_close(CLOSE_ABNORMAL)
        self._state = _GONE
        self._pending = None
        self._buf = b""
        self._frag = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.gateway.lost(self, release=self._inbox is None)

    def eof_received(self) -> bool | None:
        return None  # half-closed by the client: close our side too
