"""The servers a benchmark loads: Herald from this checkout (all-in-one, or a cluster of two gateways,
a trigger API and Redis), soketi 1.6.1 (one process, or two over Redis), or a deployed server's URL.

Local servers are started fresh for each scenario (so memory readings start clean) and stopped after
it; their pids give the CPU and RSS readings. A remote target has no pids: those columns say n/a.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loadtest import _common as c

# The app both servers serve, so one client drives both (soketi's default app).
APP_ID = "app-id"
APP_KEY = "app-key"
APP_SECRET = "app-secret"

SOKETI_VERSION = "1.6.1"
# soketi's install recipe (the project's shared bench notes): its npm package pins uWebSockets.js to a
# GitHub tarball the npm registry can't serve, so the override swaps in the same library published on
# npm. Installed into a cache directory outside the repository, never committed.
SOKETI_PACKAGE = {
    "name": "soketi-local",
    "private": True,
    "dependencies": {"@soketi/soketi": SOKETI_VERSION},
    "overrides": {"uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"},
}
START_TIMEOUT_S = 30


@dataclass
class Target:
    """Where the clients connect: WebSocket URLs (one per gateway) and the HTTP API URL."""

    name: str
    ws_urls: list[str]
    api_url: str
    app_id: str = APP_ID
    app_key: str = APP_KEY
    app_secret: str = APP_SECRET
    # role -> pid of the local processes serving it (empty for a remote target)
    pids: dict[str, int] = field(default_factory=dict)

    def job(self, **spec: object) -> dict[str, object]:
        return {"app_id": self.app_id, "app_key": self.app_key, "app_secret": self.app_secret, **spec}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "herald-bench"


def ensure_soketi() -> Path:
    """soketi's server.js, installed with npm into the cache on first use."""
    root = cache_dir() / f"soketi-{SOKETI_VERSION}"
    server = root / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
    if server.exists():
        return server
    if shutil.which("npm") is None:
        raise RuntimeError("--compare soketi needs node and npm on PATH")
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(json.dumps(SOKETI_PACKAGE, indent=2))
    print(f"# installing soketi {SOKETI_VERSION} into {root} (once)", file=sys.stderr)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=root, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    return server


def wait_ready(url: str, proc: subprocess.Popen[bytes], procs: c.Processes, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready:\n{procs.log_tail(name)}")
        time.sleep(0.05)


def herald_env() -> dict[str, str]:
    return {"HERALD_APP_ID": APP_ID, "HERALD_APP_KEY": APP_KEY, "HERALD_APP_SECRET": APP_SECRET}


def start_herald(procs: c.Processes, name: str, command: str, src: str | None,
                 redis_url: str | None = None) -> tuple[int, int]:
    port = c.free_port()
    args = [sys.executable, "-m", "herald", command, "--host", c.HOST, "--port", str(port), "--log-level",
            "warning", "--drain-seconds", "0"]
    if redis_url:
        args += ["--redis-url", redis_url]
    env = herald_env()
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    proc = procs.start(name, args, env=env, **({"cwd": src} if src else {}))
    wait_ready(f"http://{c.HOST}:{port}/ready", proc, procs, name)
    return proc.pid, port


def herald_single(procs: c.Processes, src: str | None) -> Target:
    pid, port = start_herald(procs, "herald", "serve", src)
    url = f"http://{c.HOST}:{port}"
    return Target("herald", [url], url, pids={"server": pid})


def herald_cluster(procs: c.Processes, src: str | None) -> Target:
    redis, redis_url = c.start_redis(procs)
    gws = [start_herald(procs, f"herald-gateway{i}", "gateway", src, redis_url) for i in range(2)]
    api_pid, api_port = start_herald(procs, "herald-trigger-api", "trigger-api", src, redis_url)
    return Target("herald", [f"http://{c.HOST}:{p}" for _, p in gws], f"http://{c.HOST}:{api_port}",
                  pids={"gateway0": gws[0][0], "gateway1": gws[1][0], "trigger-api": api_pid, "redis": redis.pid})


def start_soketi(procs: c.Processes, name: str, redis_url: str | None = None) -> tuple[int, int]:
    server = ensure_soketi()
    port = c.free_port()
    env = {"SOKETI_PORT": str(port), "SOKETI_HOST": c.HOST, "SOKETI_METRICS_ENABLED": "false",
           "SOKETI_DEFAULT_APP_ID": APP_ID, "SOKETI_DEFAULT_APP_KEY": APP_KEY,
           "SOKETI_DEFAULT_APP_SECRET": APP_SECRET, "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true"}
    if redis_url:
        host, redis_port = redis_url.removeprefix("redis://").split(":")
        env |= {"SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_HOST": host, "SOKETI_DB_REDIS_PORT": redis_port}
    proc = procs.start(name, ["node", str(server), "start"], env=env, cwd=str(server.parent))
    wait_ready(f"http://{c.HOST}:{port}/ready", proc, procs, name)
    return proc.pid, port


def soketi_single(procs: c.Processes) -> Target:
    pid, port = start_soketi(procs, "soketi")
    url = f"http://{c.HOST}:{port}"
    return Target("soketi", [url], url, pids={"server": pid})


def soketi_cluster(procs: c.Processes) -> Target:
    redis, redis_url = c.start_redis(procs)
    nodes = [start_soketi(procs, f"soketi{i}", redis_url) for i in range(2)]
    urls = [f"http://{c.HOST}:{p}" for _, p in nodes]
    return Target("soketi", urls, urls[0], pids={"node0": nodes[0][0], "node1": nodes[1][0], "redis": redis.pid})


def remote(name: str, url: str, app_id: str, key: str, secret: str) -> Target:
    base = url.rstrip("/").replace("wss://", "https://").replace("ws://", "http://")
    return Target(name, [base], base, app_id, key, secret)
