"""Socket ids: `<digits>.<digits>`, made by gateways and echoed by apps (trigger exclusion, auth)."""

from __future__ import annotations

import re
import secrets

SOCKET_ID_RE = re.compile(r"[0-9]+\.[0-9]+")
# Both halves random so ids are unique across the cluster without coordination, and not guessable.
SOCKET_ID_PART_MAX = 10**10


def new_socket_id() -> str:
    return f"{secrets.randbelow(SOCKET_ID_PART_MAX)}.{secrets.randbelow(SOCKET_ID_PART_MAX)}"


def is_socket_id(value: object) -> bool:
    return isinstance(value, str) and SOCKET_ID_RE.fullmatch(value) is not None
