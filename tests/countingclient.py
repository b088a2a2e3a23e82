"""A Pusher WebSocket client that counts the exact bytes it exchanged after the handshake, to check
Herald's byte counters (herald_ws_*_bytes_total) against what went over the wire.

Framing is the `websockets` library's sans-I/O `ClientProtocol`; this only moves bytes between it and
an asyncio stream, so every byte read after the `101` response and written after the upgrade request
is counted (frame headers, masks and close frames included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

QUERY = "protocol=7&client=js&version=8.6.0&flash=false"
TIMEOUT_S = 10.0


class CountingClient:
    def __init__(self) -> None:
        self.bytes_in = 0  # read from the server after the handshake (what Herald sent)
        self.bytes_out = 0  # written to the server after the handshake
        self.close_reply_bytes = 0  # our reply to a close the server started (it may not read it)
        self.sent_messages = 0
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._proto: ClientProtocol | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._server_closed_first = False
        self._we_closed = False

    @classmethod
    async def open(cls, port: int, key: str, query: str = QUERY) -> CountingClient:
        client = cls()
        await client._connect(port, key, query)
        return client

    async def _connect(self, port: int, key: str, query: str) -> None:
        proto = self._proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/app/{key}?{query}"))
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT_S)
        self._writer = writer
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))  # the upgrade request: not counted
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT_S)
            assert chunk, "connection closed during the handshake"
            head += chunk
        end = head.index(b"\r\n\r\n") + 4
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        proto.receive_data(head[:end])
        self._feed(head[end:])
        self._reader_task = asyncio.create_task(self._read(reader))

    def _feed(self, data: bytes) -> None:
        assert self._proto is not None
        if not data:
            return
        self.bytes_in += len(data)
        self._proto.receive_data(data)
        for event in self._proto.events_received():
            if not isinstance(event, Frame):  # the 101 response, parsed with the first frames
                continue
            if event.opcode is Opcode.TEXT:
                msg = json.loads(event.data)
                self.received.append(msg)
                self._messages.put_nowait(msg)
            elif event.opcode is Opcode.CLOSE:
                self._server_closed_first = not self._we_closed
                rcvd = self._proto.close_rcvd
                self.close_code = rcvd.code if rcvd is not None else None
        self._flush(reply=True)

    def _flush(self, reply: bool = False) -> None:
        assert self._proto is not None and self._writer is not None
        for data in self._proto.data_to_send():
            if data:
                self.bytes_out += len(data)
                if reply and self._server_closed_first:
                    self.close_reply_bytes += len(data)
                with contextlib.suppress(Exception):
                    self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self._feed(data)
        finally:
            self._closed.set()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._proto is not None
        self._proto.send_text(json.dumps(message).encode())
        self.sent_messages += 1
        self._flush()

    async def recv(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        return await asyncio.wait_for(self._messages.get(), timeout)

    async def expect(self, event: str, channel: str | None = None, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        msg = await self.recv(timeout)
        assert msg.get("event") == event and (channel is None or msg.get("channel") == channel), (event, msg)
        return msg

    async def close(self) -> None:
        """Start the closing handshake (1000) and wait for the server to end the connection."""
        assert self._proto is not None
        self._we_closed = True
        self._proto.send_close(1000)
        self._flush()
        await self.wait_closed()

    async def wait_closed(self, timeout: float = TIMEOUT_S) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout)
        if self._writer is not None:
            self._writer.close()
