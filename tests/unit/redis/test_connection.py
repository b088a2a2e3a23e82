"""Redis settings: every URL form Herald accepts, the ones it refuses (with a message, never a
traceback), and the TLS files checked at start-up. No I/O except the TLS files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.redis.connection import (
    RedisConfigError,
    RedisConnector,
    RedisSettings,
    TlsOptions,
    parse_redis_url,
)
from tests.helpers import REPO
from tests.tlscerts import Certs

TLS = TlsOptions(ca_file="/etc/ca.pem", cert_file="/etc/c.pem", key_file="/etc/k.pem")


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://localhost", RedisSettings("tcp", address=("localhost", 6379))),
    ("redis://127.0.0.1:6380", RedisSettings("tcp", address=("127.0.0.1", 6380))),
    ("redis://127.0.0.1:6380/", RedisSettings("tcp", address=("127.0.0.1", 6380))),
    ("redis://redis.internal:6379/3", RedisSettings("tcp", address=("redis.internal", 6379), db=3)),
    ("redis://h?db=4", RedisSettings("tcp", address=("h", 6379), db=4)),
    ("redis://herald:s3cret@h:1/2", RedisSettings("tcp", address=("h", 1), db=2, username="herald", password="s3cret")),
    ("redis://:only-password@h", RedisSettings("tcp", address=("h", 6379), password="only-password")),
    ("redis://user@h", RedisSettings("tcp", address=("h", 6379), username="user")),
    # Reserved characters in passwords are percent-encoded; '@' and ':' among them.
    ("redis://u:p%40ss%3Aw%2Frd@h", RedisSettings("tcp", address=("h", 6379), username="u", password="p@ss:w/rd")),
    ("redis://[::1]:6390/1", RedisSettings("tcp", address=("::1", 6390), db=1)),
    ("redis://[::1]", RedisSettings("tcp", address=("::1", 6379))),
    ("REDIS://H:7", RedisSettings("tcp", address=("H", 7))),
    ("rediss://cache.example.com:6380/0", RedisSettings("tcp", tls=TlsOptions(), address=("cache.example.com", 6380))),
    ("unix:///run/redis/redis.sock", RedisSettings("unix", path="/run/redis/redis.sock")),
    ("unix:///run/redis.sock?db=5", RedisSettings("unix", path="/run/redis.sock", db=5)),
    ("unix://herald:pw@/run/redis.sock",
     RedisSettings("unix", path="/run/redis.sock", username="herald", password="pw")),
    ("unix:///run/redis.sock?username=herald&password=p%26w",
     RedisSettings("unix", path="/run/redis.sock", username="herald", password="p&w")),
    ("redis+sentinel://s1:26379,s2:26380,s3/mymaster",
     RedisSettings("sentinel", sentinels=(("s1", 26379), ("s2", 26380), ("s3", 26379)), master_name="mymaster")),
    ("redis+sentinel://herald:pw@s1/mymaster/2",
     RedisSettings("sentinel", sentinels=(("s1", 26379),), master_name="mymaster", db=2, username="herald",
                   password="pw")),
    ("redis+sentinel://s1,[::1]:26000/m?sentinel_password=spw&sentinel_username=sent",
     RedisSettings("sentinel", sentinels=(("s1", 26379), ("::1", 26000)), master_name="m",
                   sentinel_username="sent", sentinel_password="spw")),
    ("rediss+sentinel://s1/m.name-1",
     RedisSettings("sentinel", tls=TlsOptions(), sentinels=(("s1", 26379),), master_name="m.name-1")),
])
def test_every_url_form_parses(url: str, expected: RedisSettings) -> None:
    assert parse_redis_url(url) == expected


def test_tls_options_ride_on_rediss_urls() -> None:
    assert parse_redis_url("rediss://h", TLS).tls == TLS
    assert parse_redis_url("rediss+sentinel://s/m", TLS).tls == TLS
    insecure = TlsOptions(insecure=True)
    assert parse_redis_url("rediss://h", insecure).tls == insecure


@pytest.mark.parametrize(("url", "tls", "message"), [
    ("", None, "unsupported Redis URL (no scheme)"),
    ("localhost:6379", None, "unsupported Redis URL (no scheme)"),
    ("http://h:6379", None, "unsupported Redis URL ('http://')"),
    ("valkey://h", None, "use redis://, rediss://, unix://"),
    ("redis://", None, "has no host"),
    ("redis://:6379", None, "has no host"),
    ("redis://h:port", None, "invalid port 'port'"),
    ("redis://h:0", None, "invalid port '0'"),
    ("redis://h:65536", None, "invalid port '65536'"),
    ("redis://h:-1", None, "invalid port '-1'"),
    ("redis://h/abc", None, "must be a number 0 or more, not 'abc'"),
    ("redis://h/-1", None, "must be a number 0 or more"),
    ("redis://h/1/2", None, "path must be /<db>"),
    ("redis://h?db=x", None, "must be a number 0 or more, not 'x'"),
    ("redis://h?timeout=3", None, "unsupported Redis URL parameter 'timeout'"),
    ("redis://h?password=x", None, "unsupported Redis URL parameter 'password'"),
    ("redis://h#frag", None, "must not have a '#' part"),
    ("redis://h1:6379,h2:6379", None, "several hosts"),
    ("redis://::1:6379", None, "IPv6 hosts need brackets"),
    ("redis://[::1", None, "Invalid IPv6 URL"),
    ("redis://[::1]x", None, "unexpected 'x'"),
    ("unix://", None, "no socket path"),
    ("unix://host/run/redis.sock", None, "has no host"),
    ("unix:///run/redis.sock?sentinel_password=x", None, "unsupported Redis URL parameter 'sentinel_password'"),
    ("redis+sentinel:///m", None, "names no sentinel"),
    ("redis+sentinel://s1:26379", None, "names no master"),
    ("redis+sentinel://s1:26379/", None, "names no master"),
    ("redis+sentinel://s1/m/x", None, "must be a number 0 or more, not 'x'"),
    ("redis+sentinel://s1/m/1/2", None, "must be /<master-name>[/<db>]"),
    ("redis+sentinel://s1/m%20x", None, "invalid Sentinel master name 'm x'"),
    ("redis+sentinel://s1:x/m", None, "invalid port 'x'"),
    ("redis://h", TLS, "TLS options are set but the URL is redis://"),
    ("unix:///run/redis.sock", TlsOptions(insecure=True), "the URL is unix://"),
    ("redis+sentinel://s/m", TlsOptions(ca_file="/ca"), "the URL is redis+sentinel://"),
    ("rediss://h", TlsOptions(key_file="/k.pem"), "--redis-tls-key-file needs --redis-tls-cert-file"),
])
def test_malformed_and_unsupported_urls_are_refused_with_a_message(
    url: str, tls: TlsOptions | None, message: str
) -> None:
    with pytest.raises(RedisConfigError) as refused:
        parse_redis_url(url, tls)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("url", [
    "redis://herald:hunter2@h:6379/1", "unix://herald:hunter2@/run/r.sock",
    "redis+sentinel://herald:hunter2@s1,s2/m?sentinel_password=hunter2", "rediss://:hunter2@h",
])
def test_descriptions_for_logs_never_show_passwords(url: str) -> None:
    settings = parse_redis_url(url)
    assert "hunter2" not in settings.describe() and "hunter2" not in repr(settings)
    assert settings.describe().split("://")[0] in ("redis", "rediss", "unix", "redis+sentinel")


def test_described_urls_parse_back_to_the_same_place() -> None:
    for url in ("redis://h:1/2", "rediss://u@h:3", "unix:///run/r.sock", "redis+sentinel://a:1,[::1]:2/m/3"):
        settings = parse_redis_url(url)
        again = parse_redis_url(settings.describe())
        assert (again.kind, again.address, again.path, again.sentinels, again.master_name, again.db) == (
            settings.kind, settings.address, settings.path, settings.sentinels, settings.master_name, settings.db)


def test_tls_files_are_checked_at_start_up(tmp_path: Path, redis_certs: Certs) -> None:
    missing = parse_redis_url("rediss://h", TlsOptions(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(RedisConfigError, match=r"cannot read --redis-tls-ca-file .*missing\.pem"):
        RedisConnector(missing)
    not_a_key = parse_redis_url("rediss://h", TlsOptions(cert_file=str(redis_certs.client_cert),
                                                          key_file=str(redis_certs.ca)))
    with pytest.raises(RedisConfigError, match="unusable Redis TLS files"):
        RedisConnector(not_a_key)
    good = parse_redis_url("rediss://h", TlsOptions(ca_file=str(redis_certs.ca), cert_file=str(redis_certs.client_cert),
                                                     key_file=str(redis_certs.client_key)))
    RedisConnector(good)  # no error


def test_verification_is_on_unless_insecure_is_asked_for() -> None:
    default = RedisConnector(parse_redis_url("rediss://h"))
    assert default._ssl_context is not None and default._ssl_context.check_hostname
    insecure = RedisConnector(parse_redis_url("rediss://h", TlsOptions(insecure=True)))
    assert insecure._ssl_context is not None and not insecure._ssl_context.check_hostname


def test_cluster_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(RedisConfigError, match="only database 0"):
        RedisConnector(parse_redis_url("redis://h/2")).command_client(cluster=True)


def _herald(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald", "gateway", "--port", "1", "--log-level", "error", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--redis-url", "http://h"], None, "unsupported Redis URL ('http://')"),
    (["--redis-url", "redis+sentinel://s1:26379"], None, "names no master"),
    (["--redis-url", "redis://h", "--redis-tls-ca-file", "/ca.pem"], None, "TLS options are set"),
    (["--redis-url", "redis://h"], {"HERALD_REDIS_TLS_INSECURE": "true"}, "TLS options are set"),
    (["--redis-url", "rediss://h"], {"HERALD_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
     "cannot read --redis-tls-ca-file /nonexistent/ca.pem: No such file or directory"),
])
def test_cli_stops_with_one_line_and_exit_2(args: list[str], env: dict[str, str] | None, message: str) -> None:
    result = _herald(*args, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herald: Redis configuration error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
