"""Apps files (YAML and JSON), per-app defaults (docs/protocol.md, "Limits"), the default app from the
environment, and configuration errors that name the file, the app and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.apps.config import (
    DEFAULT_APP_ID,
    DEFAULT_APP_KEY,
    DEFAULT_APP_SECRET,
    AppConfig,
    ConfigError,
    WebhookConfig,
    app_from_mapping,
    default_app_from_env,
    load_apps_file,
)
from shared.apps.origins import OriginPolicy
from shared.apps.registry import AppRegistry
from tests.soketi_apps import SQL_COLUMNS, camel_app, pascal_app

FULL_YAML = """\
# Two apps; the second uses every kind of field.
apps:
  - id: 1
    key: key-1
    secret: secret-1
  - id: chat
    key: chat-key
    secret: chat-secret
    enabled: false
    max_connections: 500
    enable_client_messages: true
    max_client_events_per_sec: 20
    max_presence_members_per_channel: 50
    max_presence_member_size_in_kb: 0.5
    max_channel_name_length: 164
    max_event_payload_in_kb: 100
    max_event_batch_size: 20
    webhooks:
      - url: https://example.com/hooks
        event_types: [channel_occupied, channel_vacated]
        headers: {X-Token: abc}
        filter:
          channel_name_starts_with: presence-
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def app_yaml(**fields: Any) -> str:
    """An apps file with one app; `None` removes a field."""
    app: dict[str, Any] = {"id": "my-app", "key": "my-key", "secret": "my-secret"}
    for name, value in fields.items():
        if value is None:
            app.pop(name, None)
        else:
            app[name] = value
    return json.dumps({"apps": [app]})  # JSON is YAML too


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_apps_file(path)
    return str(info.value)


# -- loading -----------------------------------------------------------------------------------


def test_yaml_apps_file(tmp_path: Path) -> None:
    first, chat = load_apps_file(write(tmp_path, "apps.yaml", FULL_YAML))
    assert first == AppConfig(id="1", key="key-1", secret="secret-1")  # a numeric id becomes a string
    assert chat.id == "chat"
    assert chat.enabled is False
    assert chat.max_connections == 500
    assert chat.enable_client_messages is True
    assert chat.max_client_events_per_sec == 20
    assert chat.max_presence_members_per_channel == 50
    assert chat.max_presence_member_size_in_kb == 0.5
    assert chat.max_presence_member_bytes == 512
    assert chat.max_channel_name_length == 164
    assert chat.max_event_payload_bytes == 100 * 1024
    assert chat.max_event_batch_size == 20
    assert chat.webhooks == (
        WebhookConfig(
            url="https://example.com/hooks",
            event_types=("channel_occupied", "channel_vacated"),
            headers={"X-Token": "abc"},
            channel_name_starts_with="presence-",
        ),
    )


def test_json_apps_file(tmp_path: Path) -> None:
    doc = {"apps": [
        {"id": "a", "key": "ka", "secret": "sa", "enable_client_messages": True},
        {"id": "b", "key": "kb", "secret": "sb", "max_connections": -1, "max_event_payload_in_kb": 20},
    ]}
    a, b = load_apps_file(write(tmp_path, "apps.json", json.dumps(doc)))
    assert (a.id, a.key, a.secret, a.enable_client_messages) == ("a", "ka", "sa", True)
    assert (b.max_connections, b.max_event_payload_bytes) == (-1, 20 * 1024)


def test_yml_extension_and_yaml_flow_style(tmp_path: Path) -> None:
    [app] = load_apps_file(write(tmp_path, "apps.yml", "apps: [{id: x, key: k, secret: s}]"))
    assert app.key == "k"


def test_defaults_are_those_of_section_12() -> None:
    app = AppConfig(id="1", key="k", secret="s")
    assert app.enabled is True
    assert app.max_connections == -1
    assert app.enable_client_messages is False
    assert app.max_client_events_per_sec == 10
    assert app.max_presence_members_per_channel == 100
    assert app.max_presence_member_size_in_kb == 1
    assert app.max_presence_member_bytes == 1024
    assert app.max_channel_name_length == 200
    assert app.max_event_payload_in_kb == 10
    assert app.max_event_payload_bytes == 10 * 1024
    assert app.max_event_batch_size == 10
    assert app.max_event_channels_at_once == 100
    assert app.max_event_name_length == 200
    assert app.webhooks == ()


def test_file_values_not_given_take_the_defaults(tmp_path: Path) -> None:
    [app] = load_apps_file(write(tmp_path, "apps.yaml", app_yaml()))
    assert app == AppConfig(id="my-app", key="my-key", secret="my-secret")


async def test_registry_finds_apps_by_id_and_key(tmp_path: Path) -> None:
    registry = AppRegistry(load_apps_file(write(tmp_path, "apps.yaml", FULL_YAML)))
    assert len(registry) == 2
    chat = await registry.by_id("chat")
    assert chat is not None and await registry.by_key("chat-key") is chat
    assert await registry.by_key("chat") is None and await registry.by_id("chat-key") is None
    assert [a.id for a in registry] == ["1", "chat"]


# -- errors name the file, the app and the field ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"max_conections": 5}, "max_conections", "unknown field (did you mean 'max_connections'?)"),
        ({"maxConnections": 5, "max_connections": 6}, "max_connections",
         "is given twice (as 'maxConnections' and 'max_connections')"),
        ({"allowed_origins": ["https://ok.example", "https://*bad.example"]}, "allowed_origins",
         "'https://*bad.example' is not an origin"),
        ({"allowed_origins": ["https://example.com/path"]}, "allowed_origins", "is not an origin"),
        ({"allowed_origins": "[not json"}, "allowed_origins", "not valid JSON"),
        ({"webhooks": "[{"}, "webhooks", "not valid JSON"),
        ({"max_connections": "ten"}, "max_connections", "must be an integer"),
        ({"max_connections": 2.5}, "max_connections", "must be an integer"),
        ({"max_connections": True}, "max_connections", "must be an integer"),
        ({"max_connections": -2}, "max_connections", "must be 0 or more (or -1 for unlimited)"),
        ({"max_backend_events_per_sec": -3}, "max_backend_events_per_sec", "must be 0 or more"),
        ({"maxReadRequestsPerSecond": 1.5}, "maxReadRequestsPerSecond", "must be an integer"),
        ({"max_channel_name_length": -1}, "max_channel_name_length", "must be at least 1"),
        ({"max_presence_members_per_channel": 0}, "max_presence_members_per_channel", "must be at least 1"),
        ({"enable_client_messages": "yes"}, "enable_client_messages", "must be true or false"),
        ({"enabled": 1}, "enabled", "must be true or false"),
        ({"max_presence_member_size_in_kb": "1"}, "max_presence_member_size_in_kb", "must be a positive number"),
        ({"max_event_payload_in_kb": 0}, "max_event_payload_in_kb", "must be a positive number"),
        ({"key": 123}, "key", "must be a non-empty string"),
        ({"secret": ""}, "secret", "must be a non-empty string"),
        ({"key": None}, "key", "is required"),
        ({"secret": None}, "secret", "is required"),
        ({"webhooks": {"url": "https://x"}}, "webhooks", "must be a list"),
        ({"webhooks": [{"url": "ftp://example.com", "event_types": []}]}, "webhooks[0].url", "http(s) URL"),
        ({"webhooks": [{"event_types": ["channel_occupied"]}]}, "webhooks[0].url", "http(s) URL"),
        ({"webhooks": [{"url": "https://ok", "event_types": ["channel_occupied"]},
                       {"url": "example.com/hook"}]}, "webhooks[1].url", "http(s) URL"),
        ({"webhooks": [{"url": "https://ok", "event_types": ["occupied"]}]}, "webhooks[0].event_types", "list of"),
        ({"webhooks": [{"url": "https://ok", "headers": {"X": 1}}]}, "webhooks[0].headers", "strings"),
        ({"history_size": -1}, "history_size", "must be 0 (off) or more"),
        ({"history_size": 100_001}, "history_size", "must be at most 100000"),
        ({"history_ttl_s": 0}, "history_ttl_s", "must be at least 1"),
        ({"history_channel_prefixes": 5}, "history_channel_prefixes", "list of channel-name prefixes"),
        ({"history_channel_prefixes": ["chat room"]}, "history_channel_prefixes", "list of channel-name prefixes"),
        ({"history_channel_prefixes": [""]}, "history_channel_prefixes", "list of channel-name prefixes"),
    ],
)
def test_field_errors(tmp_path: Path, fields: dict[str, Any], field: str, why: str) -> None:
    path = write(tmp_path, "apps.yaml", app_yaml(**fields))
    message = config_error(path)
    assert message.startswith(f"{path}: app my-app: field '{field}': ")
    assert why in message


def test_missing_id_names_the_app_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.yaml", "apps:\n  - {id: a, key: ka, secret: sa}\n  - {key: kb, secret: sb}\n")
    assert config_error(path) == f"{path}: app #1: field 'id': is required"


def test_error_in_a_later_app_names_that_app(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.yaml", FULL_YAML.replace("max_event_batch_size: 20", "max_event_batch_size: many"))
    assert config_error(path) == f"{path}: app chat: field 'max_event_batch_size': must be an integer"


def test_duplicate_app_key(tmp_path: Path) -> None:
    text = "apps:\n  - {id: a, key: same, secret: sa}\n  - {id: b, key: same, secret: sb}\n"
    path = write(tmp_path, "apps.yaml", text)
    assert config_error(path) == f"{path}: app b: field 'key': is used by another app"


def test_duplicate_app_id(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.json", json.dumps({"apps": [
        {"id": "a", "key": "k1", "secret": "s"}, {"id": "a", "key": "k2", "secret": "s"},
    ]}))
    assert config_error(path) == f"{path}: app a: field 'id': is used by another app"


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.yaml", "apps:\n  - id: a\n    key: [unclosed\n")
    message = config_error(path)
    assert message.startswith(f"{path}: not valid YAML")
    assert "line" in message  # PyYAML's position helps find the mistake


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.json", '{"apps": [{"id": "a",}]}')
    assert config_error(path).startswith(f"{path}: not valid JSON")


@pytest.mark.parametrize(
    "text", ["", "apps: []", "apps: {id: a}", "- id: a", "just a string", "{}", "other: [{id: a}]"],
    ids=["empty", "no-apps", "apps-not-list", "top-level-list", "scalar", "empty-object", "wrong-root-key"],
)
def test_wrong_document_shape(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "apps.yaml", text)
    assert config_error(path).startswith(f"{path}: expected an object")


def test_app_that_is_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.yaml", "apps:\n  - just-a-name\n")
    assert config_error(path) == f"{path}: app #0: must be an object"


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert config_error(path).startswith(f"{path}: cannot read apps file")


# -- the default app from the environment ------------------------------------------------------


def test_default_app_without_environment() -> None:
    app = default_app_from_env({})
    assert (app.id, app.key, app.secret) == (DEFAULT_APP_ID, DEFAULT_APP_KEY, DEFAULT_APP_SECRET)
    assert app.enable_client_messages is False


def test_default_app_from_environment() -> None:
    app = default_app_from_env({
        "HERALD_APP_ID": "42", "HERALD_APP_KEY": "env-key", "HERALD_APP_SECRET": "env-secret",
        "HERALD_APP_ENABLE_CLIENT_MESSAGES": "true", "UNRELATED": "x",
    })
    assert app == AppConfig(id="42", key="env-key", secret="env-secret", enable_client_messages=True)


@pytest.mark.parametrize(
    ("flag", "enabled"), [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("false", False)]
)
def test_default_app_client_messages_flag(flag: str, enabled: bool) -> None:
    assert default_app_from_env({"HERALD_APP_ENABLE_CLIENT_MESSAGES": flag}).enable_client_messages is enabled


def test_default_app_empty_variable_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        default_app_from_env({"HERALD_APP_SECRET": ""})
    assert str(info.value) == f"environment: app {DEFAULT_APP_ID}: field 'secret': must be a non-empty string"


def test_default_app_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_APP_KEY", "from-os-environ")
    assert default_app_from_env().key == "from-os-environ"


# -- the real CLI ------------------------------------------------------------------------------


def test_cli_exits_2_naming_file_app_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "apps:\n  - id: shop\n    key: k\n    secret: s\n    max_conections: 10\n")
    result = subprocess.run(
        [sys.executable, "-m", "herald", "serve", "--apps-file", str(path), "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}: app shop: field 'max_conections': unknown field" in result.stderr
    assert "Traceback" not in result.stderr


# -- soketi's files and tables ----------------------------------------------------------------------


def _expected_soketi_app(app_id: str = "7", key: str = "soketi-key") -> AppConfig:
    return AppConfig(
        id=app_id, key=key, secret="soketi-secret", max_connections=3, enable_client_messages=True,
        enabled=True, max_backend_events_per_sec=4, max_client_events_per_sec=5, max_read_req_per_sec=6,
        max_presence_members_per_channel=7, max_presence_member_size_in_kb=2, max_channel_name_length=60,
        max_event_channels_at_once=8, max_event_name_length=50, max_event_payload_in_kb=20,
        max_event_batch_size=9, enable_user_authentication=False,
    )


def test_soketi_config_file_with_every_camel_case_field(tmp_path: Path) -> None:
    doc = {"debug": True, "port": 6001,
           "appManager.array.apps": [camel_app("7", "soketi-key", "soketi-secret", "https://hooks.example/x")]}
    path = write(tmp_path, "config.json", json.dumps(doc))
    warnings: list[str] = []
    [app] = load_apps_file(path, warnings.append)
    hook = WebhookConfig(url="https://hooks.example/x", event_types=("channel_occupied", "channel_vacated"),
                         headers={"X-From": "soketi-config"}, channel_name_starts_with="hooked-")
    assert app == replace(_expected_soketi_app(), webhooks=(hook,))
    assert warnings == [
        f"{path}: soketi server setting 'debug' is not an apps setting; ignored (Herald's settings are flags "
        "and HERALD_* variables)",
        f"{path}: soketi server setting 'port' is not an apps setting; ignored (Herald's settings are flags "
        "and HERALD_* variables)",
        f"{path}: app 7: field 'webhooks[1].lambda_function': AWS Lambda webhooks are not supported; "
        "a webhook without 'url' is skipped",
        f"{path}: app 7: field 'webhooks[1].lambda': AWS Lambda options are ignored",
    ]


def test_soketi_nested_config_and_dynamodb_spelling(tmp_path: Path) -> None:
    doc = {"appManager": {"driver": "array", "array": {"apps": [pascal_app("7", "soketi-key", "soketi-secret")]}}}
    warnings: list[str] = []
    [app] = load_apps_file(write(tmp_path, "config.json", json.dumps(doc)), warnings.append)
    assert app == _expected_soketi_app()
    assert warnings == []


def test_soketi_sql_row_with_nulls_takes_defaults() -> None:
    """A row of soketi's SQL table: 0/1 booleans, a JSON string of webhooks, NULL limits."""
    row = dict.fromkeys(SQL_COLUMNS)
    row.update({"id": "app-id", "key": "app-key", "secret": "app-secret", "max_connections": 200,
                "enable_client_messages": 1, "enabled": 1, "max_backend_events_per_sec": -1,
                "max_client_events_per_sec": -1, "max_read_req_per_sec": "-1", "webhooks": "[]",
                "enable_user_authentication": 0, "max_event_payload_in_kb": Decimal("12.5"),
                "created_at": "2024-01-01", "allowed_origins": '["https://*.example.com"]'})
    warnings: list[str] = []
    app = app_from_mapping(row, "db", 0, row=True, warn=warnings.append)
    assert app == AppConfig(id="app-id", key="app-key", secret="app-secret", max_connections=200,
                            enable_client_messages=True, max_client_events_per_sec=-1, max_event_payload_in_kb=12.5,
                            allowed_origins=OriginPolicy(["https://*.example.com"]))
    assert warnings == ["db: column 'created_at' is not an app field Herald knows; ignored"]
    app_from_mapping(row, "db", 0, row=True, warn=warnings.append)
    assert len(warnings) == 1  # once per column and process


@pytest.mark.parametrize("empty", [None, ""])
def test_null_and_empty_fall_back_to_defaults(tmp_path: Path, empty: object) -> None:
    fields = {name: empty for name in ("max_connections", "enabled", "maxEventPayloadInKb", "webhooks",
                                       "allowed_origins", "max_read_req_per_sec")}
    [app] = load_apps_file(write(tmp_path, "apps.json", json.dumps(
        {"apps": [{"id": "a", "key": "k", "secret": "s", **fields}]})))
    assert app == AppConfig(id="a", key="k", secret="s")


def test_allowed_origins_forms(tmp_path: Path) -> None:
    text = ('apps:\n  - {id: a, key: ka, secret: s, allowed_origins: ["https://app.example.com", "*.example.org"]}\n'
            '  - {id: b, key: kb, secret: s, allowed_origins: "https://x.example, https://y.example"}\n'
            '  - {id: c, key: kc, secret: s, allowed_origins: ["*"]}\n')
    a, b, c = load_apps_file(write(tmp_path, "apps.yaml", text))
    assert a.allowed_origins.allows("https://app.example.com") and a.allowed_origins.allows("http://w.example.org")
    assert not a.allowed_origins.allows("https://evil.example")
    assert b.allowed_origins.allows("https://y.example") and not b.allowed_origins.allows("https://z.example")
    assert c.allowed_origins.allow_any


def test_rate_limit_fields_and_zero_means_none() -> None:
    app = app_from_mapping({"id": "a", "key": "k", "secret": "s", "max_backend_events_per_sec": 0,
                            "max_read_req_per_sec": 100, "max_connections": 0}, "t", 0)
    assert (app.max_backend_events_per_sec, app.max_read_req_per_sec, app.max_connections) == (0, 100, 0)
    assert AppConfig(id="a", key="k", secret="s").max_backend_events_per_sec == -1  # soketi's default


def test_default_app_limits_from_environment() -> None:
    app = default_app_from_env({"HERALD_APP_ALLOWED_ORIGINS": "https://a.example,https://b.example",
                                "HERALD_APP_MAX_BACKEND_EVENTS_PER_SEC": "50", "HERALD_APP_MAX_READ_REQ_PER_SEC": "5"})
    assert app.allowed_origins == OriginPolicy(["https://a.example", "https://b.example"])
    assert (app.max_backend_events_per_sec, app.max_read_req_per_sec) == (50, 5)


def test_history_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "apps.yaml", app_yaml(history_size=500, history_ttl_s=600,
                                                 history_channel_prefixes=["chat-", "private-room-"]))
    [app] = load_apps_file(path)
    assert (app.history_size, app.history_ttl_s, app.history_channel_prefixes) == (
        500, 600, ("chat-", "private-room-"))
    [off] = load_apps_file(write(tmp_path, "off.yaml", app_yaml(history_size=0)))
    assert off.history_size == 0
