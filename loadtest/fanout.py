"""Fan-out through Redis: HTTP trigger -> trigger-api -> Redis pub/sub -> 2 gateways -> N WebSockets.

Starts its own redis-server, two `herald gateway` processes and one `herald trigger-api`, plus
subscriber processes (lean raw-WebSocket clients, see _common.WsClient), subscribes N sockets to one
public channel (split evenly over the two gateways), then POSTs M signed events of ~200 bytes of data
to /apps/{id}/events (or /batch_events with --batch) from keep-alive connections. Every event's data
carries its publish time and sequence number; every delivery is checked (missing, duplicate,
out-of-order) and timed.

Ordering: requests are issued by --concurrency "lanes", each waiting for its previous response before
sending the next, so Herald owes in-order delivery per lane (events of different lanes may legitimately
interleave). "out-of-order" counts deliveries older than one already seen from the same lane.

    .venv/bin/python loadtest/fanout.py                       # 1000 subscribers, 2000 events, max rate
    .venv/bin/python loadtest/fanout.py --rate 200            # paced at 200 events/s
    .venv/bin/python loadtest/fanout.py --subscribers 10 --events 5000   # HTTP path ceiling
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import orjson
import uvloop

EVENT = "bench"
WARMUP_EVENT = "warmup"
BENCH_PREFIX = b'{"event":"bench"'
CHANNEL = "bench-fanout"


# -- subscriber worker process -----------------------------------------------------------------


async def worker_main(args: argparse.Namespace) -> None:
    targets = [(int(p), int(n)) for p, n in (t.split(":") for t in args.targets.split(","))]
    n_subs = sum(n for _, n in targets)
    m = args.events
    lanes = args.concurrency
    expected = n_subs * m
    seen = bytearray(n_subs * m)  # 1 once subscriber i got event seq s, at i*m + s
    last = [-1] * (n_subs * lanes)  # last seq seen per (subscriber, lane)
    latencies = array.array("d")
    cache: dict[bytes, tuple[int, int, float]] = {}
    # Hot-path counters live in closure cells (cheaper than dict or attribute updates per delivery).
    received = dup = ooo = 0
    last_recv = 0.0
    done = False
    st = {"errors": 0, "other": 0}
    subscribed: list[asyncio.Future[None]] = []
    clients: list[c.WsClient] = []
    out = sys.stdout
    sub_msg = c.subscribe_message(CHANNEL)

    def report_done() -> None:
        nonlocal done
        done = True
        out.write("done\n")
        out.flush()

    def record(i: int, info: tuple[int, int, float], now: float) -> None:
        nonlocal received, dup, ooo, last_recv
        lane, seq, ts = info
        latencies.append(now - ts)
        k = i * m + seq
        if seen[k]:
            dup += 1
        else:
            seen[k] = 1
        k = i * lanes + lane
        if seq < last[k]:
            ooo += 1
        else:
            last[k] = seq
        received += 1
        last_recv = now
        if received >= expected and not done:
            report_done()

    def parse_bench(payload: bytes) -> tuple[int, int, float] | None:
        info = cache.get(payload)
        if info is None and payload.startswith(BENCH_PREFIX):
            d = orjson.loads(orjson.loads(payload)["data"])
            info = cache[payload] = (d["l"], d["s"], d["t"])
        return info

    def on_frame(client: c.WsClient, opcode: int, payload: bytes, now: float) -> None:
        info = parse_bench(payload)
        if info is None:
            on_control(client, opcode, payload)
        else:
            record(client.index, info, now)

    class FanoutClient(c.WsClient):
        """WsClient with the frame loop and the bookkeeping inlined: the per-delivery hot path."""

        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            nonlocal received, dup, ooo, last_recv
            if not self.handshaken:
                super().data_received(data)
                return
            now = time.time()
            buf = self._buf + data if self._buf else data
            n = len(buf)
            pos = 0
            i = self.index
            seen_base = i * m
            last_base = i * lanes
            while n - pos >= 2:
                length = buf[pos + 1]
                if length < 126:
                    start = pos + 2
                elif length == 126:
                    if n - pos < 4:
                        break
                    length = (buf[pos + 2] << 8) | buf[pos + 3]
                    start = pos + 4
                else:
                    if n - pos < 10:
                        break
                    length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    start = pos + 10
                end = start + length
                if end > n:
                    break
                payload = buf[start:end]
                info = cache.get(payload)
                if info is None:
                    info = parse_bench(payload) if buf[pos] == 0x81 else None
                    if info is None:
                        if buf[pos] & 0x0F == 9:  # WebSocket ping
                            self.transport.write(b"\x8a" + c.masked_text_frame(payload)[1:])
                        else:
                            on_control(self, buf[pos] & 0x0F, payload)
                        pos = end
                        continue
                lane, seq, ts = info
                latencies.append(now - ts)
                k = seen_base + seq
                if seen[k]:
                    dup += 1
                else:
                    seen[k] = 1
                k = last_base + lane
                if seq < last[k]:
                    ooo += 1
                else:
                    last[k] = seq
                received += 1
                pos = end
            self._buf = buf[pos:] if pos < n else b""
            last_recv = now
            if received >= expected and not done:
                report_done()

    def on_control(client: c.WsClient, opcode: int, payload: bytes) -> None:
        if opcode != 1 or c.answer_pusher_ping(client, payload):
            return
        if b'"pusher:connection_established"' in payload:
            client.send_text(sub_msg)
        elif b'"pusher_internal:subscription_succeeded"' in payload:
            fut = subscribed[client.index]
            if not fut.done():
                fut.set_result(None)
        elif b'"event":"warmup"' in payload:
            pass
        elif b'"pusher:subscription_error"' in payload:
            fut = subscribed[client.index]
            if not fut.done():
                fut.set_exception(RuntimeError(f"subscription failed: {payload[:300]!r}"))
        else:
            st["errors" if b"error" in payload else "other"] += 1
            if st["errors"] + st["other"] <= 5:
                print(f"unexpected frame: {payload[:200]!r}", file=sys.stderr)

    loop = asyncio.get_running_loop()
    ports = [p for p, n in targets for _ in range(n)]
    subscribed.extend(loop.create_future() for _ in range(n_subs))
    sem = asyncio.Semaphore(args.ramp_concurrency)

    async def connect(i: int) -> None:
        async with sem:
            client = await c.open_ws(ports[i], c.pusher_path(), i, on_frame, FanoutClient)
            clients.append(client)
            await asyncio.wait_for(subscribed[i], 30)

    t0 = time.monotonic()
    await asyncio.gather(*(connect(i) for i in range(n_subs)))
    out.write(f"ready {n_subs} {time.monotonic() - t0:.3f}\n")
    out.flush()

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "finish":
            break
        if line[0] == "expect":
            expected = n_subs * int(line[1])
            if received >= expected and not done:
                report_done()
    # Distinct subscribers that got each seq, for the parent's missing count.
    per_seq = array.array("I", [0]) * m
    for i in range(n_subs):
        row = seen[i * m:(i + 1) * m]
        for s in range(m):
            if row[s]:
                per_seq[s] += 1
    Path(args.out).write_bytes(latencies.tobytes())
    Path(args.out + ".seq").write_bytes(per_seq.tobytes())
    result = {"received": received, "dup": dup, "ooo": ooo, "last": last_recv, "subscribers": n_subs, **st}
    out.write("result " + json.dumps(result) + "\n")
    out.flush()
    for client in clients:
        client.transport.abort()


# -- publisher ---------------------------------------------------------------------------------


def event_data(seq: int, lane: int, ts: float, size: int) -> str:
    head = f'{{"s":{seq},"l":{lane},"t":{ts:.6f},"p":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


def signed_target(path: str, body: bytes) -> str:
    from shared.protocol.signatures import body_md5, sign_http

    params = [("auth_key", c.APP_KEY), ("auth_timestamp", str(int(time.time()))), ("auth_version", "1.0"),
              ("body_md5", body_md5(body))]
    sig = sign_http(c.APP_SECRET, "POST", path, params)
    return path + "?" + "&".join(f"{k}={v}" for k, v in params) + "&auth_signature=" + sig


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client: one connection, one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, target: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(c.HOST, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {target} HTTP/1.1\r\nHost: {c.HOST}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class HttpxHttp:
    def __init__(self, client: Any, port: int) -> None:
        self.client = client
        self.base = f"http://{c.HOST}:{port}"

    async def post(self, target: str, body: bytes) -> tuple[int, bytes]:
        resp = await self.client.post(self.base + target, content=body,
                                      headers={"Content-Type": "application/json"})
        return resp.status_code, resp.content

    async def close(self) -> None:
        pass


async def publish(args: argparse.Namespace, api_port: int, n_events: int, name: str, deadline: float
                  ) -> dict[str, Any]:
    """Send n_events events from --concurrency lanes; returns timing and the seqs that failed."""
    batch = args.batch
    path = f"/apps/{c.APP_ID}/batch_events" if batch > 1 else f"/apps/{c.APP_ID}/events"
    httpx_client = None
    if args.http == "httpx":
        import httpx

        httpx_client = httpx.AsyncClient(limits=httpx.Limits(max_connections=args.concurrency,
                                                             max_keepalive_connections=args.concurrency))
    counter = {"next": 0}
    failed: list[int] = []
    errors: list[str] = []
    rtts = array.array("d")
    first_publish = [0.0]
    t0 = time.time() + 0.05
    rate = args.rate

    async def lane(lane_no: int) -> None:
        http: Any = HttpxHttp(httpx_client, api_port) if httpx_client else RawHttp(api_port)
        try:
            while time.monotonic() < deadline:
                start = counter["next"]
                if start >= n_events:
                    return
                count = min(batch, n_events - start)
                counter["next"] = start + count
                if rate:
                    delay = t0 + start / rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                ts = time.time()
                if not first_publish[0]:
                    first_publish[0] = ts
                items = [{"name": name, "channel": CHANNEL,
                          "data": event_data(s, lane_no, ts, args.data_size)} for s in range(start, start + count)]
                if batch > 1:
                    body = orjson.dumps({"batch": items})
                else:
                    body = orjson.dumps({"name": name, "channels": [CHANNEL], "data": items[0]["data"]})
                status, resp = await http.post(signed_target(path, body), body)
                rtts.append(time.time() - ts)
                if status != 200:
                    failed.extend(range(start, start + count))
                    error = f"{status} {resp[:200]!r}"
                    if error not in errors and len(errors) < 5:
                        errors.append(error)
        finally:
            await http.close()

    await asyncio.gather(*(lane(i) for i in range(args.concurrency)))
    last_response = time.time()
    if httpx_client is not None:
        await httpx_client.aclose()
    return {"first": first_publish[0], "last_response": last_response, "failed": failed, "errors": errors,
            "sent": min(counter["next"], n_events), "rtts": sorted(rtts)}


# -- orchestration -----------------------------------------------------------------------------


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], out: str, reader: asyncio.StreamReader) -> None:
        self.proc = proc
        self.out = out
        self.reader = reader

    async def expect_line(self, prefix: str, timeout: float) -> list[str]:
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise RuntimeError(f"subscriber worker {self.proc.pid} exited ({self.proc.poll()})")
            line = raw.decode().split()
            if line and line[0] == prefix:
                return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def run(args: argparse.Namespace, procs: c.Processes) -> None:
    print(f"# fanout: {args.subscribers} subscribers, {args.events} events, rate "
          f"{args.rate or 'max'}/s, concurrency {args.concurrency}, batch {args.batch}, "
          f"history {args.history_size or 'off'}, "
          f"{args.client_procs} subscriber processes, http client {args.http}")
    print(f"# Herald code: {c.herald_code(args.herald_src)}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    c.wait_for_quiet(args.wait_quiet)
    print(f"# before start: {c.machine_load()}; other busy processes: "
          f"{', '.join(c.busy_processes({os.getpid()})) or 'none'}")
    wd = procs.workdir
    redis, redis_url = c.start_redis(procs)
    history = {"history_size": args.history_size} if args.history_size else {}
    apps = c.write_apps_file(wd, **history)
    gws = [c.start_herald(procs, f"gateway{i}", "gateway", apps, redis_url, src=args.herald_src) for i in range(2)]
    api, api_port = c.start_herald(procs, "trigger-api", "trigger-api", apps, redis_url, src=args.herald_src)

    # Subscriber j goes to gateway j % 2; worker w gets a contiguous share of each gateway's sockets.
    per_gw = split(args.subscribers, 2)
    loop = asyncio.get_running_loop()
    workers: list[Worker] = []
    shares = [split(n, args.client_procs) for n in per_gw]
    for w in range(args.client_procs):
        targets = ",".join(f"{gws[g][1]}:{shares[g][w]}" for g in range(2) if shares[g][w])
        if not targets:
            continue
        out = str(wd / f"latencies-{w}.bin")
        proc = procs.start(f"subscribers{w}", [sys.executable, __file__, "--worker", "--targets", targets,
                                               "--events", str(args.events), "--concurrency", str(args.concurrency),
                                               "--ramp-concurrency", str(args.ramp_concurrency), "--out", out],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        reader = asyncio.StreamReader(limit=1 << 20)
        assert proc.stdout is not None
        await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), proc.stdout)
        workers.append(Worker(proc, out, reader))
    t_ramp = time.monotonic()
    for w in workers:
        await w.expect_line("ready", 120)
    print(f"subscribed:       {args.subscribers} sockets in {time.monotonic() - t_ramp:.2f}s")
    procs.check_alive()

    if args.warmup:
        await publish(args, api_port, args.warmup, WARMUP_EVENT, time.monotonic() + 30)
        await asyncio.sleep(1.0)

    pids = {"gateway0": gws[0][0].pid, "gateway1": gws[1][0].pid, "trigger-api": api.pid, "redis": redis.pid}
    for i, w in enumerate(workers):
        pids[f"subscribers{i}"] = w.proc.pid
    pids["publisher (this)"] = os.getpid()
    profilers = {}
    if args.profile:
        profilers = {k: c.start_profiler(procs, k, pids[k])
                     for k in ("gateway0", "gateway1", "trigger-api", "subscribers0")}
        await asyncio.sleep(1.0)  # py-spy attaches
    redis_stats0 = c.redis_commandstats(redis_url)
    cpu0 = {k: c.cpu_seconds(p) for k, p in pids.items()}
    wait0 = {k: c.run_wait_seconds(p) for k, p in pids.items()}
    others0 = c.cpu_snapshot(procs.pids())
    w0 = time.time()
    pub = await publish(args, api_port, args.events, EVENT, time.monotonic() + args.max_seconds)
    ok_events = pub["sent"] - len(pub["failed"])
    for w in workers:
        w.send(f"expect {ok_events}")
    timed_out = False
    try:
        await asyncio.gather(*(w.expect_line("done", args.drain_timeout) for w in workers))
    except TimeoutError:
        timed_out = True
    w1 = time.time()
    cpu1 = {k: c.cpu_seconds(p) for k, p in pids.items()}
    wait1 = {k: c.run_wait_seconds(p) for k, p in pids.items()}
    others = c.foreign_cpu(others0, c.cpu_snapshot(procs.pids()))
    redis_stats1 = c.redis_commandstats(redis_url)
    profiles = {k: c.stop_profiler(h) for k, h in profilers.items()}
    procs.check_alive()

    results = []
    for w in workers:
        w.send("finish")
        results.append(json.loads(" ".join((await w.expect_line("result", 60))[1:])))
    latencies = array.array("d")
    per_seq = array.array("I", [0]) * args.events
    for w in workers:
        latencies.frombytes(Path(w.out).read_bytes())
        ws = array.array("I")
        ws.frombytes(Path(w.out + ".seq").read_bytes())
        for s in range(args.events):
            per_seq[s] += ws[s]
    failed = set(pub["failed"])
    published = [s for s in range(pub["sent"]) if s not in failed]
    missing = sum(args.subscribers - per_seq[s] for s in published)
    stray = sum(per_seq[s] for s in range(args.events) if s in failed or s >= pub["sent"])
    received = sum(r["received"] for r in results)
    dup = sum(r["dup"] for r in results)
    ooo = sum(r["ooo"] for r in results)
    last_delivery = max((r["last"] for r in results), default=0.0)
    lat = sorted(latencies)
    window = max(1e-9, last_delivery - pub["first"])
    pub_window = max(1e-9, pub["last_response"] - pub["first"])
    rtts = pub["rtts"]

    print(f"events published: {len(published)} of {args.events} ({len(failed)} failed requests"
          f"{'; errors: ' + '; '.join(pub['errors']) if pub['errors'] else ''})")
    print(f"publish rate:     {len(published) / pub_window:.0f} events/s over {pub_window:.2f}s "
          f"({len(rtts)} HTTP requests, {len(rtts) / pub_window:.0f} req/s; request RTT p50 "
          f"{1000 * c.percentile(rtts, 50):.1f} ms, p99 {1000 * c.percentile(rtts, 99):.1f} ms)")
    print(f"deliveries:       {received} (expected {len(published) * args.subscribers})")
    print(f"delivery rate:    {received / window:.0f} deliveries/s over {window:.2f}s "
          f"(first publish -> last delivery)")
    print(f"latency ms:       p50 {1000 * c.percentile(lat, 50):.1f}  p90 {1000 * c.percentile(lat, 90):.1f}  "
          f"p99 {1000 * c.percentile(lat, 99):.1f}  max {1000 * (lat[-1] if lat else float('nan')):.1f}")
    print(f"missing:          {missing}")
    print(f"duplicates:       {dup}")
    print(f"out-of-order:     {ooo}")
    if stray:
        print(f"stray deliveries: {stray} (of events whose request failed)")
    errs = sum(r["errors"] + r["other"] for r in results)
    if errs:
        print(f"unexpected frames: {errs} (see subscriber logs)")
    if timed_out:
        print(f"WARNING: not every delivery arrived within --drain-timeout {args.drain_timeout}s")
    cpu_window = w1 - w0
    print(f"CPU over the {cpu_window:.2f}s window (first publish -> last delivery; 200% = both cores), and time "
          f"each process was runnable but waiting for a core:")
    for k in pids:
        used = cpu1[k] - cpu0[k]
        waited = wait1[k] - wait0[k]
        print(f"  {k:<18} {used:7.2f} s  {100 * used / cpu_window:5.0f}%   waited {100 * waited / cpu_window:4.0f}%")
    gw_us = 1e6 * sum(cpu1[k] - cpu0[k] for k in ("gateway0", "gateway1")) / max(1, received)
    sub_us = 1e6 * sum(cpu1[k] - cpu0[k] for k in pids if k.startswith("subscribers")) / max(1, received)
    api_us = 1e6 * (cpu1["trigger-api"] - cpu0["trigger-api"]) / max(1, len(rtts))
    total = sum(cpu1[k] - cpu0[k] for k in pids)
    print(f"  {'total':<18} {total:7.2f} s  {100 * total / cpu_window:5.0f}%")
    print(f"  {'other processes':<18} {others:7.2f} s  {100 * others / cpu_window:5.0f}%  (not this benchmark: "
          f"concurrent load on the machine)")
    print(f"CPU per unit:     gateways {gw_us:.2f} us/delivery, subscribers {sub_us:.2f} us/delivery, "
          f"trigger-api {api_us:.0f} us/request")
    redis_us = 1e6 * (cpu1["redis"] - cpu0["redis"]) / max(1, len(published))
    ops = {k: (n - redis_stats0.get(k, (0, 0.0))[0], us - redis_stats0.get(k, (0, 0.0))[1])
           for k, (n, us) in redis_stats1.items()}
    ops = {k: v for k, v in ops.items() if v[0] > 0 and k not in ("info", "ping")}
    per_event = ", ".join(f"{k} {n / max(1, len(published)):.2f} ({us / max(1, n):.1f} us)"
                          for k, (n, us) in sorted(ops.items(), key=lambda kv: -kv[1][0]))
    print(f"Redis per event:  {redis_us:.1f} us of redis-server CPU; commands (calls per event, Redis's "
          f"time per call): {per_event}")
    print(f"# after run: {c.machine_load()}")
    for k, path in profiles.items():
        if path is not None:
            print(f"profile of {k} (py-spy, {path}):")
            print(c.summarize_profile(path))
    if missing or dup or ooo or timed_out:
        raise SystemExit(1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--rate", type=float, default=0,
                   help="target events/s (0 = as fast as --concurrency in-flight requests allow)")
    p.add_argument("--concurrency", type=int, default=4, help="publisher lanes = max in-flight requests")
    p.add_argument("--batch", type=int, default=1, help="events per request; >1 uses batch_events (max 10)")
    p.add_argument("--data-size", type=int, default=200, help="bytes of event data")
    p.add_argument("--history-size", type=int, default=0,
                   help="the app keeps this many events per channel (docs/history.md); 0: no history")
    p.add_argument("--client-procs", type=int, default=2, help="subscriber processes")
    p.add_argument("--ramp-concurrency", type=int, default=50,
                   help="handshakes in flight per subscriber process (above ~100 per gateway, Herald's Redis "
                        "pool runs out: see README)")
    p.add_argument("--warmup", type=int, default=50, help="events sent (and ignored) before measuring")
    p.add_argument("--http", choices=["raw", "httpx"], default="raw",
                   help="publisher HTTP client: minimal keep-alive HTTP/1.1, or httpx.AsyncClient")
    p.add_argument("--max-seconds", type=float, default=90, help="stop publishing after this long")
    p.add_argument("--drain-timeout", type=float, default=30,
                   help="seconds to wait for deliveries after the last publish")
    c.add_source_args(p)
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with logs (and profiles)")
    p.add_argument("--profile", action="store_true",
                   help="sample the gateways and trigger-api with py-spy during the measured window "
                        "(implies --keep-logs)")
    # internal: subscriber worker mode
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--targets", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.patch and not args.herald_rev:
        p.error("--patch needs --herald-rev")
    if not 1 <= args.batch <= 10:
        p.error("--batch must be 1..10")
    if args.subscribers < 1 or args.events < 1 or args.concurrency < 1:
        p.error("--subscribers, --events and --concurrency must be positive")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        uvloop.run(worker_main(args))
        return
    c.raise_nofile(args.subscribers + 1024)
    c.run_benchmark("fanout", args, run, keep=args.keep_logs or args.profile)


if __name__ == "__main__":
    main()
