"""Channel names and types (docs/protocol.md, "Channels").

Prefix tests are anchored at the start of the name (soketi's regexes are not, so `x-private-y` is
private there and public here). Names are checked with full-string matches: `$` would also accept a
name ending in a newline.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# The characters of a channel name; signed-in user ids share them (they become `#server-to-user-{id}`).
NAME_CHARACTERS = "-a-zA-Z0-9_=@,.;"
NAME_CHARACTERS_TEXT = "A-Z, a-z, 0-9 and _ - = @ , . ;"
CHANNEL_NAME_RE = re.compile(rf"[{NAME_CHARACTERS}]+")

SERVER_TO_USER_PREFIX = "#server-to-user-"
SERVER_TO_USER_RE = re.compile(rf"#server-to-user-[{NAME_CHARACTERS}]+")
# Herald-internal topics; '#' names can't be subscribed by clients, so they never collide with an app's.
WATCH_PREFIX = "#watch-"
# The debug console's topics (docs/console.md): per app, the copies a console watches; and one
# node-wide control topic where consoles announce what they watch. '#' names: no client can join them.
CONSOLE_CHANNEL = "#console"
CONSOLE_CONTROL_APP = "#herald"
CONSOLE_CONTROL_CHANNEL = "#console-watch"


class ChannelKind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    SERVER_TO_USER = "server-to-user"


@dataclass(frozen=True, slots=True)
class ChannelType:
    kind: ChannelKind
    cache: bool

    @property
    def needs_auth(self) -> bool:
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.ENCRYPTED, ChannelKind.PRESENCE)

    @property
    def is_presence(self) -> bool:
        return self.kind is ChannelKind.PRESENCE

    @property
    def allows_client_events(self) -> bool:
        # docs/protocol.md, "Client events": private and presence only; encrypted payloads can't be
        # produced by clients.
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)


def channel_type(name: str) -> ChannelType:
    """Classify a (syntactically valid) channel name."""
    if name.startswith(SERVER_TO_USER_PREFIX):
        return ChannelType(ChannelKind.SERVER_TO_USER, False)
    if name.startswith("presence-"):
        return ChannelType(ChannelKind.PRESENCE, name.startswith("presence-cache-"))
    if name.startswith("private-encrypted-"):
        return ChannelType(ChannelKind.ENCRYPTED, name.startswith("private-encrypted-cache-"))
    if name.startswith("private-"):
        return ChannelType(ChannelKind.PRIVATE, name.startswith("private-cache-"))
    return ChannelType(ChannelKind.PUBLIC, name.startswith("cache-"))


def channel_name_error(name: object, max_length: int) -> str | None:
    """Why `name` is not an acceptable channel name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "channel name must be a non-empty string"
    if len(name) > max_length:
        return f"channel name is longer than {max_length} characters"
    if name.startswith("#"):
        if SERVER_TO_USER_RE.fullmatch(name):
            return None
        return "channel names starting with '#' are reserved"
    if not CHANNEL_NAME_RE.fullmatch(name):
        return f"channel name may only contain {NAME_CHARACTERS_TEXT}"
    return None


def is_encrypted(name: str) -> bool:
    return name.startswith("private-encrypted-")


def server_to_user_channel(user_id: str) -> str:
    """The channel (and bus topic) of events sent to a signed-in user."""
    return SERVER_TO_USER_PREFIX + user_id


def watch_topic(user_id: str) -> str:
    """The bus topic carrying a user's online/offline changes to the sockets watching it."""
    return WATCH_PREFIX + user_id
