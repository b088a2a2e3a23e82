"""Lua scripts: loaded by name from `shared/redis/lua/`, run by SHA (EVALSHA), sent with EVAL the first
time or after a Redis restart flushed the script cache.

Each script file starts with the `KEYS[i]` / `ARGV[i]` it takes and what it returns; every key one
script touches shares the app's hash tag, so each runs on one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from shared.metrics import REDIS_COMMAND_DURATION

# Source -> script name, the `command` label of the Redis latency histogram.
_NAMES: dict[str, str] = {}


def load_script(name: str) -> str:
    """The source of `lua/<name>.lua` (read once at import by the modules that use it)."""
    source = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    _NAMES[source] = name
    return source


class ScriptRunner:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._shas: dict[str, str] = {}

    async def run(self, source: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await self._run(source, keys, args)
        finally:
            REDIS_COMMAND_DURATION.labels(_NAMES.get(source, "script")).observe(time.perf_counter() - started)

    async def _run(self, source: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        sha = self._shas.get(source)
        if sha is not None:
            try:
                return await self.client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        result = await self.client.eval(source, len(keys), *keys, *args)
        self._shas[source] = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA-1
        return result
