"""Herald's hand-built server frames are byte-for-byte what the `websockets` library produces."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from gateway.frames import close_frame, pong_frame, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 300_000])
def test_text_frames_match_the_library(size: int) -> None:
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_pong_frame() -> None:
    assert pong_frame(b"abc") == Frame(Opcode.PONG, b"abc").serialize(mask=False)


def test_close_frame() -> None:
    expected = Frame(Opcode.CLOSE, Close(4200, "Server is shutting down").serialize()).serialize(mask=False)
    assert close_frame(4200, "Server is shutting down") == expected


def test_close_reason_is_cut_to_the_control_frame_limit_on_a_character_boundary() -> None:
    frame = close_frame(4009, "é" * 200)
    assert frame[1] <= 125
    assert Close.parse(frame[2:]).reason == "é" * 61
