"""The process assembly's own endpoints: liveness never depends on anything, readiness turns off for
the drain (so a load balancer stops sending new clients before sockets are closed)."""

from __future__ import annotations

import asyncio
import warnings

from prometheus_client import REGISTRY
from starlette.exceptions import StarletteDeprecationWarning

from gateway.connection import Connection
from herald.server import Node, Settings
from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry
from shared.backend import memory_backend
from tests.unit.fakes import ListSink

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
        # Even with no socket to close, new handshakes are refused from now on.
        assert node.gateway is not None and not node.gateway.accepting


def test_drain_progress_metrics() -> None:
    """herald_draining turns 1 and herald_drain_pending_connections counts down to 0 as batches close."""
    app = AppConfig(id="1", key="k", secret="s")
    registry = AppRegistry([app])
    node = Node(registry, memory_backend(registry), Settings(drain_s=0.3), gateway=True, http_api=False)
    assert node.gateway is not None
    seen: list[float] = []

    class RecordingSink(ListSink):
        def close(self, code: int, reason: str) -> None:
            seen.append(REGISTRY.get_sample_value("herald_drain_pending_connections") or 0.0)
            super().close(code, reason)

    sinks = [RecordingSink() for _ in range(6)]
    for i, sink in enumerate(sinks):
        node.gateway.connections[f"{i}.1"] = Connection(f"{i}.1", app, sink, 0.0)
    asyncio.run(node.drain())
    assert all(sink.close_args and sink.close_args[0] == 4200 for sink in sinks)
    assert REGISTRY.get_sample_value("herald_draining") == 1
    assert REGISTRY.get_sample_value("herald_drain_pending_connections") == 0
    assert seen == [6, 6, 4, 4, 2, 2]  # 0.3 s: three batches of two
