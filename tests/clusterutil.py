"""Running a Herald cluster for end-to-end tests: redis-server, gateways and a trigger API."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pusher
from pusher.http import POST, Request

from tests.authserver import AuthServer
from tests.helpers import HeraldProcess, start_herald
from tests.pusherjs import NodeDriver, PusherJsClient
from tests.redis_server import RedisClusterFixture, RedisServer, SentinelSetup

# Short lease and reaper interval so node-death tests finish quickly.
LEASE_S = 3.0
REAPER_S = 1.0
# Lease and reaper interval plus a margin for a loaded 2-core CI machine.
REAP_DEADLINE_S = LEASE_S + REAPER_S + 10


@dataclass
class Cluster:
    redis: RedisServer | RedisClusterFixture | SentinelSetup
    gateways: list[HeraldProcess]
    api: HeraldProcess
    tmp: Path
    apps: list[dict[str, Any]]
    # The flags every process was started with (to start one again alike).
    args: list[str] = field(default_factory=list)

    def sdk(self, app: dict[str, Any] | None = None) -> pusher.Pusher:
        app = app or self.apps[0]
        return pusher.Pusher(app_id=app["id"], key=app["key"], secret=app["secret"],
                             host="127.0.0.1", port=self.api.port, ssl=False, timeout=10)

    @property
    def ports(self) -> list[int]:
        return [gw.port for gw in self.gateways]

    def stop(self) -> None:
        for proc in [*self.gateways, self.api]:
            proc.stop()
        self.redis.stop()


def start_cluster(tmp: Path, redis: RedisServer | RedisClusterFixture | SentinelSetup, apps: list[dict[str, Any]],
                  gateways: int = 3, prefix: str = "herald", extra_args: list[str] | None = None,
                  api_args: list[str] | None = None, gateway_args: list[str] | None = None) -> Cluster:
    """`extra_args` go to every process, `api_args` to the trigger API only, `gateway_args` to the gateways."""
    common = [*redis.herald_args(), "--redis-prefix", prefix, "--node-lease", str(LEASE_S),
              "--reaper-interval", str(REAPER_S), "--drain-seconds", "0.2", "--log-level", "warning",
              *(extra_args or [])]
    procs = [start_herald(tmp, apps=apps, command="gateway", extra_args=[*common, *(gateway_args or [])], name=f"gw{i}")
             for i in range(gateways)]
    api = start_herald(tmp, apps=apps, command="trigger-api", extra_args=[*common, *(api_args or [])], name="api")
    return Cluster(redis, procs, api, tmp, apps, common)


def restart_gateway(cluster: Cluster, index: int, sig: int = signal.SIGTERM) -> None:
    """Stop gateway `index` (SIGTERM: drain) and start it again on the same port, ready."""
    gateway = cluster.gateways[index]
    gateway.stop(sig)
    cluster.gateways[index] = start_herald(cluster.tmp, apps=cluster.apps, command="gateway",
                                           extra_args=cluster.args, port=gateway.port, name=f"gw{index}")


@contextlib.contextmanager
def running_cluster(tmp: Path, apps: list[dict[str, Any]], **kwargs: Any) -> Iterator[Cluster]:
    """A single redis-server plus gateways and a trigger API, stopped afterwards."""
    cluster = start_cluster(tmp, RedisServer(tmp).start(), apps, **kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


def knowing(auth: AuthServer, apps: list[dict[str, Any]]) -> AuthServer:
    """The test's auth endpoint, able to sign for these apps."""
    for app in apps:
        auth.add_app(app)
    return auth


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Wait for a condition only observable by asking (an HTTP query): poll it until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def join_presence(node: NodeDriver, auth: AuthServer, name: str, port: int, user: str,
                        channel: str, key: str) -> PusherJsClient:
    auth.set_user(name, user, {"name": user})
    client = await node.connect(name, key, port, auth=auth)
    await client.subscribe(channel)
    return client


def trigger_with_info(sdk: pusher.Pusher, channels: list[str], name: str, data: str, info: str) -> Any:
    """pusher-http-python's trigger() has no `info` argument; its Request class signs and sends it."""
    client = sdk._pusher_client
    params = {"name": name, "channels": channels, "data": data, "info": info}
    return client.http.send_request(Request(client, POST, f"/apps/{client.app_id}/events", params))


def users_of(cluster: Cluster, channel: str) -> list[str]:
    return sorted(u["id"] for u in cluster.sdk().users_info(channel)["users"])
