"""Channel authorization and user sign-in signatures against the published test vectors."""

from __future__ import annotations

import pytest

from shared.protocol.signatures import auth_token_error, channel_string_to_sign, hmac_hex, sign_channel, sign_user
from tests.unit.fakes import VECTOR_KEY, VECTOR_SECRET, VECTOR_SOCKET

PRIVATE_DIGEST = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
CHANNELS_DATA = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
CHANNELS_DIGEST = "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
PUSHER_DATA = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
PUSHER_DIGEST = "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
USER_DATA = '{"id":"12345"}'
USER_DIGEST = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"


def test_private_channel_vector() -> None:
    assert channel_string_to_sign(VECTOR_SOCKET, "private-foobar", None) == "1234.1234:private-foobar"
    assert sign_channel(VECTOR_KEY, VECTOR_SECRET, VECTOR_SOCKET, "private-foobar") == (
        f"{VECTOR_KEY}:{PRIVATE_DIGEST}"
    )


@pytest.mark.parametrize(
    ("channel_data", "digest"), [(CHANNELS_DATA, CHANNELS_DIGEST), (PUSHER_DATA, PUSHER_DIGEST)],
    ids=["mr-channels", "mr-pusher"],
)
def test_presence_channel_vectors(channel_data: str, digest: str) -> None:
    to_sign = channel_string_to_sign(VECTOR_SOCKET, "presence-foobar", channel_data)
    assert to_sign == f"1234.1234:presence-foobar:{channel_data}"
    assert hmac_hex(VECTOR_SECRET, to_sign) == digest
    assert sign_channel(VECTOR_KEY, VECTOR_SECRET, VECTOR_SOCKET, "presence-foobar", channel_data) == (
        f"{VECTOR_KEY}:{digest}"
    )


def test_channel_data_is_signed_byte_for_byte() -> None:
    # Same JSON value, different bytes: a different signature.
    spaced = '{"user_id": 10, "user_info": {"name": "Mr. Channels"}}'
    assert hmac_hex(VECTOR_SECRET, f"1234.1234:presence-foobar:{spaced}") != CHANNELS_DIGEST


def test_private_channel_with_channel_data_signs_three_parts() -> None:
    # channel_data present -> socket_id:channel:channel_data, private channels too.
    token = sign_channel(VECTOR_KEY, VECTOR_SECRET, VECTOR_SOCKET, "private-foobar", '{"user_id":"1"}')
    expected = hmac_hex(VECTOR_SECRET, '1234.1234:private-foobar:{"user_id":"1"}')
    assert token == f"{VECTOR_KEY}:{expected}"
    assert token != f"{VECTOR_KEY}:{PRIVATE_DIGEST}"


def test_signin_vector() -> None:
    assert hmac_hex(VECTOR_SECRET, f"1234.1234::user::{USER_DATA}") == USER_DIGEST
    assert sign_user(VECTOR_KEY, VECTOR_SECRET, VECTOR_SOCKET, USER_DATA) == f"{VECTOR_KEY}:{USER_DIGEST}"


def test_valid_tokens_pass() -> None:
    private = channel_string_to_sign(VECTOR_SOCKET, "private-foobar", None)
    presence = channel_string_to_sign(VECTOR_SOCKET, "presence-foobar", CHANNELS_DATA)
    assert auth_token_error(f"{VECTOR_KEY}:{PRIVATE_DIGEST}", VECTOR_KEY, VECTOR_SECRET, private) is None
    assert auth_token_error(f"{VECTOR_KEY}:{CHANNELS_DIGEST}", VECTOR_KEY, VECTOR_SECRET, presence) is None


@pytest.mark.parametrize("token", [None, "", 42, ["a", "b"]])
def test_missing_auth(token: object) -> None:
    assert auth_token_error(token, VECTOR_KEY, VECTOR_SECRET, "1234.1234:private-foobar") == "auth is required"


@pytest.mark.parametrize("token", [PRIVATE_DIGEST, f":{PRIVATE_DIGEST}", f"{VECTOR_KEY}:", "nocolon"])
def test_malformed_auth(token: str) -> None:
    error = auth_token_error(token, VECTOR_KEY, VECTOR_SECRET, "1234.1234:private-foobar")
    assert error == "auth must be of the form 'key:signature'"


def test_wrong_key_is_named() -> None:
    error = auth_token_error(f"other-key:{PRIVATE_DIGEST}", VECTOR_KEY, VECTOR_SECRET, "1234.1234:private-foobar")
    assert error == "invalid key in auth: 'other-key'"


def test_wrong_signature_shows_the_string_to_sign() -> None:
    error = auth_token_error(f"{VECTOR_KEY}:{'0' * 64}", VECTOR_KEY, VECTOR_SECRET, "1234.1234:private-foobar")
    assert error is not None
    assert error.startswith("invalid signature")
    assert "'1234.1234:private-foobar'" in error
    # The expected digest itself is never revealed.
    assert PRIVATE_DIGEST not in error


def test_signature_for_another_socket_or_channel_is_refused() -> None:
    token = f"{VECTOR_KEY}:{PRIVATE_DIGEST}"
    assert auth_token_error(token, VECTOR_KEY, VECTOR_SECRET, "1234.1235:private-foobar") is not None
    assert auth_token_error(token, VECTOR_KEY, VECTOR_SECRET, "1234.1234:private-foobaz") is not None
    assert auth_token_error(token, VECTOR_KEY, "other-secret", "1234.1234:private-foobar") is not None


def test_uppercase_hex_is_refused() -> None:
    # Signatures are lowercase hex ; compare exactly.
    error = auth_token_error(f"{VECTOR_KEY}:{PRIVATE_DIGEST.upper()}", VECTOR_KEY, VECTOR_SECRET,
                             "1234.1234:private-foobar")
    assert error is not None and error.startswith("invalid signature")
