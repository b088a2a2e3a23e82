"""A real webhook receiver for tests: records every request Herald makes and checks each one the way
applications do.

Every request is validated on arrival with the PyPI `pusher` SDK (`validate_webhook`: key, signature
over the raw body, `time_ms` within 300 s). `check_with_node_sdk()` validates recorded requests with the
npm `pusher` SDK (`WebHook.isValid()` / `getEvents()`, via tests/node/sdk_webhook.mjs), which also
insists on `Content-Type: application/json` exactly.

It runs uvicorn in a background thread (like the auth server), so any test event loop can use it. It can
be told to fail (answer 500, or any status) for a while or for a number of requests, and to be slow.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pusher
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.helpers import free_port
from tests.pusherjs import NODE_DIR, node_available

SDK_WEBHOOK = NODE_DIR / "sdk_webhook.mjs"


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int  # what the receiver answered
    at: float  # time.time() on arrival
    python_sdk: dict[str, Any] | None  # validate_webhook's result (None: invalid)
    node_sdk: dict[str, Any] | None = None  # sdk_webhook.mjs's result once checked

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.data["events"]
        return events

    @property
    def time_ms(self) -> int:
        return int(self.data["time_ms"])


@dataclass
class _Failing:
    status: int = 500
    until: float = 0.0  # time.monotonic() deadline
    count: int = 0  # or this many more requests


@dataclass
class _Behaviour:
    failing: _Failing = field(default_factory=_Failing)
    delay_s: float = 0.0


class WebhookReceiver:
    def __init__(self, apps: Iterable[Mapping[str, Any]]) -> None:
        self._secrets = {a["key"]: a["secret"] for a in apps}
        self._lock = threading.Lock()
        self._behaviour = _Behaviour()
        self.received: list[Received] = []
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration used by tests -------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add_app(self, app: Mapping[str, Any]) -> None:
        with self._lock:
            self._secrets[app["key"]] = app["secret"]

    def fail_for(self, seconds: float, status: int = 500) -> None:
        """Answer `status` to every request for the next `seconds`."""
        with self._lock:
            self._behaviour.failing = _Failing(status, until=time.monotonic() + seconds)

    def fail_next(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._behaviour.failing = _Failing(status, count=count)

    def slow(self, seconds: float) -> None:
        """Wait this long before answering each request (0 to stop)."""
        with self._lock:
            self._behaviour.delay_s = seconds

    def reset(self) -> None:
        with self._lock:
            self._behaviour = _Behaviour()
            self.received.clear()

    # ---- what arrived ----------------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def accepted(self, path: str | None = None) -> list[Received]:
        return [r for r in self.requests(path) if r.accepted]

    def events(self, path: str | None = None, accepted: bool = True) -> list[dict[str, Any]]:
        """Events of the requests (by default those answered 2xx), in arrival order."""
        return [e for r in self.requests(path) if r.accepted or not accepted for e in r.events]

    def events_named(self, name: str, channel: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events(path) if e["name"] == name and (channel is None or e["channel"] == channel)]

    async def wait_for(
        self, predicate: Callable[[WebhookReceiver], bool], timeout: float = 10.0, what: str = "webhooks"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                got = [(r.status, r.events) for r in self.requests()]
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; received {got}")
            await asyncio.sleep(0.05)

    async def wait_events(self, name: str, channel: str, count: int = 1, timeout: float = 10.0,
                          path: str | None = None) -> list[dict[str, Any]]:
        await self.wait_for(lambda r: len(r.events_named(name, channel, path)) >= count, timeout,
                            f"{count} accepted {name} for {channel}")
        return self.events_named(name, channel, path)

    def assert_valid(self, node_checks: int = 6) -> None:
        """Every request passed the Python SDK; the first `node_checks` also pass the npm SDK, which
        sees the same events."""
        requests = self.requests()
        invalid = [r for r in requests if r.python_sdk is None]
        assert not invalid, f"requests the PyPI pusher SDK rejected: {[(r.headers, r.body) for r in invalid]}"
        self.check_with_node_sdk(requests[:node_checks])
        for r in requests[:node_checks]:
            assert r.node_sdk is not None and r.node_sdk["valid"], f"npm pusher SDK rejected {r}: {r.node_sdk}"
            assert r.node_sdk["events"] == r.events
            assert r.node_sdk["time_ms"] == r.time_ms

    def check_with_node_sdk(self, requests: list[Received]) -> None:
        """Run tests/node/sdk_webhook.mjs over the requests and keep its verdicts on them."""
        todo = [r for r in requests if r.node_sdk is None]
        if not todo:
            return
        reason = node_available()
        if reason:
            raise AssertionError(f"cannot validate with the npm pusher SDK: {reason}")
        payload = []
        for r in todo:
            key = r.headers.get("x-pusher-key", "")
            payload.append({"key": key, "secret": self._secrets.get(key, ""), "headers": r.headers,
                            "body": r.body.decode()})
        proc = subprocess.run(["node", str(SDK_WEBHOOK)], input=json.dumps(payload).encode(), capture_output=True,
                              cwd=NODE_DIR, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        for r, verdict in zip(todo, json.loads(proc.stdout), strict=True):
            r.node_sdk = verdict

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        app = Starlette(routes=[
            Route("/health", lambda _r: PlainTextResponse("ok")),
            Route("/{path:path}", self._receive, methods=["POST"]),
        ])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="webhook-receiver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("webhook receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    # ---- the endpoint ----------------------------------------------------------------------------

    def _python_sdk(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
        key = headers.get("x-pusher-key", "")
        secret = self._secrets.get(key)
        if secret is None or headers.get("content-type") != "application/json":
            return None
        client = pusher.Pusher(app_id="1", key=key, secret=secret)
        result: dict[str, Any] | None = client.validate_webhook(key, headers.get("x-pusher-signature", ""), body)
        return result

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        arrived = time.time()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            failing, delay = self._behaviour.failing, self._behaviour.delay_s
            status = 200
            if failing.count > 0:
                failing.count -= 1
                status = failing.status
            elif time.monotonic() < failing.until:
                status = failing.status
        if delay:
            await asyncio.sleep(delay)
        record = Received(request.url.path, headers, body, status, arrived, self._python_sdk(headers, body))
        with self._lock:
            self.received.append(record)
        return PlainTextResponse("ok" if status < 300 else "failing on purpose", status_code=status)
