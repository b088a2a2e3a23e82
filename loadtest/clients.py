"""Client worker processes of `python -m loadtest`: one job per process, driven over stdin/stdout.

    python -m loadtest.clients '<json job>'

The worker prepares (connects its subscribers, builds its requests), prints `ready`, waits for `go` on
stdin, runs, prints `progress N` lines while it runs and one `result {json}` line at the end; then it
waits for `finish` (so its sockets stay open while the parent measures the server) and exits. Every
client is the lean kind of `_common.py`: one asyncio.Protocol per socket, no task per socket, frames
cut out of the byte stream by hand, so a worker follows thousands of sockets without being the
bottleneck of the server it measures. All traffic goes to the URL in the job.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop

PROGRESS_S = 0.5
BENCH_MARK = b'"event":"bench"'


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def masked(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame; the all-zero mask keeps the payload as is (valid, and free to build)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class Job:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        url = urlsplit(spec["url"])
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if url.scheme in ("wss", "https") else 80)
        self.key = spec["app_key"]
        self.secret = spec["app_secret"]
        self.app_id = spec["app_id"]
        self.done = 0
        self.errors: list[str] = []

    def upgrade_request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (f"GET /app/{self.key}?protocol=7&client=herald-loadtest&version=1.0 HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()

    def error(self, message: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(message[:300])


class Socket(asyncio.Protocol):
    """One WebSocket; `on_frame(sock, payload, now)` gets each text frame after the 101."""

    __slots__ = ("buf", "index", "job", "on_frame", "opened", "t0", "transport", "upgraded")

    def __init__(self, job: Job, index: int, on_frame: Any) -> None:
        self.job = job
        self.index = index
        self.on_frame = on_frame
        self.transport: Any = None
        self.buf = b""
        self.upgraded = False
        self.t0 = 0.0
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.job.upgrade_request())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf + data if self.buf else data
        pos = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(buf[:120].decode(errors="replace"))
                return
            self.upgraded = True
            self.opened.set_result(now)
            pos = end + 4
        n = len(buf)
        while n - pos >= 2:
            length = buf[pos + 1]
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:
                self.on_frame(self, buf[start:end], now)
            elif opcode == 9:
                self.transport.write(masked(buf[start:end], 0xA))
            pos = end
        self.buf = buf[pos:] if pos < n else b""

    def fail(self, why: str) -> None:
        self.job.error(why)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        self.transport.abort()

    def send(self, payload: bytes) -> None:
        self.transport.write(masked(payload))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(str(exc or "closed during the handshake")))


def channel_auth(job: Job, socket_id: str, channel: str) -> str:
    sig = hmac.new(job.secret.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{job.key}:{sig}"


async def progress_loop(job: Job, total: int) -> None:
    while job.done < total:
        await asyncio.sleep(PROGRESS_S)
        say(f"progress {job.done}")


async def wait_go() -> None:
    say("ready")
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    JOB_INPUT.append(reader)
    line = await reader.readline()
    if line.strip() != b"go":
        raise SystemExit(0)


JOB_INPUT: list[asyncio.StreamReader] = []
# A `stop` read still pending when a job ended early (it is consumed before `finish`).
PENDING: list[asyncio.Future[bytes]] = []


async def wait_finish() -> None:
    for fut in PENDING:
        await fut
    if JOB_INPUT:
        await JOB_INPUT[0].readline()


# -- connect storms --------------------------------------------------------------------------------


async def connect_job(job: Job) -> dict[str, Any]:
    """n sockets with c in flight: bare (until the 101) or full (connection_established, then a signed
    private-channel subscribe until subscription_succeeded). Sockets stay open until `finish`."""
    spec = job.spec
    n, conc, full = spec["n"], spec["concurrency"], spec["full"]
    channels = spec.get("channels", 10)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    socks: list[Socket] = []
    subscribed: dict[int, asyncio.Future[float]] = {}

    def on_frame(sock: Socket, payload: bytes, now: float) -> None:
        if not full:
            return
        if b"pusher:connection_established" in payload:
            socket_id = orjson.loads(orjson.loads(payload)["data"])["socket_id"]
            channel = f"private-bench-{sock.index % channels}"
            sock.send(orjson.dumps({"event": "pusher:subscribe", "data": {
                "channel": channel, "auth": channel_auth(job, socket_id, channel)}}))
        elif b"subscription_succeeded" in payload:
            fut = subscribed.get(sock.index)
            if fut is not None and not fut.done():
                fut.set_result(now)
        elif b"error" in payload:
            fut = subscribed.get(sock.index)
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(payload[:200].decode(errors="replace")))

    await wait_go()
    t_start = time.time()
    next_index = 0

    async def lane() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            t0 = time.monotonic()
            if full:
                subscribed[i] = loop.create_future()
            try:
                _, sock = await loop.create_connection(lambda i=i: Socket(job, i, on_frame), job.host, job.port)
                socks.append(sock)
                t1 = await asyncio.wait_for(subscribed[i] if full else sock.opened, 30)
            except (OSError, ConnectionError, TimeoutError) as exc:
                job.error(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(t1 - t0)
            job.done += 1

    prog = asyncio.create_task(progress_loop(job, n))
    await asyncio.gather(*(lane() for _ in range(conc)))
    t_end = time.time()
    prog.cancel()
    return {"ok": len(latencies), "t_start": t_start, "t_end": t_end, "latencies": latencies,
            "errors": job.errors, "_keep": socks}


# -- subscribers ------------------------------------------------------------------------------------


LATENCY_STEP_S = 1e-5  # subscribers' latencies are counted in 10 us steps


async def subscribe_job(job: Job) -> dict[str, Any]:
    """n sockets subscribed to one public channel (or `channels` of them, round robin); then counts
    `bench` events and their latency (the event data carries its publish time `t`)."""
    spec = job.spec
    n, conc = spec["n"], spec.get("concurrency", 50)
    channels = spec.get("channels", 1)
    prefix = spec.get("channel", "bench")
    record = spec.get("latency", True)
    loop = asyncio.get_running_loop()
    ready: dict[int, asyncio.Future[float]] = {}
    socks: list[Socket] = []
    # Latencies counted in LATENCY_STEP_S steps, not listed: a long storm delivers millions of events,
    # and a list of them outgrew what the parent reads as one line.
    latencies: dict[int, int] = {}
    cache: dict[bytes, float] = {}
    st = {"received": 0, "first": 0.0, "last": 0.0}

    def on_frame(sock: Socket, payload: bytes, now: float) -> None:
        if BENCH_MARK in payload:
            st["received"] += 1
            wall = time.time()
            st["last"] = wall
            if record:
                t = cache.get(payload)
                if t is None:
                    if len(cache) > 10_000:
                        cache.clear()
                    t = cache[payload] = orjson.loads(orjson.loads(payload)["data"])["t"]
                step = int((wall - t) / LATENCY_STEP_S)
                latencies[step] = latencies.get(step, 0) + 1
            return
        if b"pusher:connection_established" in payload:
            channel = prefix if channels == 1 else f"{prefix}-{sock.index % channels}"
            sock.send(orjson.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        elif b"subscription_succeeded" in payload:
            fut = ready[sock.index]
            if not fut.done():
                fut.set_result(now)
        elif b"pusher:ping" in payload:
            sock.send(b'{"event":"pusher:pong","data":{}}')

    next_index = 0

    async def lane() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            ready[i] = loop.create_future()
            try:
                _, sock = await loop.create_connection(lambda i=i: Socket(job, i, on_frame), job.host, job.port)
                socks.append(sock)
                await asyncio.wait_for(ready[i], 30)
            except (OSError, ConnectionError, TimeoutError) as exc:
                job.error(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(lane() for _ in range(conc)))
    say(f"subscribed {sum(1 for f in ready.values() if f.done() and not f.exception())}")
    await wait_go()
    expected = spec.get("expect", 0)
    deadline = time.monotonic() + spec.get("max_wait_s", 60)
    # Deliveries arrive on their own; report progress until told to stop or all expected arrived.
    stop = asyncio.ensure_future(JOB_INPUT[0].readline())
    while not stop.done() and time.monotonic() < deadline:
        await asyncio.wait([stop], timeout=PROGRESS_S)
        say(f"progress {st['received']}")
        if expected and st["received"] >= expected:
            break
    if not stop.done():
        PENDING.append(stop)
    return {"received": st["received"], "last": st["last"], "latency_steps": sorted(latencies.items()),
            "errors": job.errors,
            "open": sum(1 for s in socks if not s.transport.is_closing()), "_keep": socks}


# -- HTTP publish, a new TCP connection per request ---------------------------------------------------


def signed_request(job: Job, path: str, body: bytes, keep_alive: bool) -> bytes:
    params = [("auth_key", job.key), ("auth_timestamp", str(int(time.time()))), ("auth_version", "1.0"),
              ("body_md5", hashlib.md5(body).hexdigest())]
    to_sign = "POST\n" + path + "\n" + "&".join(f"{k}={v}" for k, v in sorted(params))
    sig = hmac.new(job.secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    query = "&".join(f"{k}={v}" for k, v in params) + "&auth_signature=" + sig
    return (f"POST {path}?{query} HTTP/1.1\r\nHost: {job.host}:{job.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{'' if keep_alive else 'Connection: close'}\r\n\r\n").encode() + body


class OneRequest(asyncio.Protocol):
    """Write one request, read one response (by Content-Length), then close."""

    def __init__(self, request: bytes, done: asyncio.Future[tuple[int, bytes]]) -> None:
        self.request = request
        self.done = done
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
        if len(self.buf) >= end + 4 + length and not self.done.done():
            self.done.set_result((int(self.buf[9:12]), self.buf[end + 4:end + 4 + length]))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed: {self.buf[:200]!r}"))


async def publish_job(job: Job) -> dict[str, Any]:
    spec = job.spec
    n, conc = spec["n"], spec["concurrency"]
    path = f"/apps/{job.app_id}/events"
    body = orjson.dumps({"name": "bench", "channel": spec.get("channel", "bench-publish"),
                         "data": json.dumps({"t": 0, "p": "x" * 150})})
    request = signed_request(job, path, body, keep_alive=False)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    await wait_go()
    t_start = time.time()
    issued = 0

    async def lane() -> None:
        nonlocal issued
        while issued < n:
            issued += 1
            t0 = time.monotonic()
            done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            try:
                await loop.create_connection(lambda done=done: OneRequest(request, done), job.host, job.port)
                status, answer = await asyncio.wait_for(done, 30)
            except (OSError, ConnectionError, TimeoutError) as exc:
                job.error(f"{type(exc).__name__}: {exc}")
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                job.error(f"{status} {answer[:200]!r}")
            latencies.append(time.monotonic() - t0)
            job.done += 1

    prog = asyncio.create_task(progress_loop(job, n))
    await asyncio.gather(*(lane() for _ in range(conc)))
    prog.cancel()
    return {"ok": statuses.get(200, 0), "statuses": statuses, "t_start": t_start, "t_end": time.time(),
            "latencies": latencies, "errors": job.errors}


JOBS = {"connect": connect_job, "subscribe": subscribe_job, "publish": publish_job}


async def main(spec: dict[str, Any]) -> None:
    job = Job(spec)
    result = await JOBS[spec["kind"]](job)
    keep = result.pop("_keep", None)
    say("result " + json.dumps(result))
    await wait_finish()
    for sock in keep or ():
        sock.transport.abort()


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(main(json.loads(sys.argv[1])))
