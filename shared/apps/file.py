"""Apps from a file that is re-read when it changes or on SIGHUP (docs/apps.md, "Changes without a restart").

The file's (mtime, size, inode) is checked every `poll_s` seconds, which is all a poll costs. The
stamp is taken before the file is read, so a write that lands while it is read changes the stamp
again and is picked up by the next poll. A file that no longer loads is reported with the error and
the running apps stay. Each node watches its own copy (a Kubernetes ConfigMap is updated on every
pod; the inode check catches its symlink swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from shared.apps.config import ConfigError, Warn, load_apps_file
from shared.apps.registry import AppChanges, AppRegistry

log = logging.getLogger("herald.apps")

POLL_INTERVAL_S = 2.0

Stamp = tuple[int, int, int] | None


class FileAppRegistry(AppRegistry):
    def __init__(self, path: str | Path, poll_s: float = POLL_INTERVAL_S, warn: Warn | None = None) -> None:
        """Loads the file now: a ConfigError here stops start-up."""
        self.path = Path(path)
        self.poll_s = poll_s
        self._stamp = self._stat()
        super().__init__(load_apps_file(self.path, warn))
        self._task: asyncio.Task[None] | None = None

    def _stat(self) -> Stamp:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def start(self) -> None:
        if self.poll_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._poll_forever(), name="apps-file-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload(self) -> None:
        self._stamp = self._stat()
        self.load("SIGHUP")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                self.load("the file changed")

    def load(self, why: str) -> AppChanges | None:
        """Re-read the file and serve its apps; on any error keep the running apps."""
        try:
            apps = load_apps_file(self.path)
        except ConfigError as exc:
            log.error("apps file not reloaded (%s), keeping the %d running apps: %s", why, len(self), exc)
            return None
        changes = self.replace(apps)
        log.info("apps file %s reloaded (%s): %s", self.path, why, changes.summary())
        return changes
