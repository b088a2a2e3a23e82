"""The process assembly's own endpoints: liveness never depends on anything, readiness turns off for
the drain (so a load balancer stops sending new clients before sockets are closed)."""

from __future__ import annotations

import asyncio
import warnings

from starlette.exceptions import StarletteDeprecationWarning

from herald.server import Node, Settings
from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry
from shared.backend import memory_backend

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


def test_liveness_and_readiness_until_drained() -> None:
    registry = AppRegistry([AppConfig(id="1", key="k", secret="s")])
    node = Node(registry, memory_backend(registry), Settings(), gateway=True, http_api=True)
    with TestClient(node.app) as client:
        assert (client.get("/").status_code, client.get("/").json()) == (200, {"ok": True})
        ready = client.get("/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        asyncio.run(node.drain())
        drained = client.get("/ready")
        assert (drained.status_code, drained.json()) == (503, {"ready": False})
        assert client.get("/").status_code == 200
