"""User ids: presence members' ids and signed-in users (docs/protocol.md, "Users").

One rule for every path that takes a user id (presence `channel_data`, `pusher:signin`, the HTTP API's
`terminate_connections`): at most MAX_USER_ID_LENGTH characters. Signed-in ids also use the channel-name
characters, because each becomes a `#server-to-user-{id}` channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from shared.protocol.channels import NAME_CHARACTERS, NAME_CHARACTERS_TEXT

MAX_USER_ID_LENGTH = 128
# Ids of a sign-in's watchlist beyond this are dropped, with a `pusher:error` 4302.
MAX_WATCHLIST = 100
SIGNED_IN_USER_ID_RE = re.compile(rf"[{NAME_CHARACTERS}]+")  # used with fullmatch


# The integers orjson reads exactly; beyond them it returns floats (2**70 and 2**70 + 1 would be equal).
EXACT_INT_MIN = -(2**63)
EXACT_INT_MAX = 2**64 - 1


def user_key(user_id: Any) -> str:
    """Users are compared by the string form of their id: 10 and "10" are one user. An id's string
    form is its JSON text (a big integer kept as an `orjson.Fragment` gives its digits as sent)."""
    return user_id if isinstance(user_id, str) else orjson.dumps(user_id).decode()


def _exact_int(text: str) -> Any:
    value = int(text)
    return value if EXACT_INT_MIN <= value <= EXACT_INT_MAX else orjson.Fragment(text.encode())


def loads_exact(raw: str | bytes) -> Any:
    """JSON with every integer kept exactly: those beyond orjson's 64-bit range become
    `orjson.Fragment`s of their text, which orjson writes back unchanged. Slower than `orjson.loads`
    (the standard library parser), so callers use it only when orjson returned a float for an id."""
    return json.loads(raw, parse_int=_exact_int)


def signed_in_user_id_error(user_id: object) -> str | None:
    """Why `user_id` can't be a signed-in user's id, or None when it can."""
    if not isinstance(user_id, str) or not user_id:
        return "user id must be a non-empty string"
    if len(user_id) > MAX_USER_ID_LENGTH or not SIGNED_IN_USER_ID_RE.fullmatch(user_id):
        return f"user id must be at most {MAX_USER_ID_LENGTH} characters of {NAME_CHARACTERS_TEXT}"
    return None


@dataclass(frozen=True, slots=True)
class SignedInUser:
    id: str
    info: Any
    watchlist: tuple[str, ...]
    user_data: str


def parse_user_data(user_data: Any) -> SignedInUser | str:
    """The signed-in user from a sign-in's `user_data`, or why it is unacceptable."""
    if not isinstance(user_data, str):
        return "user_data must be a JSON-encoded string"
    try:
        parsed = orjson.loads(user_data)
    except orjson.JSONDecodeError:
        return "user_data is not valid JSON"
    if not isinstance(parsed, dict):
        return "user_data must be a JSON object"
    user_id = parsed.get("id")
    problem = signed_in_user_id_error(user_id)
    if problem is not None:
        return f"user_data.id: {problem}"
    assert isinstance(user_id, str)
    watchlist = parsed.get("watchlist") or []
    if not isinstance(watchlist, list) or not all(isinstance(w, str) and w for w in watchlist):
        return "user_data.watchlist must be a list of user ids"
    return SignedInUser(user_id, parsed.get("user_info"), tuple(dict.fromkeys(watchlist)), user_data)
