"""Looking apps up by id (HTTP API) and by key (WebSocket handshake), and telling the node when apps
change (docs/apps.md, "Changes without a restart").

Lookups are coroutines because apps may come from a database (`shared.apps.database`); for a cached
app they return at once without suspending. A change (a reloaded apps file, a database refresh)
replaces the `AppConfig` objects in the registry and is reported to listeners as `AppChanges`: the
gateway swaps the object its connections hold and closes the sockets of disabled and removed apps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from shared.apps.config import AppConfig

log = logging.getLogger("herald.apps")


class AppsUnavailable(Exception):
    """An app could not be looked up (its database is unreachable): neither found nor unknown.
    The handshake answers 4100 (pusher-js retries after a back-off), the HTTP API 503."""


@dataclass
class AppChanges:
    """What a reload or refresh changed, by app id."""

    added: list[AppConfig] = field(default_factory=list)
    updated: dict[str, AppConfig] = field(default_factory=dict)  # id -> the new config
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        parts = [f"{len(self.added)} added", f"{len(self.updated)} changed", f"{len(self.removed)} removed"]
        disabled = sum(1 for a in self.updated.values() if not a.enabled)
        if disabled:
            parts.append(f"{disabled} of them disabled")
        return ", ".join(parts)


AppsListener = Callable[[AppChanges], None]


def diff_apps(old: Mapping[str, AppConfig], new: Mapping[str, AppConfig]) -> AppChanges:
    return AppChanges(
        added=[app for app_id, app in new.items() if app_id not in old],
        updated={app_id: app for app_id, app in new.items() if app_id in old and old[app_id] != app},
        removed=[app_id for app_id in old if app_id not in new],
    )


class AppRegistry:
    """The apps this process serves, by id and by key: a fixed list (the environment's default app,
    an apps file) that `replace` swaps as a whole. Subclasses add loading (`FileAppRegistry`,
    `DatabaseAppRegistry`) by overriding `start`, `close`, `reload` and the miss path."""

    def __init__(self, apps: Iterable[AppConfig] = ()) -> None:
        self._by_id: dict[str, AppConfig] = {a.id: a for a in apps}
        self._by_key: dict[str, AppConfig] = {a.key: a for a in self._by_id.values()}
        self._listeners: list[AppsListener] = []

    async def by_id(self, app_id: str) -> AppConfig | None:
        app = self._by_id.get(app_id)
        return app if app is not None else await self._missing_id(app_id)

    async def by_key(self, key: str) -> AppConfig | None:
        app = self._by_key.get(key)
        return app if app is not None else await self._missing_key(key)

    async def _missing_id(self, app_id: str) -> AppConfig | None:
        return None

    async def _missing_key(self, key: str) -> AppConfig | None:
        return None

    def cached(self, app_id: str) -> AppConfig | None:
        """The app if this process holds it, without a lookup."""
        return self._by_id.get(app_id)

    def cached_key(self, key: str) -> AppConfig | None:
        """The app with this key if this process holds it, without a lookup (a handshake stays
        synchronous on a hit; a miss goes through `by_key`)."""
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[AppConfig]:
        """The apps this process holds (every app of a file; the cached ones of a database)."""
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    # -- changes ----------------------------------------------------------------------------------

    def add_listener(self, listener: AppsListener) -> None:
        self._listeners.append(listener)

    def replace(self, apps: Iterable[AppConfig]) -> AppChanges:
        """Serve exactly `apps` from now on; listeners hear what changed."""
        new = {a.id: a for a in apps}
        return self._apply(diff_apps(self._by_id, new), new)

    def _apply(self, changes: AppChanges, new_by_id: dict[str, AppConfig]) -> AppChanges:
        # New dicts are built and swapped in whole, so a lookup never sees a half-applied change.
        self._by_id = new_by_id
        self._by_key = {a.key: a for a in new_by_id.values()}
        self._notify(changes)
        return changes

    def _notify(self, changes: AppChanges) -> None:
        if not changes:
            return
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:
                log.exception("apps change listener failed")

    # -- lifecycle (the process assembly calls these) ------------------------------------------------

    async def start(self) -> None:
        """Begin watching for changes; raise ConfigError when the apps can't be served at all."""

    async def close(self) -> None: ...

    async def reload(self) -> None:
        """Re-read the apps now (SIGHUP)."""
