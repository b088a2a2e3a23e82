"""Memory per idle connection and handshake rate of one `herald serve` (all-in-one, in-memory state).

Starts Herald, warms it up with a few connections, reads its RSS, then opens N WebSockets (each one
subscribed to one of a few public channels) with a bounded number of handshakes in flight, reads RSS
again and prints KiB per connection and the handshake rate. Then it checks that every socket is alive
(one event per channel through the HTTP API must reach all N), measures the server's CPU while the
sockets sit idle, and closes everything.

    .venv/bin/python loadtest/connections.py                     # 5,000 connections
    .venv/bin/python loadtest/connections.py --connections 19000 # near this sandbox's fd ceiling
    .venv/bin/python loadtest/connections.py --redis             # cluster mode (gateway state in Redis)

RLIMIT_NOFILE is raised to what N needs (children inherit it), up to the hard limit; this sandbox's hard
limit is 20,000, which caps N a little below that (each side needs N sockets plus its own fds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.request

import _common as c
import orjson

FD_HEADROOM = 200


def trigger(port: int, channels: list[str], name: str) -> None:
    from shared.protocol.signatures import body_md5, sign_http

    path = f"/apps/{c.APP_ID}/events"
    for i in range(0, len(channels), 100):
        body = orjson.dumps({"name": name, "channels": channels[i:i + 100], "data": '{"ping":1}'})
        params = [("auth_key", c.APP_KEY), ("auth_timestamp", str(int(time.time()))), ("auth_version", "1.0"),
                  ("body_md5", body_md5(body))]
        sig = sign_http(c.APP_SECRET, "POST", path, params)
        query = "&".join(f"{k}={v}" for k, v in params) + "&auth_signature=" + sig
        req = urllib.request.Request(f"http://{c.HOST}:{port}{path}?{query}", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            if resp.status != 200:
                raise RuntimeError(f"trigger failed: {resp.status} {resp.read()[:200]!r}")


class Clients:
    def __init__(self, port: int, channels: list[str]) -> None:
        self.port = port
        self.channels = channels
        self.clients: list[c.WsClient] = []
        self.established: dict[int, asyncio.Future[float]] = {}
        self.subscribed: dict[int, asyncio.Future[float]] = {}
        self.pings_received = 0
        self.unexpected: list[bytes] = []
        self.next_index = 0
        self.failures: list[str] = []
        self.subscribed_ok = 0

    def on_frame(self, client: c.WsClient, opcode: int, payload: bytes, now: float) -> None:
        if opcode != 1 or c.answer_pusher_ping(client, payload):
            return
        i = client.index
        if payload.startswith(b'{"event":"check"'):
            self.pings_received += 1
        elif b'"pusher:connection_established"' in payload:
            self.established[i].set_result(time.monotonic())
            client.send_text(c.subscribe_message(self.channels[i % len(self.channels)]))
        elif b'"pusher_internal:subscription_succeeded"' in payload:
            self.subscribed[i].set_result(time.monotonic())
        else:
            self.unexpected.append(payload[:200])
            fut = self.subscribed[i]
            if not fut.done() and b"error" in payload:
                fut.set_exception(RuntimeError(f"socket {i}: {payload[:200]!r}"))

    async def open_many(self, n: int, concurrency: int) -> tuple[list[float], list[float]]:
        """Open n subscribed sockets; returns per-socket (TCP connect -> established) and (-> subscribed)."""
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        to_established: list[float] = []
        to_subscribed: list[float] = []

        async def one(i: int) -> None:
            async with sem:
                self.established[i] = loop.create_future()
                self.subscribed[i] = loop.create_future()
                t0 = time.monotonic()
                try:
                    client = await c.open_ws(self.port, c.pusher_path(), i, self.on_frame)
                    self.clients.append(client)
                    t1 = await asyncio.wait_for(self.established[i], 30)
                    t2 = await asyncio.wait_for(self.subscribed[i], 30)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
                to_established.append(t1 - t0)
                to_subscribed.append(t2 - t0)
                self.subscribed_ok += 1

        first = self.next_index
        self.next_index += n
        await asyncio.gather(*(one(i) for i in range(first, first + n)))
        return sorted(to_established), sorted(to_subscribed)

    async def close_all(self) -> None:
        for client in self.clients:
            client.transport.close()
        if self.clients:
            await asyncio.wait([client.closed for client in self.clients], timeout=30)
        self.clients.clear()


async def run(args: argparse.Namespace, procs: c.Processes) -> None:
    print(f"# connections: {args.connections} sockets over {args.channels} channels, {args.concurrency} "
          f"handshakes in flight, {'cluster mode (Redis)' if args.redis else 'in-memory'}")
    print(f"# Herald code: {c.herald_code(args.herald_src)}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"# RLIMIT_NOFILE {args.nofile}")
    c.wait_for_quiet(args.wait_quiet)
    print(f"# before start: {c.machine_load()}; other busy processes: "
          f"{', '.join(c.busy_processes({os.getpid()})) or 'none'}")
    redis_url = None
    redis_proc = None
    if args.redis:
        redis_proc, redis_url = c.start_redis(procs)
    apps = c.write_apps_file(procs.workdir)
    server, port = c.start_herald(procs, "herald", "serve", apps, redis_url, src=args.herald_src)
    channels = [f"idle-{i}" for i in range(args.channels)]
    clients = Clients(port, channels)

    rss_start = c.rss_kib(server.pid)
    if args.warmup:
        await clients.open_many(args.warmup, min(args.concurrency, args.warmup))
        await clients.close_all()
    await asyncio.sleep(2.0)
    rss_base = c.rss_kib(server.pid)

    cpu0 = (c.cpu_seconds(server.pid), c.cpu_seconds(os.getpid()))
    redis_cpu0 = c.cpu_seconds(redis_proc.pid) if redis_proc else 0.0
    profiler = c.start_profiler(procs, "herald", server.pid) if args.profile else None
    if profiler:
        await asyncio.sleep(1.0)  # py-spy attaches
    others0 = c.cpu_snapshot(procs.pids())
    wait0 = c.run_wait_seconds(server.pid)
    t0 = time.monotonic()
    clients.subscribed_ok = 0
    clients.failures.clear()
    to_est, to_sub = await clients.open_many(args.connections, args.concurrency)
    ramp = time.monotonic() - t0
    cpu1 = (c.cpu_seconds(server.pid), c.cpu_seconds(os.getpid()))
    redis_cpu1 = c.cpu_seconds(redis_proc.pid) if redis_proc else 0.0
    others = c.foreign_cpu(others0, c.cpu_snapshot(procs.pids()))
    waited = c.run_wait_seconds(server.pid) - wait0
    profile = c.stop_profiler(profiler)
    procs.check_alive()

    await asyncio.sleep(args.settle)
    rss_after = c.rss_kib(server.pid)
    n = clients.subscribed_ok
    if clients.failures:
        print(f"FAILED:           {len(clients.failures)} of {args.connections} sockets did not get subscribed, "
              f"e.g. {clients.failures[0]}")
    print(f"server RSS:       {rss_start / 1024:.1f} MiB at start, {rss_base / 1024:.1f} MiB after "
          f"{args.warmup} warm-up sockets, {rss_after / 1024:.1f} MiB with {n} idle sockets")
    opened = max(1, len(clients.clients))
    print(f"memory/conn:      {(rss_after - rss_base) / opened:.1f} KiB per idle subscribed connection "
          f"(server RSS delta {(rss_after - rss_base) / 1024:.1f} MiB / {opened} open sockets)")
    if redis_url:
        redis_after = int(c.redis_info(redis_url, "memory")["used_memory"])
        keys = c.redis_info(redis_url, "keyspace").get("db0", "keys=0").split(",")[0]
        print(f"redis:            {keys.replace('keys=', '')} keys, used_memory {redis_after / 1024:.0f} KiB "
              f"(Herald keeps counters per channel and node, not per socket)")
    print(f"handshake rate:   {n / ramp:.0f} connections/s ({n} connected + subscribed in {ramp:.2f}s)")
    print(f"handshake ms:     connect->established p50 {1000 * c.percentile(to_est, 50):.1f} "
          f"p99 {1000 * c.percentile(to_est, 99):.1f}; connect->subscribed p50 "
          f"{1000 * c.percentile(to_sub, 50):.1f} p99 {1000 * c.percentile(to_sub, 99):.1f} "
          f"max {1000 * c.percentile(to_sub, 100):.1f}")
    server_cpu, client_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    line = (f"ramp CPU:         herald {server_cpu:.2f}s ({100 * server_cpu / ramp:.0f}%, "
            f"{1e6 * server_cpu / opened:.0f} us/connection), client (this process) {client_cpu:.2f}s "
            f"({100 * client_cpu / ramp:.0f}%)")
    if redis_proc:
        line += f", redis {redis_cpu1 - redis_cpu0:.2f}s ({100 * (redis_cpu1 - redis_cpu0) / ramp:.0f}%)"
    print(line + f"; other processes {100 * others / ramp:.0f}%")
    print(f"ramp CPU wait:    herald was runnable but waiting for a core {100 * waited / ramp:.0f}% of the ramp "
          f"(time lost to CPU contention)")

    idle0 = c.cpu_seconds(server.pid)
    await asyncio.sleep(args.idle_seconds)
    idle = c.cpu_seconds(server.pid) - idle0
    print(f"idle CPU:         herald {100 * idle / args.idle_seconds:.1f}% over {args.idle_seconds:.0f}s with "
          f"{n} idle sockets")

    t_check = time.monotonic()
    await asyncio.to_thread(trigger, port, channels, "check")
    deadline = time.monotonic() + 30
    while clients.pings_received < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    print(f"liveness check:   {clients.pings_received}/{n} sockets got one event per channel "
          f"({1000 * (time.monotonic() - t_check):.0f} ms for the broadcast)")
    if clients.unexpected:
        print(f"unexpected frames: {len(clients.unexpected)}, e.g. {clients.unexpected[0]!r}")
    procs.check_alive()
    await clients.close_all()
    print(f"# after run: {c.machine_load()}")
    if profile is not None:
        print(f"profile of herald during the ramp (py-spy, {profile}):")
        print(c.summarize_profile(profile, 20))
    if clients.pings_received < n or clients.failures:
        raise SystemExit(1)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", "-n", type=int, default=5000)
    p.add_argument("--channels", type=int, default=10, help="public channels; socket i joins channel i %% K")
    p.add_argument("--concurrency", type=int, default=50,
                   help="handshakes in flight (in --redis mode keep it under ~100: see README)")
    p.add_argument("--warmup", type=int, default=100, help="sockets opened and closed before the baseline RSS")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between the ramp and the RSS reading")
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--redis", action="store_true", help="cluster mode: herald serve --redis-url (own redis-server)")
    c.add_source_args(p)
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--profile", action="store_true",
                   help="sample herald with py-spy during the ramp (implies --keep-logs)")
    args = p.parse_args()
    if args.patch and not args.herald_rev:
        p.error("--patch needs --herald-rev")
    if args.connections < 1 or args.channels < 1 or args.concurrency < 1:
        p.error("--connections, --channels and --concurrency must be positive")
    return args


def main() -> None:
    args = parse_args()
    args.nofile = c.raise_nofile(args.connections + args.warmup + FD_HEADROOM)
    if args.connections + FD_HEADROOM > args.nofile:
        sys.exit(f"connections.py: {args.connections} connections need RLIMIT_NOFILE >= "
                 f"{args.connections + FD_HEADROOM} but the limit is {args.nofile} (hard limit reached); "
                 f"use --connections {args.nofile - FD_HEADROOM} or less")
    c.run_benchmark("connections", args, run, keep=args.keep_logs or args.profile)


if __name__ == "__main__":
    main()
