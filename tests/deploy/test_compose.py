"""The local cluster of deploy/compose/docker-compose.yml, brought up with Debian's `docker-compose`:
a pusher-js client through HAProxy gets an event triggered through the HTTP API, the gateway holding
it is killed, and it reconnects through HAProxy to the other gateway and gets events again.

Every port is a free one (HERALD_COMPOSE_*_PORT), the project name and image tags are this run's own,
Herald's image is the session's (tests/deploy/conftest.py), and everything is removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pusher
import pytest

from tests.deploy.conftest import BuiltImage
from tests.helpers import REPO, free_port
from tests.pusherjs import NodeDriver
from tests.rawclient import unique

pytest_plugins = ["tests.wsfixtures"]
pytestmark = pytest.mark.timeout(900)

COMPOSE_FILE = REPO / "deploy" / "compose" / "docker-compose.yml"
CHAT_DIR = REPO / "examples" / "chat"
APP_ID, KEY, SECRET = "1", "chat-key", "chat-secret"  # examples/chat/herald-apps.json
GATEWAYS = ("gateway1", "gateway2")


@dataclass
class Cluster:
    project: str
    env: dict[str, str]
    ports: dict[str, int]
    log: list[str]

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}\n{out.stderr}"
        return out

    def note(self, started: float, text: str) -> None:
        self.log.append(f"  {time.monotonic() - started:6.1f} s  {text}")

    def connections(self, gateway: str) -> float:
        """The gateway's open connections: herald_connections summed over apps (docs/metrics.md)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[gateway]}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "# TYPE herald_connections gauge" in text, f"{gateway}: no herald_connections in /metrics"
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(("herald_connections{", "herald_connections ")))


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(herald_image: BuiltImage) -> Iterator[Cluster]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/test.sh installs Debian's package)")
    if not (CHAT_DIR / "dist" / "index.html").is_file():
        if not (CHAT_DIR / "node_modules").is_dir() or not (REPO / "react" / "dist").is_dir():
            pytest.fail("the chat page cannot be built: run `cd react && npm ci && npm run build` and "
                        "`cd examples/chat && npm ci` (scripts/test.sh does)")
        subprocess.run(["npm", "run", "build", "--silent"], cwd=CHAT_DIR, check=True, capture_output=True,
                       timeout=300)
    run_id = uuid.uuid4().hex[:8]
    ports = {name: free_port() for name in ("lb", "gateway1", "gateway2", "api", "redis", "chat")}
    env = {
        **os.environ,
        "HERALD_COMPOSE_IMAGE": herald_image.tag,
        "HERALD_COMPOSE_TAG": f"test-{run_id}",
        "HERALD_COMPOSE_BIND": "127.0.0.1",
        "HERALD_COMPOSE_LB_PORT": str(ports["lb"]),
        "HERALD_COMPOSE_GATEWAY1_PORT": str(ports["gateway1"]),
        "HERALD_COMPOSE_GATEWAY2_PORT": str(ports["gateway2"]),
        "HERALD_COMPOSE_API_PORT": str(ports["api"]),
        "HERALD_COMPOSE_REDIS_PORT": str(ports["redis"]),
        "HERALD_COMPOSE_CHAT_PORT": str(ports["chat"]),
    }
    c = Cluster(f"herald-test-{run_id}", env, ports, [])
    try:
        started = time.monotonic()
        c.compose("up", "-d", timeout=600)
        c.log.append(f"  docker-compose up -d took {time.monotonic() - started:.1f} s; running: "
                     f"{', '.join(_states(c))}")
        yield c
    finally:
        down = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", c.project, "down", "-v",
                               "--remove-orphans", "-t", "5"], env=env, capture_output=True, text=True, timeout=120)
        for image in (f"herald-compose-support:test-{run_id}", f"herald-compose-chat:test-{run_id}"):
            subprocess.run(["docker", "rmi", "--no-prune", image], capture_output=True, timeout=60)
        if down.returncode != 0:
            print(f"docker-compose down failed:\n{down.stderr}")


def _states(c: Cluster) -> list[str]:
    out = c.compose("ps", "--services", "--filter", "status=running").stdout.split()
    return sorted(out)


async def test_client_through_balancer_survives_a_killed_gateway(
    cluster: Cluster, node: NodeDriver, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    lb = cluster.ports["lb"]
    assert _states(cluster) == sorted(["chat", "gateway1", "gateway2", "lb", "redis", "trigger-api"])
    # HAProxy's own readiness: both backends have a server its checks found live.
    await asyncio.to_thread(_wait_http, f"http://127.0.0.1:{lb}/haproxy-ready")
    sdk = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET, host="127.0.0.1", port=lb, ssl=False)

    client = await node.connect("lb", KEY, lb)
    channel = unique("compose")
    await client.subscribe(channel)
    await asyncio.to_thread(sdk.trigger, channel, "before", {"n": 1})
    assert (await client.wait_event(channel, "before"))["data"] == {"n": 1}
    holding = [g for g in GATEWAYS if cluster.connections(g) == 1]
    assert len(holding) == 1, {g: cluster.connections(g) for g in GATEWAYS}
    (victim,) = holding
    (survivor,) = [g for g in GATEWAYS if g != victim]
    first_id = client.socket_id
    cluster.note(started, f"pusher-js connected through HAProxy to {victim} ({first_id}); event via the "
                          f"trigger API received")

    cluster.compose("kill", victim)
    killed = time.monotonic()
    cluster.note(started, f"docker-compose kill {victim}")
    await client.wait_state("connecting", timeout=10)
    await client.wait_state("connected", timeout=30)
    await client.wait_event(channel, "pusher:subscription_succeeded", timeout=10)
    cluster.note(started, f"reconnected through HAProxy as {client.socket_id} and resubscribed, "
                          f"{time.monotonic() - killed:.1f} s after the kill")
    assert client.socket_id != first_id
    assert cluster.connections(survivor) == 1
    await asyncio.to_thread(sdk.trigger, channel, "after", {"n": 2})
    assert (await client.wait_event(channel, "after"))["data"] == {"n": 2}
    cluster.note(started, f"event after the kill received on {survivor}")

    # The chat demo is served and hands browsers the balancer's port.
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports['chat']}/config", timeout=5) as resp:
        config = resp.read().decode()
    assert f'"wsPort":{lb}' in config.replace(" ", ""), config
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.ports['chat']}/", timeout=5) as resp:
        assert resp.status == 200 and b"<script" in resp.read()
    cluster.note(started, "chat demo serves its page; /config points browsers at HAProxy")
    with capsys.disabled():
        print("\n  compose cluster (" + cluster.project + "):\n" + "\n".join(cluster.log))
