"""WebSocket frame bytes built once per message and written to many sockets."""

from __future__ import annotations

from websockets.frames import Frame, Opcode


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server text frame (no extensions are negotiated on Herald sockets)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)
