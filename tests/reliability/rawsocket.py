"""A bare WebSocket client over a plain socket, for hostile clients: it does the upgrade and writes
frames, and reads only when told (a never-reading client, or thousands of cheap idle ones)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

from websockets.frames import Frame, Opcode


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, key: str, recv_buffer: int | None = None, host: str = "127.0.0.1") -> RawSocket:
        sock = socket.socket()
        if recv_buffer is not None:
            # A small receive buffer makes TCP back-pressure reach the server quickly.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        nonce = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /app/{key}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: {host}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        return cls(reader, writer)

    def send(self, message: Any) -> None:
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.writer.write(Frame(Opcode.TEXT, payload).serialize(mask=True))

    async def drain(self) -> None:
        await self.writer.drain()

    async def read_frame(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next text frame as JSON (None: the server closed)."""
        async def read() -> dict[str, Any] | None:
            while True:
                head = await self.reader.readexactly(2)
                length = head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8), "big")
                data = await self.reader.readexactly(length)
                opcode = head[0] & 0x0F
                if opcode == Opcode.CLOSE.value:
                    return None
                if opcode == Opcode.TEXT.value:
                    frame: dict[str, Any] = json.loads(data)
                    return frame
        try:
            return await asyncio.wait_for(read(), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def close(self) -> None:
        self.writer.transport.abort()
