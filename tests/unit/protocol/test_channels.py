"""Channel types (anchored prefixes) and channel name rules (docs/protocol.md, "Channels")."""

from __future__ import annotations

import pytest

from shared.protocol.channels import ChannelKind, ChannelType, channel_name_error, channel_type, is_encrypted


@pytest.mark.parametrize(
    ("name", "kind", "cache"),
    [
        ("my-channel", ChannelKind.PUBLIC, False),
        ("cache-foo", ChannelKind.PUBLIC, True),
        ("private-foo", ChannelKind.PRIVATE, False),
        ("private-cache-foo", ChannelKind.PRIVATE, True),
        ("private-encrypted-foo", ChannelKind.ENCRYPTED, False),
        ("private-encrypted-cache-foo", ChannelKind.ENCRYPTED, True),
        ("presence-foo", ChannelKind.PRESENCE, False),
        ("presence-cache-foo", ChannelKind.PRESENCE, True),
        ("#server-to-user-12345", ChannelKind.SERVER_TO_USER, False),
        # Anchored: a prefix elsewhere in the name means nothing (soketi's unanchored regexes do).
        ("foo-private-bar", ChannelKind.PUBLIC, False),
        ("foo-presence-bar", ChannelKind.PUBLIC, False),
        ("my-cache-x", ChannelKind.PUBLIC, False),
        ("public-private-encrypted-x", ChannelKind.PUBLIC, False),
        # Prefixes need their trailing dash (Reverb matches without it).
        ("private", ChannelKind.PUBLIC, False),
        ("privatefoo", ChannelKind.PUBLIC, False),
        ("presencefoo", ChannelKind.PUBLIC, False),
        ("cachefoo", ChannelKind.PUBLIC, False),
        ("private-encryptedfoo", ChannelKind.PRIVATE, False),
        ("private-cachefoo", ChannelKind.PRIVATE, False),
        ("presence-private-foo", ChannelKind.PRESENCE, False),
        ("private-presence-foo", ChannelKind.PRIVATE, False),
        ("Private-foo", ChannelKind.PUBLIC, False),
    ],
)
def test_classification(name: str, kind: ChannelKind, cache: bool) -> None:
    assert channel_type(name) == ChannelType(kind, cache)


@pytest.mark.parametrize(
    ("name", "needs_auth", "presence", "client_events"),
    [
        ("public", False, False, False),
        ("cache-x", False, False, False),
        ("private-x", True, False, True),
        ("private-cache-x", True, False, True),  # private flag kept on cache channels (unlike sockudo)
        ("private-encrypted-x", True, False, False),
        ("private-encrypted-cache-x", True, False, False),
        ("presence-x", True, True, True),
        ("presence-cache-x", True, True, True),
        ("#server-to-user-1", False, False, False),
    ],
)
def test_type_properties(name: str, needs_auth: bool, presence: bool, client_events: bool) -> None:
    ctype = channel_type(name)
    assert ctype.needs_auth is needs_auth
    assert ctype.is_presence is presence
    assert ctype.allows_client_events is client_events


def test_is_encrypted() -> None:
    assert is_encrypted("private-encrypted-x")
    assert is_encrypted("private-encrypted-cache-x")
    assert not is_encrypted("private-x")
    assert not is_encrypted("foo-private-encrypted-x")


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "my-channel",
        "AZaz09_-=@,.;",
        "private-user.123;x=y@z,w",
        "presence-room_1",
        "#server-to-user-12345",
        "#server-to-user-a=b@c",
        "x" * 200,
    ],
)
def test_valid_names(name: str) -> None:
    assert channel_name_error(name, 200) is None


@pytest.mark.parametrize(
    "name",
    ["with space", "star*", "slash/", "colon:x", "unicodé", "tab\t", "quote'", "back\\slash", "new\nline", "a#b"],
)
def test_invalid_characters(name: str) -> None:
    error = channel_name_error(name, 200)
    assert error is not None and "may only contain" in error


@pytest.mark.parametrize("name", [None, "", 5, ["private-x"]])
def test_non_strings_and_empty(name: object) -> None:
    assert channel_name_error(name, 200) == "channel name must be a non-empty string"


def test_length_limit_is_inclusive_and_per_call() -> None:
    assert channel_name_error("x" * 200, 200) is None
    error = channel_name_error("x" * 201, 200)
    assert error is not None and "longer than 200" in error
    assert channel_name_error("x" * 165, 164) is not None
    assert channel_name_error("x" * 164, 164) is None


def test_length_is_checked_before_characters() -> None:
    error = channel_name_error("*" * 300, 200)
    assert error is not None and "longer than" in error


@pytest.mark.parametrize("name", ["#", "#foo", "#server-to-user-", "#server-to-user-a b", "#server-to-userx"])
def test_hash_names_are_reserved(name: str) -> None:
    error = channel_name_error(name, 200)
    assert error is not None
    assert "reserved" in error or "may only contain" in error


@pytest.mark.parametrize("name", ["pub\n", "private-x\n", "presence-x\n", "#server-to-user-1\n", "a\n\n", "x\r\n"])
def test_a_trailing_newline_is_refused(name: str) -> None:
    # `$` in a pattern also matches before a final newline; names are checked with full matches.
    assert channel_name_error(name, 200) is not None


@pytest.mark.parametrize("user_id", ["alice\n", "1\n", "a\nb"])
def test_signed_in_user_ids_refuse_a_trailing_newline(user_id: str) -> None:
    from shared.protocol.users import signed_in_user_id_error

    assert signed_in_user_id_error(user_id) is not None
