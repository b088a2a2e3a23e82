"""Fixtures of the deployment tests: a Docker engine, Herald's image built once per session, and
containers run the way the local engine here allows (host network only, unique names, removed after).

The engine comes from the local-docker script (`.ci/run` calls it first and says where it looks for
it). Without a reachable engine every test that needs one is skipped with the
reason printed in pytest's summary.

Containers are run with testcontainers (Ryuk, its reaper container, is turned off: its image cannot be
pulled here, and every container below is removed by the fixture that started it).
"""

from __future__ import annotations

import os

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testcontainers.core.container import DockerContainer

from tests.helpers import REPO

READY_TIMEOUT_S = 30
BUILD_TIMEOUT_S = 900


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used, or None."""
    if shutil.which("docker") is None:
        return ("no `docker` command: run the local-docker script first (.ci/run does; "
                "HERALD_LOCAL_DOCKER names it, default ../shared/tools/local-docker.sh)")
    out = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        return f"no Docker engine reachable (`docker info`: {out.stderr.strip()[:200]}); start it with local-docker.sh"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> str:
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    return "docker"


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    build_s: float
    size_bytes: int


@pytest.fixture(scope="session")
def herald_image(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    """Herald's image, built once per session with scripts/build-image.sh under a tag of its own
    (other checkouts may build at the same time); untagged at the end, its layers stay as build cache."""
    tag = f"herald-test-{uuid.uuid4().hex[:8]}:latest"
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "build-image.sh"), tag], stdout=out,
                              stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    build_s = time.monotonic() - started
    assert proc.returncode == 0, f"image build failed:\n{log.read_text()[-4000:]}"
    size = int(subprocess.run(["docker", "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True,
                              text=True, check=True).stdout)
    try:
        yield BuiltImage(tag, build_s, size)
    finally:
        subprocess.run(["docker", "rmi", "--no-prune", tag], capture_output=True, timeout=60)


def inspect_image(tag: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True, check=True)
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data[0]


def wait_ready(container: DockerContainer, url: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll `url` until it answers 200; fail with the container's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    wrapped = container.get_wrapped_container()
    while time.monotonic() < deadline:
        wrapped.reload()
        if wrapped.status == "exited":
            raise AssertionError(f"container {wrapped.name} exited:\n{container_log(container)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s:\n{container_log(container)}")


def container_log(container: DockerContainer) -> str:
    out, err = container.get_logs()
    return (out + err).decode(errors="replace")


@contextlib.contextmanager
def herald_container(image: str, *args: str, env: dict[str, str] | None = None, read_only: bool = True,
                     **kwargs: Any) -> Iterator[DockerContainer]:
    """`docker run --network host --read-only --name herald-test-<random> IMAGE ARGS`, removed afterwards."""
    container = DockerContainer(image).with_command(list(args)).with_name(f"herald-test-{uuid.uuid4().hex[:10]}")
    container.with_kwargs(network_mode="host", read_only=read_only, **kwargs)
    for key, value in (env or {}).items():
        container.with_env(key, value)
    container.start()
    try:
        yield container
    finally:
        container.stop()  # removes it (force), whatever state it is in


def repo_path(*parts: str) -> Path:
    return REPO.joinpath(*parts)
