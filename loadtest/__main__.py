"""`python -m loadtest [SCENARIO ...]`: Herald's benchmarks, optionally side by side with another server.

    .venv/bin/python -m loadtest                           # every scenario against Herald from this checkout
    .venv/bin/python -m loadtest --compare soketi          # the same, then soketi 1.6.1, one table with ratios
    .venv/bin/python -m loadtest connect publish --json out.json
    .venv/bin/python -m loadtest handshakes --target ws://herald.example:6001 --app-id 1 --app-key K --app-secret S

Scenarios (default: all):
  handshakes   bare WebSocket handshakes (TCP connect + upgrade until the 101), --in-flight at once
  connect      full connect: handshake, connection_established, a signed private-channel subscribe
  publish      signed POST /apps/{id}/events, a new TCP connection per request, --publish-in-flight at once
  api-cpu      the same against Herald's trigger API in cluster mode (Redis): its CPU per request
  memory       RSS per idle subscribed socket at --memory-sockets sockets (local servers only)
  latency      trigger-to-client latency at --rate events/s to --subscribers sockets; Herald and soketi run as
               two nodes over Redis here (Herald: 2 gateways + trigger API)
  storm        latency of --storm-subscribers existing subscribers while --storm-sockets new sockets connect
  fanout       deliveries/s to 1,000 and 10,000 subscribers of one channel, events via /batch_events

Local servers are started fresh for each scenario on 127.0.0.1 and stopped after it; the other server of
--compare runs the same scenario right after, so both see the same machine state. Progress goes to
stderr, the table to stdout; --json writes every measure too. Remote targets (--target, or --compare URL)
must be plain ws:// or http:// URLs; their CPU and memory columns are n/a.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from loadtest import _common as c
from loadtest import scenarios as s
from loadtest import targets as t

SCENARIOS = ["handshakes", "connect", "publish", "api-cpu", "memory", "latency", "storm", "fanout"]
# Which way is better, per measure name suffix (for the reader of the table).
HIGHER_IS_BETTER = ("per_s",)
FD_HEADROOM = 500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default all)")
    p.add_argument("--compare", metavar="soketi|URL",
                   help="run every scenario against this server too and print the ratio")
    p.add_argument("--target", metavar="URL", help="load a deployed server instead of starting Herald")
    p.add_argument("--app-id", default=t.APP_ID)
    p.add_argument("--app-key", default=t.APP_KEY)
    p.add_argument("--app-secret", default=t.APP_SECRET)
    p.add_argument("--json", metavar="FILE", help="also write all measures as JSON ('-' for stdout)")
    p.add_argument("--handshakes", type=int, default=5000, help="sockets per connect storm (default 5000)")
    p.add_argument("--in-flight", type=int, default=100, help="handshakes in flight (default 100)")
    p.add_argument("--publish-requests", type=int, default=20000)
    p.add_argument("--publish-in-flight", type=int, default=16)
    p.add_argument("--memory-sockets", type=int, default=10000)
    p.add_argument("--subscribers", type=int, default=1000, help="latency scenario subscribers")
    p.add_argument("--rate", type=float, default=100.0, help="events/s in the latency and storm scenarios")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency scenario")
    p.add_argument("--storm-subscribers", type=int, default=1000)
    p.add_argument("--storm-sockets", type=int, default=5000)
    p.add_argument("--fanout-subscribers", default="1000,10000", help="comma-separated subscriber counts")
    p.add_argument("--client-procs", type=int, default=2, help="client processes per scenario (default 2)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each scenario N times (alternating which server goes first) and report medians")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (printed path)")
    p.add_argument("--profile", action="store_true",
                   help="sample Herald's processes with py-spy during each scenario (pip install py-spy) and print "
                        "the top functions; implies --keep-logs")
    c.add_source_args(p)
    args = p.parse_args(argv)
    unknown = [x for x in args.scenarios if x not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = args.scenarios or SCENARIOS
    if args.patch and not args.herald_rev:
        p.error("--patch needs --herald-rev")
    if args.repeat < 1:
        p.error("--repeat must be 1 or more")
    return args


Starter = Callable[[c.Processes, bool], t.Target]


def starters(args: argparse.Namespace) -> list[tuple[str, Starter]]:
    """(name, start(procs, cluster)) for the primary target and the --compare one."""
    def herald(procs: c.Processes, cluster: bool) -> t.Target:
        return t.herald_cluster(procs, args.herald_src) if cluster else t.herald_single(procs, args.herald_src)

    def soketi(procs: c.Processes, cluster: bool) -> t.Target:
        return t.soketi_cluster(procs) if cluster else t.soketi_single(procs)

    def url(name: str, address: str) -> Starter:
        return lambda procs, cluster: t.remote(name, address, args.app_id, args.app_key, args.app_secret)

    out: list[tuple[str, Starter]] = [("herald", herald) if not args.target else (args.target, url(args.target,
                                                                                                     args.target))]
    if args.compare == "soketi":
        out.append(("soketi", soketi))
    elif args.compare:
        out.append((args.compare, url(args.compare, args.compare)))
    return out


def servers_alive(procs: c.Processes) -> None:
    """The servers must have survived the scenario (client processes exit when done)."""
    for name, proc in procs.procs:
        if "-client" not in name and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")


async def one(args: argparse.Namespace, scenario: str, start: Starter, name: str, opts: s.Options
              ) -> dict[str, s.Measures]:
    """Run one scenario against one target (freshly started if local); returns {row label: measures}."""
    if scenario == "api-cpu" and name != "herald":
        return {}
    if scenario == "memory" and name not in ("herald", "soketi"):
        return {}
    with c.bench_environment(f"bench-{scenario}", keep=args.keep_logs or args.profile) as procs:
        cluster = scenario in ("latency", "api-cpu")
        target = start(procs, cluster)
        profilers = {}
        if args.profile and name == "herald":
            profilers = {role: c.start_profiler(procs, f"{scenario}-{role}", pid)
                         for role, pid in target.pids.items() if role != "redis"}
            await asyncio.sleep(1.0)  # py-spy attaches
        try:
            return await run_scenario(procs, scenario, target, opts)
        finally:
            for role, handle in profilers.items():
                path = c.stop_profiler(handle)
                if path is not None:
                    print(f"profile of {name} {role} during {scenario} (py-spy, {path}):\n"
                          f"{c.summarize_profile(path, 20)}", file=sys.stderr)


async def run_scenario(procs: c.Processes, scenario: str, target: t.Target, opts: s.Options
                   ) -> dict[str, s.Measures]:
    runs: dict[str, Callable[[], Awaitable[s.Measures]]] = {
        "handshakes": lambda: s.connect_storm(procs, target, opts, full=False),
        "connect": lambda: s.connect_storm(procs, target, opts, full=True),
        "publish": lambda: s.http_publish(procs, target, opts),
        "api-cpu": lambda: s.http_publish(procs, target, opts, role="trigger-api"),
        "memory": lambda: s.memory(procs, target, opts),
        "latency": lambda: s.latency(procs, target, opts),
        "storm": lambda: s.storm(procs, target, opts),
    }
    if scenario == "fanout":
        out = {}
        for n in opts.fanout_subscribers:
            out[f"fanout {n}"] = await s.fanout(procs, target, opts, n)
            servers_alive(procs)
        return out
    measures = await runs[scenario]()
    servers_alive(procs)
    return {scenario: measures}


def median_of(runs: list[dict[str, s.Measures]]) -> dict[str, s.Measures]:
    """Per row and measure, the median over repeated runs (the single run when not repeated)."""
    out: dict[str, s.Measures] = {}
    for run in runs:
        for label, measures in run.items():
            for key in measures:
                values = sorted(v for r in runs if (v := r.get(label, {}).get(key)) is not None)
                out.setdefault(label, {})[key] = statistics.median(values) if values else None
    return out


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: dict[str, dict[str, s.Measures]], names: list[str]) -> str:
    rows = [["scenario", "measure", *names] + (["ratio"] if len(names) == 2 else [])]
    labels: list[str] = []
    for per_target in results.values():
        for label in per_target:
            if label not in labels:
                labels.append(label)
    for label in labels:
        keys: list[str] = []
        for name in names:
            for k in results.get(name, {}).get(label, {}):
                if k not in keys:
                    keys.append(k)
        for k in keys:
            vals = [results.get(name, {}).get(label, {}).get(k) for name in names]
            arrow = "↑" if k.endswith(HIGHER_IS_BETTER) else "↓"
            row = [label, f"{k} {arrow}", *map(fmt, vals)]
            if len(names) == 2:
                a, b = vals
                row.append(f"{a / b:.2f}x" if a is not None and b else "")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    opts = s.Options(
        handshakes=args.handshakes, in_flight=args.in_flight, publish_requests=args.publish_requests,
        publish_in_flight=args.publish_in_flight, memory_sockets=args.memory_sockets,
        latency_subscribers=args.subscribers, latency_rate=args.rate, latency_seconds=args.seconds,
        storm_subscribers=args.storm_subscribers, storm_sockets=args.storm_sockets,
        fanout_subscribers=[int(x) for x in args.fanout_subscribers.split(",") if x],
        client_procs=args.client_procs, quiet=args.quiet,
    )
    targets = starters(args)
    names = [name for name, _ in targets]
    print(f"# python -m loadtest {' '.join(sys.argv[1:])}")
    print(f"# Herald code: {c.herald_code(args.herald_src)}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"# machine: {os.cpu_count()} cores; before start: {c.machine_load()}")
    results: dict[str, dict[str, s.Measures]] = {name: {} for name in names}
    failures: list[str] = []
    started = time.monotonic()
    for scenario in args.scenarios:
        runs: dict[str, list[dict[str, s.Measures]]] = {name: [] for name in names}
        for repeat in range(args.repeat):
            c.wait_for_quiet(args.wait_quiet)
            # Alternate which server goes first, so a load change on the machine hits both alike.
            for name, start in targets if repeat % 2 == 0 else targets[::-1]:
                if not args.quiet:
                    print(f"{scenario} on {name} ({c.machine_load()})", file=sys.stderr)
                try:
                    runs[name].append(await one(args, scenario, start, name, opts))
                except Exception as exc:  # one failing scenario must not lose the others' numbers
                    failure = f"{name} {scenario} FAILED: {type(exc).__name__}: {exc}"
                    print(f"  {failure}", file=sys.stderr)
                    failures.append(failure)
        for name in names:
            results[name].update(median_of(runs[name]))
    print(f"# after run ({time.monotonic() - started:.0f}s): {c.machine_load()}")
    print(table(results, names))
    for failure in failures:
        print(f"# {failure}")
    if args.json:
        doc = {"argv": sys.argv[1:], "herald_code": c.herald_code(args.herald_src), "time": time.time(),
               "targets": names, "results": results, "failures": failures}
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    c.raise_nofile(max(args.memory_sockets, args.handshakes, args.storm_sockets) * 2 + FD_HEADROOM)
    with c.bench_environment("bench-src", keep=False) as procs:
        if args.herald_rev:
            args.herald_src = c.export_rev(args.herald_rev, procs.workdir, args.patch)
        try:
            raise SystemExit(uvloop.run(run(args)))
        except KeyboardInterrupt:
            print("interrupted; stopping everything", file=sys.stderr)
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
