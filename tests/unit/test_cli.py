"""The `herald` command line: --version, help texts, and HERALD_* environment values."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import herald
from herald.cli import ROLES, build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"herald {herald.__version__}"


@pytest.mark.parametrize("command", list(ROLES))
def test_help_shows_every_default_and_variable(command: str) -> None:
    sub = _subparsers(build_parser())[command]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 12
    for action in flags:
        env = "HERALD_" + action.dest.upper()
        assert action.help and f"[{env}, default " in action.help, (action.option_strings, action.help)
    text = sub.format_help()
    assert "[HERALD_PORT, default 6001]" in text and "[HERALD_REDIS_URL, default none]" in text
    assert "[HERALD_NODE_LEASE, default 15]" in text


def test_environment_sets_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_PORT", "7001")
    monkeypatch.setenv("HERALD_DRAIN_SECONDS", "2.5")
    monkeypatch.setenv("HERALD_LOG_LEVEL", "debug")
    monkeypatch.setenv("HERALD_REDIS_URL", "")  # empty counts as unset
    parser = build_parser()
    args = parser.parse_args(["gateway"])
    assert (args.port, args.drain_seconds, args.log_level, args.redis_url) == (7001, 2.5, "debug", None)
    assert parser.parse_args(["gateway", "--port", "7002"]).port == 7002  # a flag beats the environment
    assert "[HERALD_PORT=7001, built-in default 6001]" in _subparsers(parser)["gateway"].format_help()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HERALD_PORT", "abc", "herald: HERALD_PORT='abc' is not an integer (used for --port)"),
        ("HERALD_NODE_LEASE", "15s", "herald: HERALD_NODE_LEASE='15s' is not a number (used for --node-lease)"),
        ("HERALD_LOG_LEVEL", "loud", "herald: HERALD_LOG_LEVEL='loud' must be one of critical, error, warning, "
                                     "info, debug (used for --log-level)"),
    ],
)
def test_bad_environment_value_is_one_line(variable: str, value: str, message: str) -> None:
    # A real process, as a user or an orchestrator sees it: exit 2, one line, no traceback.
    out = subprocess.run([sys.executable, "-m", "herald", "serve"], env={variable: value, "PATH": ""},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [message]
    assert out.stdout == ""


def test_console_and_metrics_port_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    args = parser.parse_args(["trigger-api", "--console", "--console-token", "t0k", "--metrics-port", "9464"])
    assert (args.console, args.console_token, args.metrics_port) == (True, "t0k", 9464)
    assert parser.parse_args(["serve"]).console is False
    assert not hasattr(parser.parse_args(["gateway"]), "console")  # the console is the HTTP API's
    monkeypatch.setenv("HERALD_CONSOLE", "yes")
    monkeypatch.setenv("HERALD_METRICS_PORT", "9100")
    args = build_parser().parse_args(["serve"])
    assert (args.console, args.metrics_port) == (True, 9100)


def test_bad_console_switch_value_is_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "herald", "serve"], env={"HERALD_CONSOLE": "maybe", "PATH": ""},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["herald: HERALD_CONSOLE='maybe' is not on or off (1/true/yes/on, "
                                       "0/false/no/off; used for --console)"]
