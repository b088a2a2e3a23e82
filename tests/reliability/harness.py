"""Shared parts of the reliability suite: a Herald cluster whose gateways can each reach Redis over
their own link (direct, through a `DelayProxy`, or from a network namespace), process memory and
file-descriptor probes, and the long/short switch.

Every scenario states what must hold and measures it; the figures are printed (run pytest with -s,
or read the captured output of a failure) and collected by `scripts/reliability.sh`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.clusterutil import LEASE_S, REAPER_S, Cluster
from tests.helpers import REPO, HeraldProcess, free_port, start_herald, wait_http_ok
from tests.redis_server import RedisServer

# `HERALD_LONG_TESTS=1` (scripts/reliability.sh; the variable the other long tests read) runs every
# scenario at its long size.
LONG = os.environ.get("HERALD_LONG_TESTS") == "1"


def size(short: int, long: int) -> int:
    """A scenario's size: `short` in the normal test run, `long` from scripts/reliability.sh."""
    return long if LONG else short


def gateway_args(redis_url: str, prefix: str = "herald", extra: list[str] | None = None) -> list[str]:
    return ["--redis-url", redis_url, "--redis-prefix", prefix, "--node-lease", str(LEASE_S),
            "--reaper-interval", str(REAPER_S), "--drain-seconds", "0.2", "--log-level", "warning",
            *(extra or [])]


def start_cluster_with_links(tmp: Path, redis: RedisServer, apps: list[dict[str, Any]],
                             gateway_urls: list[str], extra: list[str] | None = None) -> Cluster:
    """Gateways that each reach Redis at their own URL (e.g. through a delaying proxy), and a trigger
    API on the direct URL."""
    gateways = [start_herald(tmp, apps=apps, command="gateway", extra_args=gateway_args(url, extra=extra),
                             name=f"gw{i}") for i, url in enumerate(gateway_urls)]
    api = start_herald(tmp, apps=apps, command="trigger-api", extra_args=gateway_args(redis.url, extra=extra),
                       name="api")
    return Cluster(redis, gateways, api, tmp, apps)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Curve:
    """RSS and open file descriptors of one process over time."""

    pid: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss KiB, fds)
    started: float = field(default_factory=time.monotonic)

    def sample(self) -> tuple[int, int]:
        rss, fds = rss_kib(self.pid), open_fds(self.pid)
        self.samples.append((time.monotonic() - self.started, rss, fds))
        return rss, fds

    @property
    def peak_rss(self) -> int:
        return max(s[1] for s in self.samples)

    @property
    def peak_fds(self) -> int:
        return max(s[2] for s in self.samples)

    def describe(self) -> str:
        return ", ".join(f"{t:.0f}s {rss / 1024:.0f}MB/{fds}fd" for t, rss, fds in self.samples)


def procs(cluster: Cluster) -> Iterator[HeraldProcess]:
    yield from cluster.gateways
    yield cluster.api


# -- a gateway in its own network namespace ---------------------------------------------------------


@dataclass
class Netns:
    """A network namespace joined to the host by two veth pairs: one that clients use to reach the
    gateway inside, one that the gateway uses to reach Redis (cut it to partition the gateway from
    Redis while its clients stay connected). A slow link is `tests.tcpproxy.DelayProxy`: `tc netem`
    needs the sch_netem kernel module, which this machine's kernel lacks."""

    name: str
    gateway_ip: str  # the gateway's address inside, reached by clients over the client link
    redis_ip: str  # the host's end of the Redis link (Redis listens there too)
    redis_link: str  # the host-side interface of the Redis link
    client_link: str

    def cut(self) -> None:
        _ip("link", "set", self.redis_link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.redis_link, "up")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def netns_unavailable() -> str | None:
    """Why a gateway can't be put in a network namespace here (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    name = f"hrchk{os.getpid() % 10000}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if probe.returncode != 0:
        return f"`ip netns add` failed: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@contextlib.contextmanager
def gateway_netns() -> Iterator[Netns]:
    tag = f"{os.getpid() % 1000}{random.randrange(100)}"
    a, b = random.randrange(200, 250), random.randrange(0, 250)
    name, client, redis = f"hr{tag}", f"hrc{tag}", f"hrr{tag}"
    ns = Netns(name, gateway_ip=f"10.{a}.{b}.2", redis_ip=f"10.{a}.{b}.5", redis_link=redis, client_link=client)
    _ip("netns", "add", name)
    try:
        for link, host_ip, inner_ip in ((client, f"10.{a}.{b}.1", ns.gateway_ip), (redis, ns.redis_ip,
                                                                                  f"10.{a}.{b}.6")):
            _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}x")
            _ip("link", "set", f"{link}x", "netns", name)
            _ip("addr", "add", f"{host_ip}/30", "dev", link)
            _ip("link", "set", link, "up")
            _ip("netns", "exec", name, "ip", "addr", "add", f"{inner_ip}/30", "dev", f"{link}x")
            _ip("netns", "exec", name, "ip", "link", "set", f"{link}x", "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        for link in (client, redis):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def start_gateway_in(ns: Netns, tmp: Path, apps: list[dict[str, Any]], redis_url: str, name: str) -> HeraldProcess:
    """`herald gateway` inside the namespace, listening on its address there."""
    port = free_port()
    apps_file = tmp / f"{name}-apps.json"
    apps_file.write_text(json.dumps({"apps": apps}))
    args = ["ip", "netns", "exec", ns.name, sys.executable, "-m", "herald", "gateway", "--host", ns.gateway_ip,
            "--port", str(port), "--apps-file", str(apps_file), *gateway_args(redis_url)]
    log_path = tmp / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_http_ok(f"http://{ns.gateway_ip}:{port}/ready", proc, log_path)
    return HeraldProcess(port, proc, log_path, apps)
