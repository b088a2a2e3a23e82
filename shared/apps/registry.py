"""Looking apps up by id (HTTP API) and by key (WebSocket handshake)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from shared.apps.config import AppConfig


class AppRegistry:
    """The apps this process serves, by id and by key."""

    def __init__(self, apps: Iterable[AppConfig]) -> None:
        self._by_id = {a.id: a for a in apps}
        self._by_key = {a.key: a for a in self._by_id.values()}

    def by_id(self, app_id: str) -> AppConfig | None:
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> AppConfig | None:
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[AppConfig]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
