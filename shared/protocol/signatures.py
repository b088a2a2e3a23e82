"""HMAC-SHA256 signatures: channel authorization, user sign-in, HTTP API requests, webhooks.

Every comparison is constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

HTTP_TIMESTAMP_WINDOW_S = 600


def hmac_hex(secret: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def channel_string_to_sign(socket_id: str, channel: str, channel_data: str | None) -> str:
    # channel_data is signed whenever it is sent, private channels included (docs/protocol.md, "Channel
    # authorization").
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def sign_channel(key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    return f"{key}:{hmac_hex(secret, channel_string_to_sign(socket_id, channel, channel_data))}"


def user_string_to_sign(socket_id: str, user_data: str) -> str:
    return f"{socket_id}::user::{user_data}"


def sign_user(key: str, secret: str, socket_id: str, user_data: str) -> str:
    return f"{key}:{hmac_hex(secret, user_string_to_sign(socket_id, user_data))}"


def auth_token_error(token: object, key: str, secret: str, string_to_sign: str) -> str | None:
    """Check an `app_key:hex_signature` token; return why it is wrong, or None when valid."""
    if not isinstance(token, str) or not token:
        return "auth is required"
    given_key, sep, signature = token.partition(":")
    if not sep or not given_key or not signature:
        return "auth must be of the form 'key:signature'"
    expected = hmac_hex(secret, string_to_sign)
    key_ok = hmac.compare_digest(given_key.encode(), key.encode())
    sig_ok = hmac.compare_digest(signature.encode(), expected.encode())
    if not key_ok:
        return f"invalid key in auth: '{given_key}'"
    if not sig_ok:
        # The string to sign is not secret; showing it helps app developers fix their endpoint.
        return f"invalid signature: expected HMAC SHA256 hex digest of '{string_to_sign}'"
    return None


def http_string_to_sign(method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    """Lowercased keys, sorted, unescaped `k=v` joined by `&`, auth_signature left out (docs/http-api.md)."""
    pairs = sorted((k.lower(), v) for k, v in params if k.lower() != "auth_signature")
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return f"{method.upper()}\n{path}\n{query}"


def sign_http(secret: str, method: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    return hmac_hex(secret, http_string_to_sign(method, path, params))


def signatures_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def body_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def sign_webhook(secret: str, body: bytes) -> str:
    return hmac_hex(secret, body)
