"""Application (tenant) configuration: the default app, apps files and per-app limits.

Field names are soketi's snake_case columns, and soketi's camelCase / PascalCase spellings are
accepted too (`shared.apps.soketi`), so an apps list, a soketi config file or a soketi apps table
moves over unchanged. As in soketi, a field given as `null` or `''` takes its default. Defaults are
Herald's protocol decisions (docs/protocol.md, "Limits").
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from shared.apps import soketi
from shared.apps.origins import ANY_ORIGIN, OriginPolicy
from shared.history.base import MAX_HISTORY_SIZE
from shared.protocol.channels import CHANNEL_NAME_RE, NAME_CHARACTERS_TEXT
from shared.protocol.events import WEBHOOK_EVENT_TYPES

log = logging.getLogger("herald.apps")

# Numeric because the PyPI pusher SDK rejects any other app id (hosted Pusher ids are numeric).
DEFAULT_APP_ID = "1"
DEFAULT_APP_KEY = "app-key"
DEFAULT_APP_SECRET = "app-secret"

# Where configuration warnings go (one line each); tests pass a list's append.
Warn = Callable[[str], None]


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
    # -1 means unlimited, as in soketi (0: none allowed).
    max_connections: int = -1
    enable_client_messages: bool = False
    max_client_events_per_sec: int = 10
    # HTTP API rates, cluster-wide (docs/apps.md, "API rates"): events count one point per channel.
    max_backend_events_per_sec: int = -1
    max_read_req_per_sec: int = -1
    # Browser origins allowed to connect (shared.apps.origins); empty: any.
    allowed_origins: OriginPolicy = ANY_ORIGIN
    max_presence_members_per_channel: int = 100
    max_presence_member_size_in_kb: float = 1
    max_channel_name_length: int = 200
    max_event_channels_at_once: int = 100
    max_event_name_length: int = 200
    max_event_payload_in_kb: float = 10
    max_event_batch_size: int = 10
    # Channels one connection may be subscribed to at once (-1: no limit); beyond it a subscribe gets a
    # `pusher:subscription_error` LimitReached / 429 (docs/protocol.md, "Limits").
    max_channels_per_connection: int = 500
    # Sign-in, watchlists, subscription counts, cache channels and webhooks (docs/protocol.md).
    enable_user_authentication: bool = False
    user_authentication_timeout_s: float = 30
    enable_subscription_count: bool = False
    enable_watchlist_events: bool = True
    cache_ttl_s: int = 1800
    webhook_batching: bool = False
    webhooks: tuple[WebhookConfig, ...] = ()
    # Channel history and recovery (docs/history.md): events kept per channel (0: off), seconds a
    # channel's history outlives its last event, and the channel-name prefixes it is kept for (none: all).
    history_size: int = 0
    history_ttl_s: int = 3600
    history_channel_prefixes: tuple[str, ...] = ()

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
# Limits where -1 means "no limit" and 0 "none allowed" (soketi's convention).
_UNLIMITED_OK = {"max_connections", "max_client_events_per_sec", "max_backend_events_per_sec",
                 "max_read_req_per_sec", "max_channels_per_connection"}
# Where 0 means "off".
_ZERO_OK = {"history_size"}
# Unknown columns of database rows already warned about (tables often carry created_at and such).
_warned_columns: set[str] = set()


def _fail(source: str, app: str, fld: str, why: str) -> ConfigError:
    return ConfigError(f"{source}: app {app}: field '{fld}': {why}")


def _json_list(value: Any, source: str, app: str, fld: str) -> Any:
    """A list given as a JSON string (SQL json/text columns, soketi's webhooks) is decoded."""
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise _fail(source, app, fld, f"is a string but not valid JSON: {exc}") from exc
    return value


def _parse_webhooks(value: Any, source: str, app: str, fld: str, warn: Warn) -> tuple[WebhookConfig, ...]:
    value = _json_list(value, source, app, fld)
    if not isinstance(value, list):
        raise _fail(source, app, fld, "must be a list")
    hooks = []
    for i, raw in enumerate(value):
        where = f"{fld}[{i}]"
        if not isinstance(raw, dict):
            raise _fail(source, app, where, "must be an object")
        for name, what in soketi.UNSUPPORTED_WEBHOOK_KEYS.items():
            if raw.get(name) not in (None, ""):
                warn(f"{source}: app {app}: field '{where}.{name}': {what}")
        url = raw.get("url")
        if url in (None, "") and raw.get("lambda_function"):
            continue  # warned above
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


def _parse_origins(value: Any, source: str, app: str, fld: str) -> OriginPolicy:
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    if isinstance(value, str):
        # A JSON array (SQL json columns) or a comma-separated list (environment variables, text columns).
        value = _json_list(value, source, app, fld) if value.lstrip().startswith("[") else value.split(",")
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _fail(source, app, fld, "must be a list of origins")
    try:
        return OriginPolicy(p.strip() for p in value if p.strip())
    except ValueError as exc:
        raise _fail(source, app, fld, str(exc)) from None


def _parse_prefixes(value: Any, source: str, app: str, fld: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a JSON array or a comma-separated list (database text columns)
        value = _json_list(value, source, app, fld) if value.lstrip().startswith("[") else value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) and CHANNEL_NAME_RE.fullmatch(v.strip())
                                              for v in value):
        raise _fail(source, app, fld, f"must be a list of channel-name prefixes ({NAME_CHARACTERS_TEXT})")
    return tuple(v.strip() for v in value)


def _coerce_row_value(name: str, value: Any) -> Any:
    """SQL drivers hand booleans over as 0/1 (tinyint, smallint) and numbers as Decimal or strings,
    as soketi's tables store them; turn them into the types the file format uses."""
    if isinstance(value, bytes | bytearray) and name in _BOOL_FIELDS:  # BIT(1)
        return int.from_bytes(value, "big") != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if name in _BOOL_FIELDS and text in ("0", "1", "true", "false"):
            return text in ("1", "true")
        if name in _INT_FIELDS and text.lstrip("-").isdigit():
            return int(text)
        if name in _FLOAT_FIELDS:
            try:
                return float(text)
            except ValueError:
                return value
    if name in _BOOL_FIELDS and isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, Decimal):
        return int(value) if name in _INT_FIELDS and value == value.to_integral_value() else float(value)
    if name in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return value
    return value


def app_from_mapping(
    raw: Mapping[str, Any], source: str, index: int, *, warn: Warn | None = None, row: bool = False
) -> AppConfig:
    """Build one app from a mapping, validating every field; errors name source, app and field.

    `row=True` reads a database row: SQL types are coerced (0/1 booleans, numeric strings) and
    unknown columns are ignored with one warning per column name and process, instead of refused.
    """
    warn = warn or log.warning
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: app #{index}: must be an object")
    ident = raw.get("id", raw.get("AppId"))
    app = str(ident) if ident not in (None, "") else f"#{index}"
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for spelling, value in raw.items():
        name = soketi.CANONICAL.get(spelling, spelling)
        if spelling in soketi.DERIVED:
            continue
        if name not in _KNOWN_FIELDS:
            if row:
                if spelling not in _warned_columns:
                    _warned_columns.add(spelling)
                    warn(f"{source}: column '{spelling}' is not an app field Herald knows; ignored")
                continue
            close = difflib.get_close_matches(spelling, [*_KNOWN_FIELDS, *soketi.CANONICAL], n=1)
            raise _fail(source, app, spelling, "unknown field" + (f" (did you mean '{close[0]}'?)" if close else ""))
        if name in spelled:
            raise _fail(source, app, spelling, f"is given twice (as '{spelled[name]}' and '{spelling}')")
        spelled[name] = spelling
        if value is None or (value == "" and name not in _STR_FIELDS):
            continue  # soketi's rule: null and '' fall back to the default
        if row:
            value = _coerce_row_value(name, value)
        if name in _STR_FIELDS:
            if isinstance(value, int) and not isinstance(value, bool) and name == "id":
                value = str(value)
            if not isinstance(value, str) or not value:
                raise _fail(source, app, spelling, "must be a non-empty string")
            if name == "id" and ("{" in value or "}" in value):
                # Redis keys use the app id as a hash tag.
                raise _fail(source, app, spelling, "must not contain '{' or '}'")
        elif name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise _fail(source, app, spelling, "must be true or false")
        elif name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(source, app, spelling, "must be an integer")
            if name in _UNLIMITED_OK:
                if value < -1:
                    raise _fail(source, app, spelling, "must be 0 or more (or -1 for unlimited)")
            elif name in _ZERO_OK:
                if value < 0:
                    raise _fail(source, app, spelling, "must be 0 (off) or more")
            elif value < 1:
                raise _fail(source, app, spelling, "must be at least 1")
            if name == "history_size" and value > MAX_HISTORY_SIZE:
                raise _fail(source, app, spelling, f"must be at most {MAX_HISTORY_SIZE}")
        elif name in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise _fail(source, app, spelling, "must be a positive number")
        elif name == "webhooks":
            value = _parse_webhooks(value, source, app, spelling, warn)
        elif name == "allowed_origins":
            value = _parse_origins(value, source, app, spelling)
        elif name == "history_channel_prefixes":
            value = _parse_prefixes(value, source, app, spelling)
        values[name] = value
    for required in ("id", "key", "secret"):
        if required not in values:
            raise _fail(source, app, required, "is required")
    return AppConfig(**values)


def _apps_list(doc: Any, source: str, warn: Warn) -> list[Any]:
    """The apps of a Herald apps file `{"apps": [...]}` or of a soketi config file (its
    `appManager.array.apps`, dotted or nested); soketi's server settings are reported and ignored."""
    if not isinstance(doc, dict):
        doc = {}
    if "apps" in doc:
        apps, rest = doc["apps"], [k for k in doc if k != "apps"]
        what = "top-level key"
    elif soketi.CONFIG_APPS_KEY in doc:
        apps, rest = doc[soketi.CONFIG_APPS_KEY], [k for k in doc if k != soketi.CONFIG_APPS_KEY]
        what = "soketi server setting"
    else:
        manager = doc.get("appManager")
        array = manager.get("array") if isinstance(manager, dict) else None
        apps = array.get("apps") if isinstance(array, dict) else None
        rest = [k for k in doc if k != "appManager"]
        what = "soketi server setting"
    if not isinstance(apps, list) or not apps:
        raise ConfigError(f'{source}: expected an object {{"apps": [ ... ]}} with at least one app')
    for key in rest:
        warn(f"{source}: {what} '{key}' is not an apps setting; ignored (Herald's settings are flags "
             "and HERALD_* variables)")
    return apps


def parse_apps_document(text: str, source: str, warn: Warn | None = None) -> list[AppConfig]:
    """Apps from the text of a YAML or JSON apps file (YAML is a superset, so one parser serves)."""
    warn = warn or log.warning
    try:
        doc = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if source.endswith(".json") else "YAML"
        raise ConfigError(f"{source}: not valid {kind}: {exc}") from exc
    apps = [app_from_mapping(raw, source, i, warn=warn) for i, raw in enumerate(_apps_list(doc, source, warn))]
    check_unique(apps, source)
    return apps


def load_apps_file(path: str | Path, warn: Warn | None = None) -> list[AppConfig]:
    """Read `{"apps": [...]}` (or a soketi config file) from a YAML or JSON file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"{source}: cannot read apps file: {why}") from exc
    return parse_apps_document(text, source, warn)


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


# HERALD_APP_* variables for the default app, read like database columns (strings coerced).
_ENV_FIELDS = ("allowed_origins", "max_backend_events_per_sec", "max_read_req_per_sec", "max_connections")


def default_app_from_env(env: Mapping[str, str] | None = None) -> AppConfig:
    env = os.environ if env is None else env
    raw: dict[str, Any] = {
        "id": env.get("HERALD_APP_ID", DEFAULT_APP_ID),
        "key": env.get("HERALD_APP_KEY", DEFAULT_APP_KEY),
        "secret": env.get("HERALD_APP_SECRET", DEFAULT_APP_SECRET),
    }
    for name in _ENV_FIELDS:
        value = env.get(f"HERALD_APP_{name.upper()}")
        if value is not None:
            raw[name] = _coerce_row_value(name, value)
    flag = env.get("HERALD_APP_ENABLE_CLIENT_MESSAGES")
    if flag is not None:
        raw["enable_client_messages"] = flag.lower() in ("1", "true", "yes", "on")
    return app_from_mapping(raw, "environment", 0)
