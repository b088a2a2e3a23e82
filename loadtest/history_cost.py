"""What channel history costs per event, measured in-process where the noise of a shared machine
matters least (docs/history.md, "Cost"):

- publish step: the HTTP API's step from validated events to the bus (envelopes, the choice of path,
  packing), on a bus that only packs: for an app without history and, on code that has it, for an app
  with history in memory mode;
- delivery: a gateway's handling of one bus message for N local sockets (unpack, frame once, queue on
  every socket), without and with a position;
- Redis: the history script against a bare PUBLISH on a private redis-server: Redis's own time per
  event (INFO commandstats) and the commands each event runs.

Run it against two revisions to compare (e.g. main and this branch); each measurement is the best of
--repeat runs (the least disturbed by other processes).

    .venv/bin/python loadtest/history_cost.py --herald-rev main
    .venv/bin/python loadtest/history_cost.py --herald-rev HEAD
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c


def child(args: argparse.Namespace) -> None:
    """Runs with the code under test on sys.path; prints one JSON object."""
    from gateway.connection import Connection
    from gateway.hub import Hub
    from shared.apps.config import AppConfig
    from shared.backend import memory_backend
    from shared.bus.base import Envelope

    # Code from before history published with the bus's publish_many. (Checked on the app settings:
    # the project's editable install could still import newer modules from the working tree.)
    has_history = "history_size" in AppConfig.__dataclass_fields__
    publish_channel_events = None
    if has_history:
        from shared.history.publish import publish_channel_events

    data = "x" * args.data_size
    results: dict[str, Any] = {}

    class PackingBus:
        """A bus that does what a real one does with an envelope before I/O: pack it."""

        def __init__(self) -> None:
            self.bytes = 0

        async def publish_many(self, envelopes: Any) -> None:
            for e in envelopes:
                self.bytes += len(e.pack())

        async def publish(self, envelope: Any) -> None:
            self.bytes += len(envelope.pack())

        def set_receiver(self, receiver: Any) -> None:
            pass

    async def publish_step(history_size: int) -> float:
        backend = memory_backend()
        app_fields: dict[str, Any] = {"id": "1", "key": "k", "secret": "s"}
        if history_size:
            app_fields["history_size"] = history_size
        app = AppConfig(**app_fields)
        if not history_size:
            backend.bus = PackingBus()  # type: ignore[assignment]
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for i in range(args.events):
                envelopes = [Envelope("1", "bench", "ev", data, exclude=None, origin="n", ts=1.0 + i)]
                if publish_channel_events is None:
                    await backend.bus.publish_many(envelopes)
                else:
                    await publish_channel_events(backend, app, envelopes)
            best = min(best, (time.perf_counter() - t0) / args.events)
        return best

    class CountingSink:
        closed = False

        def __init__(self) -> None:
            self.frames = 0

        def send(self, payload: bytes, wire: bytes | None = None) -> None:
            self.frames += 1

        def close(self, code: int, reason: str) -> None:
            pass

    async def delivery(with_position: bool) -> float:
        app = AppConfig(id="1", key="k", secret="s")
        hub = Hub(memory_backend().bus)
        for i in range(args.sockets):
            await hub.join(Connection(f"{i}.{i}", app, CountingSink(), 0.0), "bench", hold=False)
        packed = []
        for i in range(args.events):
            env = Envelope("1", "bench", "ev", data, origin="n", ts=1.0)
            if with_position:
                env.position = f"281474976710655-{i + 1}"
            packed.append(env.pack())
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for raw in packed:
                hub.deliver(Envelope.unpack(raw))
            best = min(best, (time.perf_counter() - t0) / args.events)
        return best

    async def main() -> None:
        results["publish_no_history_ns"] = 1e9 * await publish_step(0)
        if publish_channel_events is not None:
            results["publish_history_memory_ns"] = 1e9 * await publish_step(1000)
        results["delivery_no_history_ns_per_socket"] = 1e9 * await delivery(False) / args.sockets
        if has_history:
            results["delivery_history_ns_per_socket"] = 1e9 * await delivery(True) / args.sockets

    asyncio.run(main())
    print(json.dumps(results))


def redis_costs(args: argparse.Namespace, procs: c.Processes, src: str | None) -> dict[str, Any]:
    """Redis's own time per event for the history script and for a bare PUBLISH."""
    import redis

    sys.path.insert(0, src or str(c.REPO))
    try:
        from shared.bus.base import Envelope
        from shared.redis.scripts import load_script
    finally:
        sys.path.pop(0)
    try:
        source = load_script("history_publish")
    except FileNotFoundError:
        return {}
    _, url = c.start_redis(procs)
    client = redis.Redis.from_url(url)
    envelope = Envelope("1", "bench", "ev", "x" * args.data_size, origin="n", ts=time.time())
    sha = client.script_load(source)
    out: dict[str, Any] = {}
    for name, call in (
        ("publish", lambda p: p.publish("herald:ev:1:bench", envelope.pack())),
        ("history_script", lambda p: p.evalsha(sha, 1, "herald:hist:{herald:ev:1:bench}", "herald:ev:1:bench", 1000,
                                               3_600_000, "281474976710655", envelope.pack_open(), "0")),
    ):
        client.config_resetstat()
        pipe = client.pipeline(transaction=False)
        for i in range(args.events):
            call(pipe)
            if i % 500 == 499:
                pipe.execute()
        pipe.execute()
        stats = client.info("commandstats")
        top = "cmdstat_publish" if name == "publish" else "cmdstat_evalsha"
        out[f"redis_{name}_us"] = stats[top]["usec_per_call"]
        out[f"redis_{name}_commands"] = {k.removeprefix("cmdstat_"): round(v["calls"] / args.events, 2)
                                         for k, v in stats.items() if v["calls"] >= args.events // 2}
    client.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--sockets", type=int, default=500, help="local sockets in the channel, for the delivery")
    p.add_argument("--data-size", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is kept")
    c.add_source_args(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="herald-history-cost-") as tmp:
        procs = c.Processes(Path(tmp))
        try:
            src = c.export_rev(args.herald_rev, Path(tmp), args.patch) if args.herald_rev else args.herald_src
            print(f"# history_cost: {args.events} events of {args.data_size} bytes, {args.sockets} sockets, "
                  f"best of {args.repeat}; Herald code: {c.herald_code(src)}")
            c.wait_for_quiet(args.wait_quiet)
            env = {**os.environ, "PYTHONPATH": src or str(c.REPO)}
            out = subprocess.run([sys.executable, __file__, "--child", "--events", str(args.events),
                                  "--sockets", str(args.sockets), "--data-size", str(args.data_size),
                                  "--repeat", str(args.repeat)],
                                 capture_output=True, text=True, env=env, cwd=src or str(c.REPO), check=True)
            results = json.loads(out.stdout)
            results.update(redis_costs(args, procs, src))
        finally:
            procs.stop_all()
    for key, value in results.items():
        print(f"{key:<42} {value if isinstance(value, dict) else round(value, 1)}")


if __name__ == "__main__":
    main()
