"""Herald's container image, built from the Dockerfile and run: metadata, a read-only container as
uid 10001 that answers pusher-js, a gateway and a trigger API container over a real Redis, and the
drain on `docker stop`. The image is built once per session (tests/deploy/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pusher
import pytest

import herald
from tests.deploy.conftest import BuiltImage, container_log, herald_container, inspect_image, wait_ready
from tests.helpers import free_port
from tests.pusherjs import NodeDriver
from tests.rawclient import unique
from tests.redis_server import RedisServer

pytest_plugins = ["tests.wsfixtures"]
pytestmark = pytest.mark.timeout(900)  # the first test builds the image

APP = {"HERALD_APP_ID": "7", "HERALD_APP_KEY": "img-key", "HERALD_APP_SECRET": "img-secret"}
GRACE_S = 10  # docker stop's default grace period


def sdk(port: int) -> pusher.Pusher:
    return pusher.Pusher(app_id=APP["HERALD_APP_ID"], key=APP["HERALD_APP_KEY"], secret=APP["HERALD_APP_SECRET"],
                         host="127.0.0.1", port=port, ssl=False)


def test_image_metadata(herald_image: BuiltImage, capsys: pytest.CaptureFixture[str]) -> None:
    info = inspect_image(herald_image.tag)
    config = info["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == herald.__version__
    assert labels["org.opencontainers.image.title"] == "Herald"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert len(labels["org.opencontainers.image.revision"]) == 40
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["herald"] and config["Cmd"] == ["serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["StopSignal"] == "SIGTERM"
    with capsys.disabled():
        print(f"\n  image {herald_image.tag}: {herald_image.size_bytes / 1e6:.0f} MB, "
              f"built in {herald_image.build_s:.1f} s this session")


def test_version_and_no_installers(herald_image: BuiltImage) -> None:
    with herald_container(herald_image.tag, "--version") as c:
        c.get_wrapped_container().wait(timeout=30)
        assert container_log(c).strip() == f"herald {herald.__version__}"
    # Neither the venv's interpreter nor the base image's finds pip, setuptools or wheel, and no pip on PATH.
    probe = ("import importlib.util as u, shutil, sys; "
             "found = [m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)]; "
             "print(sys.executable, found, shutil.which('pip'), shutil.which('pip3'))")
    script = (f'python -c "{probe}"; '
              f'for p in /usr/local/bin/python3 /usr/bin/python3; do [ -x $p ] && $p -c "{probe}"; done; true')
    with herald_container(herald_image.tag, "-c", script, entrypoint="sh") as c:
        c.get_wrapped_container().wait(timeout=30)
        lines = container_log(c).split("\n")
    reports = [line for line in lines if line.strip()]
    assert len(reports) >= 2, reports
    for line in reports:
        assert line.endswith("[] None None"), reports


async def test_serve_read_only_as_10001_answers_pusherjs(herald_image: BuiltImage, node: NodeDriver) -> None:
    port = free_port()
    # Health checked every second here (the image's own check command, a shorter interval).
    health = {"interval": 1_000_000_000, "timeout": 3_000_000_000, "retries": 3, "start_period": 0}
    with herald_container(herald_image.tag, "serve", "--host", "127.0.0.1",
                          env={**APP, "HERALD_PORT": str(port)}, healthcheck=health) as c:
        wait_ready(c, f"http://127.0.0.1:{port}/ready")
        wrapped = c.get_wrapped_container()
        assert wrapped.attrs["HostConfig"]["ReadonlyRootfs"] is True
        code, out = wrapped.exec_run(["id", "-u"])
        assert code == 0 and out.decode().strip() == "10001"
        code, out = wrapped.exec_run(["sh", "-c", "touch /opt/herald/x || touch /x"])
        assert code != 0 and b"Read-only file system" in out

        client = await node.connect("img", APP["HERALD_APP_KEY"], port)
        channel = unique("image")
        await client.subscribe(channel)
        await asyncio.to_thread(sdk(port).trigger, channel, "hello", {"from": "container"})
        assert (await client.wait_event(channel, "hello"))["data"] == {"from": "container"}

        deadline = time.monotonic() + 20
        while (status := _health(wrapped)) != "healthy" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert status == "healthy", wrapped.attrs["State"].get("Health")


def _health(wrapped: Any) -> str:
    wrapped.reload()
    return str(wrapped.attrs["State"].get("Health", {}).get("Status"))


async def test_gateway_and_trigger_api_containers_share_redis(
    herald_image: BuiltImage, node: NodeDriver, tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis = RedisServer(tmp_path_factory.mktemp("redis-image")).start()
    gw_port, api_port = free_port(), free_port()
    common = {**APP, "HERALD_REDIS_URL": redis.url, "HERALD_REDIS_PREFIX": unique("img")}
    try:
        with herald_container(herald_image.tag, "gateway", "--host", "127.0.0.1",
                              env={**common, "HERALD_PORT": str(gw_port)}) as gw, \
             herald_container(herald_image.tag, "trigger-api", "--host", "127.0.0.1",
                              env={**common, "HERALD_PORT": str(api_port)}) as api:
            wait_ready(gw, f"http://127.0.0.1:{gw_port}/ready")
            wait_ready(api, f"http://127.0.0.1:{api_port}/ready")
            client = await node.connect("gw", APP["HERALD_APP_KEY"], gw_port)
            channel = unique("across")
            await client.subscribe(channel)
            await asyncio.to_thread(sdk(api_port).trigger, channel, "relay", {"via": "redis"})
            assert (await client.wait_event(channel, "relay"))["data"] == {"via": "redis"}
            # The API answers channel queries from Redis: it sees the gateway's subscriber.
            info = await asyncio.to_thread(sdk(api_port).channel_info, channel, ["subscription_count"])
            assert info["occupied"] is True and info["subscription_count"] == 1
    finally:
        redis.stop()


async def test_docker_stop_drains_with_4200(
    herald_image: BuiltImage, node: NodeDriver, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    with herald_container(herald_image.tag, "serve", "--host", "127.0.0.1",
                          env={**APP, "HERALD_PORT": str(port), "HERALD_DRAIN_SECONDS": "2"}) as c:
        wait_ready(c, f"http://127.0.0.1:{port}/ready")
        clients = [await node.connect(f"d{i}", APP["HERALD_APP_KEY"], port) for i in range(4)]
        wrapped = c.get_wrapped_container()
        started = time.monotonic()
        await asyncio.to_thread(wrapped.stop, timeout=GRACE_S)  # `docker stop`: SIGTERM, SIGKILL after 10 s
        stopped_s = time.monotonic() - started
        for client in clients:
            error = await client.wait_error()
            assert error["error"]["data"]["code"] == 4200, client.history()
        wrapped.reload()
        log = container_log(c)
        # Exit 0 by itself, not 137 from the SIGKILL at the end of the grace period.
        assert wrapped.attrs["State"]["ExitCode"] == 0, log
        assert stopped_s < GRACE_S, (stopped_s, log)
        assert "draining 4 connections over 2.0s" in log
        with capsys.disabled():
            print(f"\n  docker stop (grace {GRACE_S} s, HERALD_DRAIN_SECONDS=2): returned after {stopped_s:.1f} s, "
                  f"exit code 0, {len(clients)} pusher-js clients got 4200")
