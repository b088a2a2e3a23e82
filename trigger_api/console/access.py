"""Who may open an app's console (docs/console.md, "Access"): the app's own key and secret, or the
operator's console token plus the app id. One app per request; nothing answers for another app.

Credentials travel in the Authorization header on every request (the page keeps them in memory
only), so the stream needs no cookie and no secret ever lands in a URL or a log line.
"""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry
from shared.protocol.signatures import signatures_equal
from trigger_api.errors import ApiError, unauthorized

WRONG_CREDENTIALS = "Wrong app key or secret"


class ConsoleAccess:
    def __init__(self, registry: AppRegistry, token: str | None) -> None:
        self.registry = registry
        self.token = token or None

    async def app_for(self, request: Request) -> AppConfig:
        """The app this request may see, or ApiError(401/403/404); AppsUnavailable when the apps
        can't be read (a database outage)."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return await self._by_key_and_secret(value.strip())
        if scheme == "bearer":
            return await self._by_token(value.strip(), request.query_params.get("app_id", ""))
        raise unauthorized("Sign in with the app's key and secret (or a console token)")

    async def _by_key_and_secret(self, encoded: str) -> AppConfig:
        try:
            key, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("Malformed Basic credentials") from None
        app = await self.registry.by_key(key) if sep else None
        # One answer for an unknown key and a wrong secret, so the console can't be used to find keys;
        # the secret is compared in constant time even when the key is unknown.
        expected = app.secret if app is not None else "\0" * max(len(secret), 1)
        if not signatures_equal(secret, expected) or app is None:
            raise unauthorized(WRONG_CREDENTIALS)
        return self._enabled(app)

    async def _by_token(self, given: str, app_id: str) -> AppConfig:
        if self.token is None or not signatures_equal(given, self.token):
            raise unauthorized("Wrong console token")
        app = await self.registry.by_id(app_id) if app_id else None
        if app is None:
            raise ApiError(404, f"Unknown app id '{app_id[:64]}'")
        return self._enabled(app)

    @staticmethod
    def _enabled(app: AppConfig) -> AppConfig:
        if not app.enabled:
            raise ApiError(403, f"App '{app.id}' is disabled")
        return app
