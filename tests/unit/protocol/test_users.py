"""User ids: one rule for every path that takes one (shared/protocol/users.py)."""

from __future__ import annotations

import orjson
import pytest

from shared.protocol.users import MAX_USER_ID_LENGTH, parse_user_data, signed_in_user_id_error, user_key


def user_data(user_id: object, **extra: object) -> str:
    return orjson.dumps({"id": user_id, **extra}).decode()


def test_the_limit_is_128_characters_as_for_presence_members() -> None:
    assert MAX_USER_ID_LENGTH == 128
    assert not isinstance(parse_user_data(user_data("u" * 128)), str)
    refused = parse_user_data(user_data("u" * 129))
    assert isinstance(refused, str) and "at most 128 characters" in refused


@pytest.mark.parametrize("user_id", ["", "a b", "x#y", "ü", 5, None])
def test_signed_in_ids_are_non_empty_strings_of_the_channel_alphabet(user_id: object) -> None:
    assert signed_in_user_id_error(user_id) is not None
    assert isinstance(parse_user_data(user_data(user_id)), str)


def test_a_valid_sign_in_keeps_info_and_dedups_the_watchlist() -> None:
    user = parse_user_data(user_data("u-1@x.y;z", user_info={"n": 1}, watchlist=["a", "b", "a"]))
    assert not isinstance(user, str)
    assert (user.id, user.info, user.watchlist) == ("u-1@x.y;z", {"n": 1}, ("a", "b"))


def test_users_compare_by_the_string_form_of_their_id() -> None:
    assert user_key(10) == user_key("10") == "10"
    assert user_key(1.5) == "1.5"
