"""A process's metrics plumbing: the event-loop lag probe, the sources of scrape-time gauges, and the
optional separate metrics listener (`--metrics-port`). Metric names live in shared/metrics.py and
trigger_api/metrics.py; docs/metrics.md is the reference."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from shared import metrics
from shared.backend import Backend

log = logging.getLogger("herald")

# How often the probe asks the loop to wake it; its lateness is the lag every other callback saw.
LOOP_LAG_INTERVAL_S = 0.25


async def probe_loop_lag(interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """One task per process: sleep `interval_s` and record how late the loop woke it."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - started - interval_s))


def serve_metrics(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """GET /metrics on its own port, answered by prometheus_client's listener thread, so scrapes stay
    off the public port and still answer while the event loop is busy."""
    server, thread = start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server, thread


class ProcessMetrics:
    """For the lifetime of a process: the loop-lag probe, the scrape-time gauges' sources and, with a
    metrics port, the separate listener."""

    def __init__(self, backend: Backend, host: str, metrics_port: int | None) -> None:
        self.backend = backend
        self.host = host
        self.metrics_port = metrics_port
        self._listener: tuple[WSGIServer, threading.Thread] | None = None
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        presence = self.backend.presence
        metrics.PRESENCE_MEMBERS.set_source(
            lambda: {(app_id,): float(n) for app_id, n in presence.local_members().items()}
        )
        if self.metrics_port is not None:
            self._listener = serve_metrics(self.host, self.metrics_port)
        self._probe = asyncio.create_task(probe_loop_lag(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._listener is not None:
            server, thread = self._listener
            server.shutdown()
            server.server_close()
            thread.join(5)
        metrics.PRESENCE_MEMBERS.set_source(None)
