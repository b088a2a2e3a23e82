"""Starting real Herald processes (and later redis-server) for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HeraldProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    apps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"herald exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            # Not listening yet: the readiness poll is the event we wait for.
            time.sleep(0.05)
    raise RuntimeError(f"herald did not become ready at {url}:\n{log_path.read_text()}")


def start_herald(
    tmp_path: Path,
    apps: list[dict[str, Any]] | None = None,
    command: str = "serve",
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    name: str = "herald",
) -> HeraldProcess:
    port = port or free_port()
    args = [sys.executable, "-m", "herald", command, "--host", "127.0.0.1", "--port", str(port)]
    if apps is not None:
        apps_file = tmp_path / f"{name}-apps.json"
        apps_file.write_text(json.dumps({"apps": apps}))
        args += ["--apps-file", str(apps_file)]
    args += extra_args or []
    log_path = tmp_path / f"{name}-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=full_env)
    wait_http_ok(f"http://127.0.0.1:{port}/ready", proc, log_path)
    return HeraldProcess(port, proc, log_path, apps or [])


@contextlib.contextmanager
def running_herald(tmp_path: Path, **kwargs: Any) -> Iterator[HeraldProcess]:
    herald = start_herald(tmp_path, **kwargs)
    try:
        yield herald
    finally:
        herald.stop()
