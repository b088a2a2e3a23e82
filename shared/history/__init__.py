"""Channel history (docs/history.md): positions, policies and the store interface in `base`; stores
in `memory_impl` (one process) and `redis_impl` (a stream per channel); the HTTP API's publish step in
`publish`."""

from shared.history.base import (
    HistoryPolicy,
    HistoryRead,
    HistoryStore,
    format_position,
    history_policy,
    offset_of,
    parse_position,
)

__all__ = [
    "HistoryPolicy",
    "HistoryRead",
    "HistoryStore",
    "format_position",
    "history_policy",
    "offset_of",
    "parse_position",
]
