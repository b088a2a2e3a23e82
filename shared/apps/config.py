"""Application (tenant) configuration: the default app, apps files and per-app limits.

Field names follow soketi's snake_case columns so an apps list can move over unchanged. Defaults are
Herald's protocol decisions (docs/protocol.md, "Limits").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from shared.protocol.events import WEBHOOK_EVENT_TYPES

# Numeric because the PyPI pusher SDK rejects any other app id (hosted Pusher ids are numeric).
DEFAULT_APP_ID = "1"
DEFAULT_APP_KEY = "app-key"
DEFAULT_APP_SECRET = "app-secret"


class ConfigError(Exception):
    """A configuration problem that must stop start-up; the message names file, app and field."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    event_types: tuple[str, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    channel_name_starts_with: str | None = None
    channel_name_ends_with: str | None = None


@dataclass(frozen=True, slots=True)
class AppConfig:
    id: str
    key: str
    secret: str
    enabled: bool = True
    # -1 means unlimited, as in soketi.
    max_connections: int = -1
    enable_client_messages: bool = False
    max_client_events_per_sec: int = 10
    max_presence_members_per_channel: int = 100
    max_presence_member_size_in_kb: float = 1
    max_channel_name_length: int = 200
    max_event_channels_at_once: int = 100
    max_event_name_length: int = 200
    max_event_payload_in_kb: float = 10
    max_event_batch_size: int = 10
    # Sign-in, watchlists, subscription counts, cache channels and webhooks (docs/protocol.md).
    enable_user_authentication: bool = False
    user_authentication_timeout_s: float = 30
    enable_subscription_count: bool = False
    enable_watchlist_events: bool = True
    cache_ttl_s: int = 1800
    webhook_batching: bool = False
    webhooks: tuple[WebhookConfig, ...] = ()

    @property
    def max_event_payload_bytes(self) -> int:
        return int(self.max_event_payload_in_kb * 1024)

    @property
    def max_presence_member_bytes(self) -> int:
        return int(self.max_presence_member_size_in_kb * 1024)


_BOOL_FIELDS = {f.name for f in fields(AppConfig) if f.type in ("bool",)}
_INT_FIELDS = {f.name for f in fields(AppConfig) if f.type in ("int",)}
_FLOAT_FIELDS = {f.name for f in fields(AppConfig) if f.type in ("float",)}
_STR_FIELDS = {"id", "key", "secret"}
_KNOWN_FIELDS = {f.name for f in fields(AppConfig)}
# Limits where -1 means "no limit" (soketi's convention).
_UNLIMITED_OK = {"max_connections", "max_client_events_per_sec"}


def _fail(source: str, app: str, fld: str, why: str) -> ConfigError:
    return ConfigError(f"{source}: app {app}: field '{fld}': {why}")


def _parse_webhooks(value: Any, source: str, app: str) -> tuple[WebhookConfig, ...]:
    if not isinstance(value, list):
        raise _fail(source, app, "webhooks", "must be a list")
    hooks = []
    for i, raw in enumerate(value):
        where = f"webhooks[{i}]"
        if not isinstance(raw, dict):
            raise _fail(source, app, where, "must be an object")
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(source, app, f"{where}.url", "must be an http(s) URL")
        types = raw.get("event_types", [])
        if not isinstance(types, list) or not all(t in WEBHOOK_EVENT_TYPES for t in types):
            raise _fail(
                source, app, f"{where}.event_types", f"must be a list of {sorted(WEBHOOK_EVENT_TYPES)}"
            )
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise _fail(source, app, f"{where}.headers", "must map strings to strings")
        flt = raw.get("filter") or {}
        if not isinstance(flt, dict):
            raise _fail(source, app, f"{where}.filter", "must be an object")
        hooks.append(
            WebhookConfig(
                url=url,
                event_types=tuple(types),
                headers=dict(headers),
                channel_name_starts_with=flt.get("channel_name_starts_with"),
                channel_name_ends_with=flt.get("channel_name_ends_with"),
            )
        )
    return tuple(hooks)


def app_from_mapping(raw: Mapping[str, Any], source: str, index: int) -> AppConfig:
    """Build one app from a mapping, validating every field; errors name source, app and field."""
    app = str(raw.get("id", f"#{index}")) if isinstance(raw, Mapping) else f"#{index}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: app {app}: must be an object")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _KNOWN_FIELDS:
            raise _fail(source, app, name, "unknown field")
        if name in _STR_FIELDS:
            if isinstance(value, int) and not isinstance(value, bool) and name == "id":
                value = str(value)
            if not isinstance(value, str) or not value:
                raise _fail(source, app, name, "must be a non-empty string")
            if name == "id" and ("{" in value or "}" in value):
                # Redis keys use the app id as a hash tag.
                raise _fail(source, app, name, "must not contain '{' or '}'")
        elif name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise _fail(source, app, name, "must be true or false")
        elif name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(source, app, name, "must be an integer")
            unlimited_ok = name in _UNLIMITED_OK
            if value < 1 and not (unlimited_ok and value == -1):
                hint = " (or -1 for unlimited)" if unlimited_ok else ""
                raise _fail(source, app, name, f"must be at least 1{hint}")
        elif name in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise _fail(source, app, name, "must be a positive number")
        elif name == "webhooks":
            value = _parse_webhooks(value, source, app)
        values[name] = value
    for required in ("id", "key", "secret"):
        if required not in values:
            raise _fail(source, app, required, "is required")
    return AppConfig(**values)


def load_apps_file(path: str | Path) -> list[AppConfig]:
    """Read `{"apps": [...]}` from a YAML or JSON file (YAML is a superset, so one parser serves)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read apps file: {exc.strerror}") from exc
    try:
        doc = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if source.endswith(".json") else "YAML"
        raise ConfigError(f"{source}: not valid {kind}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("apps"), list) or not doc["apps"]:
        raise ConfigError(f'{source}: expected an object {{"apps": [ ... ]}} with at least one app')
    apps = [app_from_mapping(raw, source, i) for i, raw in enumerate(doc["apps"])]
    check_unique(apps, source)
    return apps


def check_unique(apps: Iterable[AppConfig], source: str) -> None:
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for app in apps:
        if app.id in seen_ids:
            raise _fail(source, app.id, "id", "is used by another app")
        if app.key in seen_keys:
            raise _fail(source, app.id, "key", "is used by another app")
        seen_ids.add(app.id)
        seen_keys.add(app.key)


def default_app_from_env(env: Mapping[str, str] | None = None) -> AppConfig:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {
        "id": env.get("HERALD_APP_ID", DEFAULT_APP_ID),
        "key": env.get("HERALD_APP_KEY", DEFAULT_APP_KEY),
        "secret": env.get("HERALD_APP_SECRET", DEFAULT_APP_SECRET),
    }
    flag = env.get("HERALD_APP_ENABLE_CLIENT_MESSAGES")
    if flag is not None:
        raw["enable_client_messages"] = flag.lower() in ("1", "true", "yes", "on")
    return app_from_mapping(raw, "environment", 0)
