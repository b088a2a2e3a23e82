"""How long `herald:recover` takes, and what it costs a gateway (docs/history.md, "Replays").

Starts its own redis-server, two `herald gateway` processes and a `herald trigger-api` (an app with
history_size 20000). For each gap size it publishes that many events to a fresh channel while a
client is "away" (it holds the position it had), then measures, from sending `herald:recover` to the
`pusher_internal:herald_recovered` answer:

- on gateway 0, which kept serving the channel (another socket stayed subscribed): the replay comes
  from the gateway's cache of frames it delivered;
- on gateway 1, which had no socket in the channel: the replay is read from Redis (and then cached);
- `--concurrent` clients on gateway 1 recovering the same gap at once (a node's share of a rolling
  restart): the time until the last is answered, and the gateway's CPU for all of them.

    .venv/bin/python loadtest/recovery.py
    .venv/bin/python loadtest/recovery.py --gaps 100,1000,5000 --concurrent 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import _common as c
import orjson
from websockets.asyncio.client import ClientConnection, connect

HISTORY_SIZE = 20_000


def signed(path: str, body: bytes) -> str:
    from shared.protocol.signatures import body_md5, sign_http

    params = [("auth_key", c.APP_KEY), ("auth_timestamp", str(int(time.time()))), ("auth_version", "1.0"),
              ("body_md5", body_md5(body))]
    return path + "?" + "&".join(f"{k}={v}" for k, v in params) + "&auth_signature=" + sign_http(
        c.APP_SECRET, "POST", path, params)


async def publish(api_port: int, channel: str, count: int, size: int) -> None:
    """`count` events to `channel`, ten per batch request, four requests in flight."""
    import httpx

    path = f"/apps/{c.APP_ID}/batch_events"
    data = json.dumps({"p": "x" * size})
    async with httpx.AsyncClient(base_url=f"http://{c.HOST}:{api_port}", timeout=30) as http:
        sem = asyncio.Semaphore(4)

        async def one(start: int) -> None:
            body = orjson.dumps({"batch": [{"channel": channel, "name": "ev", "data": data}
                                           for _ in range(start, min(count, start + 10))]})
            async with sem:
                response = await http.post(signed(path, body), content=body,
                                           headers={"Content-Type": "application/json"})
                response.raise_for_status()

        # In order per request lane is enough: positions are assigned by Redis anyway.
        await asyncio.gather(*(one(s) for s in range(0, count, 10)))


async def subscribed(port: int, channel: str) -> tuple[ClientConnection, str | None]:
    ws = await connect(f"ws://{c.HOST}:{port}{c.pusher_path()}", max_size=None)
    assert orjson.loads(await ws.recv())["event"] == "pusher:connection_established"
    await ws.send(orjson.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).decode())
    while True:
        frame = orjson.loads(await ws.recv())
        if frame["event"] == "pusher_internal:subscription_succeeded":
            return ws, frame.get("position")


async def recover(ws: ClientConnection, channel: str, position: str) -> tuple[float, int, dict[str, Any]]:
    """(seconds to the answer, events replayed before it, the answer)."""
    t0 = time.perf_counter()
    request = {"event": "herald:recover", "channel": channel, "data": {"position": position}}
    await ws.send(orjson.dumps(request).decode())
    frames = 0
    while True:
        raw = await ws.recv()
        frame = orjson.loads(raw)
        if frame["event"] == "pusher_internal:herald_recovered":
            return time.perf_counter() - t0, frames, orjson.loads(frame["data"])
        frames += 1


async def run(args: argparse.Namespace, procs: c.Processes) -> None:
    print(f"# recovery: gaps {args.gaps}, {args.data_size}-byte events, {args.concurrent} concurrent clients; "
          f"Herald code: {c.herald_code(args.herald_src)}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    c.wait_for_quiet(args.wait_quiet)
    _, redis_url = c.start_redis(procs)
    apps = c.write_apps_file(procs.workdir, history_size=HISTORY_SIZE, history_ttl_s=3600)
    gws = [c.start_herald(procs, f"gateway{i}", "gateway", apps, redis_url, src=args.herald_src) for i in range(2)]
    api, api_port = c.start_herald(procs, "trigger-api", "trigger-api", apps, redis_url, src=args.herald_src)
    [(gw0, port0), (gw1, port1)] = gws
    print(f"{'gap':>6}  {'cache (gw0) ms':>14}  {'store (gw1) ms':>14}  events")
    for gap in args.gaps:
        channel = f"rec-{gap}"
        keeper, _ = await subscribed(port0, channel)  # keeps gateway 0 in the channel
        away, start = await subscribed(port0, channel)
        assert start is not None, "the channel has no history: is this Herald code older than history?"
        await away.close()
        await publish(api_port, channel, gap, args.data_size)
        # Every event reached gateway 0 (the keeper got the last) before measuring.
        received = 0
        while received < gap:
            if orjson.loads(await keeper.recv())["event"] == "ev":
                received += 1
        results = []
        for port in (port0, port1):
            ws, _ = await subscribed(port, channel)
            seconds, frames, answer = await recover(ws, channel, start)
            assert answer["recovered"] == (frames == gap), (answer, frames)
            results.append(f"{1000 * seconds:.1f}" if answer["recovered"] else f"refused: {answer['reason']}")
            await ws.close()
        print(f"{gap:>6}  {results[0]:>14}  {results[1]:>14}  {gap}")
        await keeper.close()
    if args.concurrent:
        gap = 1000
        channel = f"rec-many-{gap}"
        first, start = await subscribed(port0, channel)
        assert start is not None
        await first.close()
        await publish(api_port, channel, gap, args.data_size)
        clients = [(await subscribed(port1, channel))[0] for _ in range(args.concurrent)]
        cpu0 = c.cpu_seconds(gw1.pid)
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(recover(ws, channel, start) for ws in clients))
        elapsed = time.perf_counter() - t0
        cpu = c.cpu_seconds(gw1.pid) - cpu0
        assert all(answer["recovered"] and frames == gap for _, frames, answer in outcomes)
        slowest = max(seconds for seconds, _, _ in outcomes)
        print(f"{args.concurrent} clients recovering the same {gap}-event gap at once on gateway 1: all answered "
              f"in {1000 * elapsed:.0f} ms (slowest {1000 * slowest:.0f} ms); gateway CPU {1000 * cpu:.0f} ms = "
              f"{1e6 * cpu / (args.concurrent * gap):.2f} us per replayed event")
        for ws in clients:
            await ws.close()
    del gw0, api


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gaps", type=lambda s: [int(x) for x in s.split(",")],
                   default=[100, 1000, 2000, 5000, 7500, 10000])
    p.add_argument("--data-size", type=int, default=200)
    p.add_argument("--concurrent", type=int, default=100)
    c.add_source_args(p)
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args()
    c.raise_nofile(args.concurrent + 1024)
    c.run_benchmark("recovery", args, run, keep=args.keep_logs)


if __name__ == "__main__":
    main()
