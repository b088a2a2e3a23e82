"""Running Lua scripts on Redis by SHA (EVALSHA), loading them with EVAL the first time or after a
Redis restart flushed the script cache."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


class ScriptRunner:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._shas: dict[str, str] = {}

    async def run(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        sha = self._shas.get(source)
        if sha is not None:
            try:
                return await self.client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                pass
        result = await self.client.eval(source, len(keys), *keys, *args)
        self._shas[source] = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA-1
        return result
