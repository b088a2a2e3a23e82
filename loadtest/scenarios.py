"""The scenarios of `python -m loadtest`. Each one takes a started target and returns its measures.

Clients run in separate processes (loadtest/clients.py) so that they use the other core, not the
server's; the parent only orchestrates, publishes at a fixed rate where a scenario needs it, and reads
the servers' CPU and RSS from /proc.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from loadtest import _common as c
from loadtest.clients import LATENCY_STEP_S
from loadtest.targets import Target

Measures = dict[str, float | None]


@dataclass
class Options:
    handshakes: int = 5000
    in_flight: int = 100
    publish_requests: int = 20000
    publish_in_flight: int = 16
    memory_sockets: int = 10000
    latency_subscribers: int = 1000
    latency_rate: float = 100.0
    latency_seconds: float = 10.0
    storm_subscribers: int = 1000
    storm_sockets: int = 5000
    fanout_subscribers: Sequence[int] = (1000, 10000)
    client_procs: int = 2
    quiet: bool = False


def progress(target: str, text: str, quiet: bool) -> None:
    if not quiet:
        sys.stderr.write(f"\r  [{target}] {text:<70}")
        sys.stderr.flush()


def done_line(quiet: bool) -> None:
    if not quiet:
        sys.stderr.write("\n")


class Worker:
    """One client process (loadtest/clients.py) and its line protocol."""

    def __init__(self, procs: c.Processes, name: str, spec: dict[str, Any]) -> None:
        name = re.sub(r"[^\w.-]+", "_", name)  # also the log file's name
        self.name = name
        self.proc = procs.start(name, [sys.executable, "-m", "loadtest.clients", json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.last_progress = 0
        self._pump: asyncio.Task[None] | None = None

    async def attach(self) -> None:
        reader = asyncio.StreamReader(limit=1 << 26)
        loop = asyncio.get_running_loop()
        assert self.proc.stdout is not None
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self.proc.stdout)
        self._pump = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while raw := await reader.readline():
            line = raw.decode().rstrip("\n")
            if line.startswith("progress "):
                self.last_progress = int(line[9:])
            else:
                self.lines.put_nowait(line)
        self.lines.put_nowait(None)

    async def expect(self, prefix: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.lines.get(), max(0.1, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"client {self.name} exited ({self.proc.poll()})")
            word, _, rest = line.partition(" ")
            if word == prefix:
                return rest

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass


async def workers(procs: c.Processes, name: str, specs: list[dict[str, Any]]) -> list[Worker]:
    out = [Worker(procs, f"{name}-client{i}", spec) for i, spec in enumerate(specs)]
    for w in out:
        await w.attach()
    return out


async def run_with_progress(ws: list[Worker], total: int, label: str, target: str, quiet: bool,
                            timeout: float = 300) -> list[dict[str, Any]]:
    """Send `go`, show the workers' progress, collect their results."""
    for w in ws:
        w.send("go")
    pending = {asyncio.ensure_future(w.expect("result", timeout)): w for w in ws}
    while True:
        done, _ = await asyncio.wait(pending, timeout=0.5)
        progress(target, f"{label}: {sum(w.last_progress for w in ws)}/{total}", quiet)
        if len(done) == len(pending):
            break
    done_line(quiet)
    return [json.loads(fut.result()) for fut in pending]


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _schedstat_s(pid: int, field: int) -> float:
    """One field of /proc/PID/task/*/schedstat (nanoseconds), summed over `pid`'s threads, in seconds."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[field])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def cpu_s(pid: int) -> float:
    """CPU time of every thread of `pid`, in seconds, from the scheduler's own accounting
    (schedstat): exact for short windows, unlike the 10 ms ticks of /proc/PID/stat, and it counts
    node's helper threads for soketi."""
    return _schedstat_s(pid, 0)


def cpu_wait_s(pid: int) -> float:
    """Time `pid`'s threads were runnable but waiting for a core (CPU contention), in seconds."""
    return _schedstat_s(pid, 1)


def waits(target: Target) -> float | None:
    """Seconds the target's processes (Redis aside) spent runnable but without a core, summed."""
    pids = [p for k, p in target.pids.items() if k != "redis"]
    return sum(cpu_wait_s(p) for p in pids) if pids else None


def cpu(target: Target, role: str | None = None) -> float | None:
    if role is not None and role not in target.pids:
        return None
    pids = [target.pids[role]] if role else list(target.pids.values())
    if not pids:
        return None
    return sum(cpu_s(p) for p in pids)


def pct(values: list[float], q: float) -> float | None:
    return 1000 * c.percentile(sorted(values), q) if values else None


def step_pcts(results: list[dict[str, Any]], qs: Sequence[float]) -> list[float | None]:
    """Percentiles (ms) of the subscribers' latencies, which they count in LATENCY_STEP_S steps; the
    same rank as `pct` (`_common.rank`)."""
    counts: dict[int, int] = {}
    for r in results:
        for step, count in r["latency_steps"]:
            counts[step] = counts.get(step, 0) + count
    total = sum(counts.values())
    if not total:
        return [None for _ in qs]
    steps = sorted(counts)
    out: list[float | None] = []
    for q in qs:
        wanted, seen = c.rank(total, q), 0
        for step in steps:
            seen += counts[step]
            if seen > wanted:
                out.append(1000 * step * LATENCY_STEP_S)
                break
    return out


def errors_of(results: list[dict[str, Any]]) -> str:
    errs = [e for r in results for e in r.get("errors", [])]
    return f"; {len(errs)} errors, e.g. {errs[0]}" if errs else ""


# -- connect storms ---------------------------------------------------------------------------------


async def connect_storm(procs: c.Processes, target: Target, opts: Options, full: bool) -> Measures:
    label = "full connect" if full else "handshakes"
    n, parts = opts.handshakes, opts.client_procs
    specs = [target.job(kind="connect", url=target.ws_urls[0], n=k, concurrency=max(1, opts.in_flight // parts),
                        full=full) for k in split(n, parts)]
    ws = await workers(procs, f"{target.name}-{'connect' if full else 'handshake'}", specs)
    for w in ws:
        await w.expect("ready", 60)
    cpu0, wall0 = cpu(target), time.monotonic()
    results = await run_with_progress(ws, n, label, target.name, opts.quiet)
    cpu1 = cpu(target)
    for w in ws:
        w.send("finish")
    ok = sum(r["ok"] for r in results)
    window = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    lat = [x for r in results for x in r["latencies"]]
    if ok < n:
        print(f"  [{target.name}] {label}: {n - ok} of {n} failed{errors_of(results)}", file=sys.stderr)
    del wall0
    return {
        "per_s": ok / window if window > 0 else None,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "server_cpu_us": 1e6 * (cpu1 - cpu0) / max(1, ok) if cpu0 is not None and cpu1 is not None else None,
        "failed": float(n - ok),
    }


# -- HTTP publish -----------------------------------------------------------------------------------


async def http_publish(procs: c.Processes, target: Target, opts: Options, role: str | None = None) -> Measures:
    n, parts = opts.publish_requests, opts.client_procs
    specs = [target.job(kind="publish", url=target.api_url, n=k, concurrency=max(1, opts.publish_in_flight // parts))
             for k in split(n, parts)]
    ws = await workers(procs, f"{target.name}-publish", specs)
    for w in ws:
        await w.expect("ready", 60)
    cpu0 = cpu(target, role)
    results = await run_with_progress(ws, n, "HTTP publish", target.name, opts.quiet)
    cpu1 = cpu(target, role)
    for w in ws:
        w.send("finish")
    ok = sum(r["ok"] for r in results)
    window = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    lat = [x for r in results for x in r["latencies"]]
    if ok < n:
        print(f"  [{target.name}] publish: {n - ok} of {n} not 200{errors_of(results)}", file=sys.stderr)
    return {
        "per_s": ok / window if window > 0 else None,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "server_cpu_us": 1e6 * (cpu1 - cpu0) / max(1, ok) if cpu0 is not None and cpu1 is not None else None,
        "failed": float(n - ok),
    }


# -- memory per idle subscribed socket ----------------------------------------------------------------


async def memory(procs: c.Processes, target: Target, opts: Options) -> Measures:
    pid = target.pids.get("server")
    n = opts.memory_sockets
    warm = await workers(procs, f"{target.name}-memory-warmup",
                         [target.job(kind="subscribe", url=target.ws_urls[0], n=100, channels=10, channel="idle")])
    await warm[0].expect("ready", 120)
    warm[0].send("go")
    warm[0].send("stop")
    await warm[0].expect("result", 60)
    warm[0].send("finish")
    await asyncio.to_thread(warm[0].proc.wait, 30)
    await asyncio.sleep(2.0)
    before = c.rss_kib(pid) if pid else None
    ws = await workers(procs, f"{target.name}-memory",
                       [target.job(kind="subscribe", url=target.ws_urls[0], n=n, channels=10, channel="idle",
                                   concurrency=opts.in_flight)])
    t0 = time.monotonic()
    subscribed = int(await ws[0].expect("subscribed", 600))
    progress(target.name, f"memory: {subscribed} idle subscribed sockets in {time.monotonic() - t0:.1f}s",
             opts.quiet)
    done_line(opts.quiet)
    await ws[0].expect("ready", 60)
    await asyncio.sleep(3.0)  # settle
    after = c.rss_kib(pid) if pid else None
    ws[0].send("go")
    ws[0].send("stop")
    await ws[0].expect("result", 60)
    ws[0].send("finish")
    return {
        "kib_per_socket": (after - before) / max(1, subscribed) if before is not None and after is not None else None,
        "rss_mib": after / 1024 if after is not None else None,
        "sockets": float(subscribed),
    }


# -- deliveries: publishing at a fixed rate (or as fast as allowed) to subscribed sockets --------------


class Publisher:
    """Keep-alive HTTP/1.1 lanes posting signed events; `data` carries the publish time `t`."""

    def __init__(self, target: Target, channel: str, lanes: int = 4) -> None:
        url = urlsplit(target.api_url)
        self.host, self.port = url.hostname or c.HOST, url.port or 80
        self.target = target
        self.channel = channel
        self.lanes = lanes
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []
        self.first = 0.0
        self.last_response = 0.0

    def request(self, batch: int, data_size: int) -> bytes:
        now = time.time()
        if not self.first:
            self.first = now
        head = f'{{"t":{now:.6f},"p":"'
        data = head + "x" * max(0, data_size - len(head) - 2) + '"}'
        if batch > 1:
            body = orjson.dumps({"batch": [{"name": "bench", "channel": self.channel, "data": data}] * batch})
            path = f"/apps/{self.target.app_id}/batch_events"
        else:
            body = orjson.dumps({"name": "bench", "channel": self.channel, "data": data})
            path = f"/apps/{self.target.app_id}/events"
        params = [("auth_key", self.target.app_key), ("auth_timestamp", str(int(now))), ("auth_version", "1.0"),
                  ("body_md5", hashlib.md5(body).hexdigest())]
        to_sign = "POST\n" + path + "\n" + "&".join(f"{k}={v}" for k, v in sorted(params))
        sig = hmac.new(self.target.app_secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        query = "&".join(f"{k}={v}" for k, v in params) + "&auth_signature=" + sig
        return (f"POST {path}?{query} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    async def run(self, events: int, rate: float, batch: int = 1, data_size: int = 200,
                  until: Callable[[], bool] | None = None) -> None:
        """Send `events` events (in requests of `batch`), paced at `rate` events/s if set; with `until`,
        keep going (paced) until it returns True."""
        t0 = time.monotonic()
        counter = 0

        async def lane() -> None:
            nonlocal counter
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                while (until is None and counter < events) or (until is not None and not until()):
                    seq = counter
                    counter += batch
                    if rate:
                        delay = t0 + seq / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    if reader.at_eof():  # the server closed the keep-alive connection (soketi does)
                        writer.close()
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    writer.write(self.request(batch, data_size))
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    close = False
                    for line in head.split(b"\r\n"):
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                        elif line.lower() == b"connection: close":
                            close = True
                    answer = await reader.readexactly(length)
                    if close:
                        writer.close()
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    self.last_response = time.time()
                    if head[9:12] == b"200":
                        self.sent += batch
                    else:
                        self.failed += batch
                        if len(self.errors) < 3:
                            self.errors.append(f"{head[9:12].decode()} {answer[:200]!r}")
            finally:
                writer.close()

        await asyncio.gather(*(lane() for _ in range(self.lanes)))


async def subscribers(procs: c.Processes, target: Target, name: str, n: int, parts: int, channel: str,
                      latency: bool = True, urls: Sequence[str] | None = None) -> list[Worker]:
    urls = list(urls or target.ws_urls)
    # Socket i goes to gateway i % len(urls); each worker takes a share of each gateway's sockets.
    specs = []
    per_url = split(n, len(urls))
    for w in range(parts):
        for u, url in enumerate(urls):
            k = split(per_url[u], parts)[w]
            if k:
                specs.append(target.job(kind="subscribe", url=url, n=k, channel=channel, latency=latency,
                                        concurrency=50))
    ws = await workers(procs, name, specs)
    for w in ws:
        await w.expect("subscribed", 600)
        await w.expect("ready", 60)
    return ws


async def collect(ws: list[Worker], expected: int, target: str, label: str, quiet: bool,
                  timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sum(w.last_progress for w in ws)
        progress(target, f"{label}: {got}/{expected} deliveries", quiet)
        if got >= expected:
            break
        await asyncio.sleep(0.2)
    done_line(quiet)
    for w in ws:
        w.send("stop")
    results = [json.loads(await w.expect("result", 60)) for w in ws]
    for w in ws:
        w.send("finish")
    return results


async def fanout(procs: c.Processes, target: Target, opts: Options, n_subs: int) -> Measures:
    events = max(100, min(2000, 2_000_000 // n_subs))
    ws = await subscribers(procs, target, f"{target.name}-fanout{n_subs}", n_subs, opts.client_procs,
                           "bench-fanout", latency=False)
    for w in ws:
        w.send("go")
    pub = Publisher(target, "bench-fanout")
    cpu0 = cpu(target)
    await pub.run(events, 0, batch=10)
    results = await collect(ws, pub.sent * n_subs, target.name, f"fan-out to {n_subs}", opts.quiet)
    cpu1 = cpu(target)
    received = sum(r["received"] for r in results)
    last = max(r["last"] for r in results)
    window = last - pub.first
    return {
        "deliveries_per_s": received / window if window > 0 else None,
        "missing": float(pub.sent * n_subs - received),
        "server_cpu_us_per_delivery": (1e6 * (cpu1 - cpu0) / max(1, received)
                                       if cpu0 is not None and cpu1 is not None else None),
    }


def bus_lag_buckets(urls: Sequence[str]) -> dict[float, float]:
    """Herald gateways' `herald_bus_lag_seconds` histogram (publish -> the gateway handles it), summed
    over `urls`; {} for servers without it."""
    out: dict[float, float] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        for line in text.splitlines():
            if line.startswith('herald_bus_lag_seconds_bucket{le="'):
                le = line.split('"')[1]
                bound = float("inf") if le == "+Inf" else float(le)
                out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound (ms) of the histogram bucket holding quantile q of the observations in between."""
    if not after:
        return None
    bounds = sorted(after)
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * total:
            return 1000 * bound
    return None


async def latency(procs: c.Processes, target: Target, opts: Options) -> Measures:
    """Trigger-to-client latency at a fixed rate to subscribers spread over the target's gateways."""
    n = opts.latency_subscribers
    ws = await subscribers(procs, target, f"{target.name}-latency", n, opts.client_procs, "bench-latency")
    for w in ws:
        w.send("go")
    pub = Publisher(target, "bench-latency", lanes=2)
    warm = Publisher(target, "bench-warmup", lanes=2)
    await warm.run(20, 0)
    events = int(opts.latency_rate * opts.latency_seconds)
    cpu0 = {k: cpu_s(p) for k, p in target.pids.items()}
    lag0 = bus_lag_buckets(target.ws_urls) if target.name == "herald" else {}
    wait0, t0 = waits(target), time.monotonic()
    await pub.run(events, opts.latency_rate)
    wait1, t1 = waits(target), time.monotonic()
    results = await collect(ws, pub.sent * n, target.name, f"latency at {opts.latency_rate:g}/s", opts.quiet)
    cpu1 = {k: cpu_s(p) for k, p in target.pids.items()}
    lag1 = bus_lag_buckets(target.ws_urls) if lag0 else {}
    p50, p99, p100 = step_pcts(results, (50, 99, 100))
    received = sum(r["received"] for r in results)
    out: Measures = {"p50_ms": p50, "p99_ms": p99, "max_ms": p100,
                     "missing": float(pub.sent * n - received),
                     "servers_waited_for_cpu_pct": (100 * (wait1 - wait0) / (t1 - t0)
                                                    if wait0 is not None and wait1 is not None else None)}
    if lag1:
        # Publish -> the gateway has the event (trigger API, Redis, the gateway's read): bucket bounds.
        out["bus_lag_p50_ms_at_most"] = bucket_quantile(lag0, lag1, 0.5)
        out["bus_lag_p99_ms_at_most"] = bucket_quantile(lag0, lag1, 0.99)
    api = "trigger-api" if "trigger-api" in cpu0 else None
    if api:
        out["api_cpu_us_per_request"] = 1e6 * (cpu1[api] - cpu0[api]) / max(1, pub.sent)
    gws = [k for k in cpu0 if k.startswith(("gateway", "node", "server"))]
    if gws:
        out["gateway_cpu_us_per_delivery"] = 1e6 * sum(cpu1[k] - cpu0[k] for k in gws) / max(1, received)
    return out


async def storm(procs: c.Processes, target: Target, opts: Options) -> Measures:
    """Existing subscribers' latency (events at a fixed rate) while a connect storm hits their server."""
    n = opts.storm_subscribers
    ws = await subscribers(procs, target, f"{target.name}-storm-subs", n, 1, "bench-storm",
                           urls=target.ws_urls[:1])
    specs = [target.job(kind="connect", url=target.ws_urls[0], n=k,
                        concurrency=max(1, opts.in_flight // opts.client_procs), full=True)
             for k in split(opts.storm_sockets, opts.client_procs)]
    stormers = await workers(procs, f"{target.name}-storm", specs)
    for w in stormers:
        await w.expect("ready", 60)
    for w in ws:
        w.send("go")
    pub = Publisher(target, "bench-storm", lanes=2)
    await Publisher(target, "bench-warmup", lanes=2).run(20, 0)
    storming = True
    publishing = asyncio.ensure_future(pub.run(0, opts.latency_rate, until=lambda: not storming))
    await asyncio.sleep(0.5)  # a baseline before the storm
    wait0, t0 = waits(target), time.monotonic()
    results = await run_with_progress(stormers, opts.storm_sockets, "storm", target.name, opts.quiet)
    wait1, t1 = waits(target), time.monotonic()
    storming = False
    await publishing
    for w in stormers:
        w.send("finish")
    got = await collect(ws, pub.sent * n, target.name, "existing subscribers", opts.quiet)
    p50, p99, p100 = step_pcts(got, (50, 99, 100))
    ok = sum(r["ok"] for r in results)
    window = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    return {"p50_ms": p50, "p99_ms": p99, "max_ms": p100,
            "storm_connects_per_s": ok / window if window > 0 else None,
            "server_waited_for_cpu_pct": 100 * (wait1 - wait0) / (t1 - t0) if wait0 is not None else None,
            "missing": float(pub.sent * n - sum(r["received"] for r in got))}


def machine() -> str:
    return f"{c.machine_load()}; python {sys.version.split()[0]}; pid {os.getpid()}"
