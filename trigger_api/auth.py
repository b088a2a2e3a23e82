"""Verification of signed HTTP API requests (docs/http-api.md, "Signing").

`verify_signature` is a pure function of the request parts and the current time, so it can be tested
without a network; `authenticate` adds the app lookup (by path app id, or by `auth_key` for the
pusher-http-python terminate path) and the enabled check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl

from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry
from shared.protocol.signatures import (
    HTTP_TIMESTAMP_WINDOW_S,
    body_md5,
    http_string_to_sign,
    sign_http,
    signatures_equal,
)
from trigger_api.errors import ApiError, unauthorized

AUTH_PARAMS = ("auth_key", "auth_timestamp", "auth_signature")


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """Step 1: URL-decode names and values (PHP percent-encodes them, node and python send them raw).

    A query with nothing to decode (what the node and python SDKs send) is split by hand: `parse_qsl`
    costs a fifth of a trigger request's handling here, for the same result
    (tests/unit/trigger_api/test_query_parsing.py)."""
    if "%" in query_string or "+" in query_string:
        return parse_qsl(query_string, keep_blank_values=True)
    out = []
    for field in query_string.split("&"):
        if field:
            name, _, value = field.partition("=")
            out.append((name, value))
    return out


def query_dict(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Parameters by lowercased name; a repeated name is refused so no value is ambiguous."""
    out: dict[str, str] = {}
    for name, value in params:
        key = name.lower()
        if key in out:
            raise ApiError(400, f"Query parameter '{key}' is given more than once")
        out[key] = value
    return out


def _timestamp(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise unauthorized(f"auth_timestamp must be a Unix time in seconds, got '{raw}'")
    return value


def verify_signature(
    app: AppConfig,
    method: str,
    paths: str | Sequence[str],
    params: Sequence[tuple[str, str]],
    body: bytes,
    now: float,
) -> None:
    """Raise ApiError(401) unless the request is signed with `app`'s key and secret.

    `paths` is the request path as sent; a sequence gives alternatives (the raw and the percent-decoded
    path), any of which may verify, because SDKs differ in whether they sign the escaped form.
    """
    query = query_dict(params)
    missing = [p for p in AUTH_PARAMS if p not in query]
    if missing:
        raise unauthorized(f"Missing authentication parameter(s): {', '.join(missing)}")

    if not signatures_equal(query["auth_key"], app.key):
        raise unauthorized(f"Invalid auth_key '{query['auth_key']}': it is not the key of app '{app.id}'")

    timestamp = _timestamp(query["auth_timestamp"])
    if abs(now - timestamp) > HTTP_TIMESTAMP_WINDOW_S:
        raise unauthorized(
            f"Timestamp expired: Given timestamp ({query['auth_timestamp']}) not within "
            f"{HTTP_TIMESTAMP_WINDOW_S}s of server time ({int(now)})"
        )

    given_md5 = query.get("body_md5")
    if given_md5 is not None:
        if not signatures_equal(given_md5.lower(), body_md5(body)):
            raise unauthorized("body_md5 does not match the MD5 of the request body")
    elif body:
        raise unauthorized("body_md5 is required when the request has a body")

    candidates = [paths] if isinstance(paths, str) else list(dict.fromkeys(paths))
    given = query["auth_signature"]
    # Every candidate is computed and compared, so timing does not reveal which one failed.
    matched = False
    for path in candidates:
        matched |= signatures_equal(given.lower(), sign_http(app.secret, method, path, params))
    if not matched:
        # The string to sign is not secret; showing it (as hosted Pusher does) helps fix client code.
        expected = http_string_to_sign(method, candidates[0], params)
        raise unauthorized(
            f'Invalid signature: you should have sent HmacSHA256Hex("{_escape(expected)}", '
            f'your_secret_key), but you sent "{given}"'
        )


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def authenticate(
    registry: AppRegistry,
    app_id: str | None,
    method: str,
    paths: str | Sequence[str],
    params: Sequence[tuple[str, str]],
    body: bytes,
    now: float,
) -> AppConfig:
    """The app a signed request acts on.

    With `app_id` (every `/apps/{app_id}/...` path) an unknown id is 404; without it the app is found
    by `auth_key` and an unknown key is 401. A disabled app is 403, reported only to a caller who
    signed correctly.
    """
    if app_id is not None:
        app = await registry.by_id(app_id)
        if app is None:
            raise ApiError(404, f"Unknown app id '{app_id}'")
    else:
        key = query_dict(params).get("auth_key")
        if key is None:
            raise unauthorized("Missing authentication parameter(s): auth_key")
        found = await registry.by_key(key)
        if found is None:
            raise unauthorized(f"Invalid auth_key '{key}': no app has this key")
        app = found
    verify_signature(app, method, paths, params, body, now)
    if not app.enabled:
        raise ApiError(403, f"App '{app.id}' is disabled")
    return app
