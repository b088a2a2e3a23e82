"""How a changed app reaches the sockets already open (docs/apps.md, "How a change reaches open sockets").

Connections hold their app's `AppConfig` (`conn.app`), read on every message without a lookup. When
the registry reports a change, the node walks its connections once: a changed app's sockets get the
new object (new limits apply from their next action), a disabled app's sockets are closed with 4003
and a removed app's with 4001, both codes on which pusher-js does not reconnect. Reloads are rare,
so one pass over the connections costs less than a registry lookup on every message would.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.connection import Connection
from shared.apps.registry import AppChanges
from shared.protocol import codes, messages


def close_with(conn: Connection, code: int, message: str) -> None:
    conn.send(messages.error(message, code))
    conn.sink.close(code, message)


def apply_app_changes(connections: Iterable[Connection], changes: AppChanges) -> int:
    """Hand the new configs to the connections; returns how many sockets were closed."""
    if not changes.updated and not changes.removed:
        return 0
    removed = set(changes.removed)
    closed = 0
    for conn in connections:  # no awaits: the connections can't change meanwhile
        if conn.sink.closed:
            continue
        app_id = conn.app.id
        if app_id in removed:
            close_with(conn, codes.APP_NOT_FOUND, "Application does not exist")
            closed += 1
            continue
        new = changes.updated.get(app_id)
        if new is None:
            continue
        if not new.enabled:
            close_with(conn, codes.APP_DISABLED, "Application disabled")
            closed += 1
        else:
            conn.app = new
    return closed
