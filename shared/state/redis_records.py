"""What a node keeps of its own records and how they are written in Redis: the mirror of what the
node holds, the gate that lets a full sync run alone, and the encodings of member and presence records
(the key layout is in shared/state/redis_node.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.protocol.users import loads_exact
from shared.state.base import Member


def member_json(member: Member) -> bytes:
    return orjson.dumps([member.user_id, member.user_info])


def member_from_json(raw: bytes | str) -> Member:
    user_id, user_info = orjson.loads(raw)
    if isinstance(user_id, float):
        # Maybe an integer beyond 64 bits, which orjson reads as a float: read it exactly.
        user_id, user_info = loads_exact(raw)
    return Member(user_id, user_info)


def presence_field(channel: str, user: str) -> str:
    """A node's record of a user in a presence channel: the channel's UTF-8 length, ':', the channel,
    the user key. Unambiguous whatever either contains (node_sync.lua reads it back)."""
    return f"{len(channel.encode())}:{channel}{user}"


@dataclass
class Mirror:
    """What this node holds for one app: the desired state that `node_sync` writes back."""

    occ: dict[str, int] = field(default_factory=dict)
    pres: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # -> [count, member JSON]
    users: dict[str, int] = field(default_factory=dict)  # signed-in user -> sockets here
    conns: int = 0


class Gate:
    """Incremental updates run together; a full sync runs alone (so no script is in flight)."""

    def __init__(self) -> None:
        self._active = 0
        self._syncing = False
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if self._syncing:
            async with self._cond:
                await self._cond.wait_for(lambda: not self._syncing)
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._syncing:
                async with self._cond:
                    self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._syncing)
            self._syncing = True
            await self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._syncing = False
                self._cond.notify_all()
