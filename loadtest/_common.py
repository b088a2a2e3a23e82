"""Shared pieces of the load tests: process management, CPU/RSS readings, and a lean WebSocket client.

Everything listens on and connects to 127.0.0.1 only. Every process started here is registered in a
`Processes` group that is torn down in a `finally` (and by SIGTERM/SIGHUP, and by the kernel if this
process dies: children get PR_SET_PDEATHSIG=SIGKILL).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvloop

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

APP_ID = "1"
APP_KEY = "bench-key"
APP_SECRET = "bench-secret"


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGKILLs the child if this (single-threaded) parent dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def raise_nofile(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE (inherited by children) up to `wanted`, capped by the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Processes:
    """Children started by a benchmark, stopped in reverse order on `stop_all()`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        if "stdout" in kwargs:
            kwargs.setdefault("stderr", log)
        kwargs.setdefault("stdout", log)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
        # Own session: a terminal Ctrl-C reaches only us, and we stop the children in order.
        kwargs.setdefault("cwd", REPO)
        proc = subprocess.Popen(args, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent, **kwargs)
        log.close()
        self.procs.append((name, proc))
        return proc

    def pids(self) -> set[int]:
        """This process and every child started here (to tell our CPU use from other processes')."""
        return {os.getpid(), *(proc.pid for _, proc in self.procs)}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None and not name.startswith("py-spy"):
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def stop_all(self) -> None:
        """Newest first, each gone before the next is stopped (clients, then Herald, then Redis last,
        so Herald's close-time Redis calls still succeed)."""
        while self.procs:
            _name, proc = self.procs.pop()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@contextlib.contextmanager
def bench_environment(prefix: str, keep: bool = False) -> Iterator[Processes]:
    """A temp dir and a process group torn down on exit, Ctrl-C, SIGTERM or SIGHUP."""
    workdir = Path(tempfile.mkdtemp(prefix=f"herald-{prefix}-"))
    procs = Processes(workdir)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Ctrl-C works even if SIGINT was inherited as ignored (e.g. started with `&` from a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield procs
    finally:
        procs.stop_all()
        for s, handler in old.items():
            signal.signal(s, handler)
        if keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def start_redis(procs: Processes) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    proc = procs.start("redis", [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                                 "--dir", str(procs.workdir)])
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start:\n{procs.log_tail('redis')}")
        time.sleep(0.05)
    return proc, f"redis://{HOST}:{port}"


def write_apps_file(workdir: Path, **settings: Any) -> Path:
    """The benchmark app, with extra app settings (e.g. history_size) if given."""
    path = workdir / "apps.json"
    path.write_text(json.dumps({"apps": [{"id": APP_ID, "key": APP_KEY, "secret": APP_SECRET, **settings}]}))
    return path


def redis_commandstats(url: str) -> dict[str, tuple[int, float]]:
    """{command: (calls, total microseconds)} from INFO commandstats (commands run by scripts included)."""
    host, port = url.removeprefix("redis://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n")
        size = int(head[1:])  # a bulk string: $<length>\r\n<text>\r\n
        while len(body) < size:
            body += s.recv(65536)
    stats: dict[str, tuple[int, float]] = {}
    for line in body[:size].decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[8:].partition(":")
            fields = dict(kv.split("=") for kv in rest.split(","))
            stats[name] = (int(fields["calls"]), float(fields["usec"]))
    return stats


def start_herald(procs: Processes, name: str, command: str, apps_file: Path, redis_url: str | None,
                 extra: list[str] | None = None, src: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m herald COMMAND` on a free port; `src` runs another checkout's code (PYTHONPATH)."""
    port = free_port()
    args = [sys.executable, "-m", "herald", command, "--host", HOST, "--port", str(port),
            "--apps-file", str(apps_file), "--log-level", "warning", "--drain-seconds", "0"]
    if redis_url:
        args += ["--redis-url", redis_url]
    env = {"PYTHONPATH": str(Path(src).resolve())} if src else {}
    proc = procs.start(name, args + (extra or []), env=env, **({"cwd": src} if src else {}))
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready:\n{procs.log_tail(name)}")
        time.sleep(0.05)


# -- profiles (optional: `.venv/bin/pip install py-spy`) ------------------------------------------


def start_profiler(procs: Processes, name: str, pid: int) -> tuple[subprocess.Popen[bytes], Path] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("--profile: py-spy is not installed (.venv/bin/pip install py-spy); skipping", file=sys.stderr)
        return None
    out = procs.workdir / f"profile-{name}.txt"
    proc = procs.start(f"py-spy-{name}", [spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
                                          "--format", "raw", "--output", str(out)])
    return proc, out


def stop_profiler(handle: tuple[subprocess.Popen[bytes], Path] | None) -> Path | None:
    if handle is None:
        return None
    proc, out = handle
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    return out if out.exists() else None


def summarize_profile(path: Path, top: int = 12) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")" if " (" in f
                  else f for f in stack.split(";")]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; top self time:"]
    for frame, n in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    lines.append("  top inclusive:")
    for frame, n in sorted(incl_counts.items(), key=lambda kv: -kv[1])[: top + 4]:
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines)


def export_rev(rev: str, workdir: Path, patch: str | None = None) -> str:
    """A clean copy of Herald's server packages at git revision `rev` (for --herald-rev), so a run does
    not pick up uncommitted edits in the working tree; `patch` (a -p1 diff) is applied on top."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True, timeout=10).stdout.strip()
    dest = workdir / f"herald-{sha}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "herald", "gateway", "shared", "trigger_api"],
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    label = f"commit {sha}"
    if patch:
        subprocess.run(["patch", "-s", "-p1", "-d", str(dest), "-i", str(Path(patch).resolve())], check=True,
                       timeout=60)
        label += f" + {patch}"
    (dest / "SNAPSHOT").write_text(label + "\n")
    return str(dest)


def herald_code(src: str | None) -> str:
    """Which Herald code a run used: a --herald-src dir, or this checkout's commit (+ dirty flag)."""
    if src:
        snap = Path(src) / "SNAPSHOT"
        return (f"clean export of {snap.read_text().strip()}" if snap.exists() else f"{src} (--herald-src)")
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "herald", "gateway",
                                "shared", "trigger_api"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"checkout at {sha}" + (" + uncommitted server-code changes" if dirty.strip() else "")


def redis_info(url: str, section: str) -> dict[str, str]:
    host, port = url.removeprefix("redis://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while True:
            data += s.recv(65536)
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    out = {}
    for line in rest.decode().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


# -- /proc readings ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_wait_seconds(pid: int) -> float:
    """Time the process was runnable but waiting for a CPU (/proc/<pid>/schedstat, field 2): how much
    other processes on the machine held it back."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"loadavg {one:.2f} {five:.2f} {fifteen:.2f}, {os.cpu_count()} cores"


def cpu_snapshot(exclude: set[int]) -> dict[int, tuple[float, str]]:
    """CPU seconds of every process on the machine except `exclude`."""
    out: dict[int, tuple[float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            name = stat[stat.index("(") + 1: stat.rindex(")")]
            out[int(entry)] = (cpu_seconds(int(entry)), name)
        except (OSError, ValueError):
            continue
    return out


def foreign_cpu(before: dict[int, tuple[float, str]], after: dict[int, tuple[float, str]]) -> float:
    """CPU seconds other processes used between two snapshots (new processes count from zero; processes
    that exited in between are missed, so this is a lower bound)."""
    return sum(cpu - before.get(pid, (0.0, ""))[0] for pid, (cpu, _) in after.items())


def busy_processes(exclude: set[int], min_pct: float = 5.0, window_s: float = 1.0) -> list[str]:
    """Other processes using CPU right now (to report concurrent load honestly)."""
    before = cpu_snapshot(exclude)
    time.sleep(window_s)
    after = cpu_snapshot(exclude)
    busy = []
    for pid, (cpu, name) in after.items():
        if pid in before:
            pct = 100 * (cpu - before[pid][0]) / window_s
            if pct >= min_pct:
                busy.append(f"{name}[{pid}] {pct:.0f}%")
    return busy


def wait_for_quiet(max_wait_s: float, threshold_pct: float = 20.0) -> None:
    """Wait (at most max_wait_s) until other processes use under threshold_pct CPU over 2 s."""
    if max_wait_s <= 0:
        return
    deadline = time.monotonic() + max_wait_s
    me = {os.getpid()}
    while True:
        before = cpu_snapshot(me)
        time.sleep(2.0)
        used = 100 * foreign_cpu(before, cpu_snapshot(me)) / 2.0
        if used < threshold_pct:
            return
        if time.monotonic() > deadline:
            print(f"# machine still busy ({used:.0f}% CPU used by other processes) after waiting "
                  f"{max_wait_s:.0f}s; measuring anyway", file=sys.stderr)
            return


def rank(n: int, q: float) -> int:
    """The index of the q-th percentile among n sorted values (nearest rank)."""
    return min(n - 1, max(0, round(q / 100 * (n - 1))))


def percentile(sorted_values: Any, q: float) -> float:
    if not len(sorted_values):
        return float("nan")
    return float(sorted_values[rank(len(sorted_values), q)])


# -- a lean WebSocket client -------------------------------------------------------------------
#
# One asyncio.Protocol per socket, no task per socket: the handshake is written raw, server frames
# (unmasked, unfragmented text) are cut out of the byte stream by hand, and every complete frame goes
# to a callback. This costs a few microseconds per received frame, so a single client process can
# follow thousands of sockets without being the bottleneck of the servers it measures.


def masked_text_frame(payload: bytes) -> bytes:
    """A client->server text frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 65536:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return header + mask + body


FrameCallback = Callable[["WsClient", int, bytes, float], None]


class WsClient(asyncio.Protocol):
    """One WebSocket to Herald. `on_frame(client, opcode, payload, recv_time)` gets each server frame."""

    __slots__ = ("_buf", "closed", "handshaken", "index", "on_frame", "opened", "transport")

    def __init__(self, index: int, on_frame: FrameCallback) -> None:
        self.index = index
        self.on_frame = on_frame
        self.transport: Any = None
        self._buf = b""
        self.handshaken = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send_text(self, text: bytes) -> None:
        self.transport.write(masked_text_frame(text))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self._buf + data if self._buf else data
        pos = 0
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.abort()
                return
            self.handshaken = True
            self.opened.set_result(None)
            pos = end + 4
        n = len(buf)
        on_frame = self.on_frame
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2: pos + 4], "big")
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2: pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 9:  # WebSocket ping -> pong with the same payload
                self.transport.write(b"\x8a" + masked_text_frame(buf[start:end])[1:])
            else:
                on_frame(self, opcode, buf[start:end], now)
            pos = end
        self._buf = buf[pos:] if pos < n else b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


async def open_ws(port: int, path: str, index: int, on_frame: FrameCallback,
                  cls: type[WsClient] = WsClient) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: cls(index, on_frame), HOST, port)
    key = base64.b64encode(os.urandom(16)).decode()
    client.transport.write(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await client.opened
    return client


def pusher_path(key: str = APP_KEY) -> str:
    return f"/app/{key}?protocol=7&client=herald-loadtest&version=0.1"


def subscribe_message(channel: str) -> bytes:
    return json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()


PUSHER_PING = b'{"event":"pusher:ping"'
PUSHER_PONG = b'{"event":"pusher:pong","data":{}}'


def answer_pusher_ping(client: WsClient, payload: bytes) -> bool:
    """Reply to a server `pusher:ping` (sent after activity_timeout of silence); True if it was one."""
    if payload.startswith(PUSHER_PING):
        client.send_text(PUSHER_PONG)
        return True
    return False


def run_benchmark(name: str, args: Any, run: Callable[[Any, Any], Awaitable[None]], keep: bool) -> None:
    """Run `run(args, procs)` on uvloop inside the benchmark environment (temp dir, child processes
    torn down on every exit path), with `--herald-rev` exported first when given."""
    with bench_environment(name, keep=keep) as procs:
        if args.herald_rev:
            args.herald_src = export_rev(args.herald_rev, procs.workdir, args.patch)
        try:
            uvloop.run(run(args, procs))
        except KeyboardInterrupt:
            print("interrupted; stopping everything", file=sys.stderr)
            raise SystemExit(130) from None


def add_source_args(p: Any) -> None:
    """Flags both benchmarks share: which Herald code runs, and waiting for a quiet machine."""
    p.add_argument("--herald-src", metavar="DIR",
                   help="run Herald from another checkout (put on PYTHONPATH), e.g. to compare a patch")
    p.add_argument("--herald-rev", metavar="REV",
                   help="run Herald as committed at git revision REV (a clean `git archive` export), ignoring "
                        "uncommitted changes in the working tree")
    p.add_argument("--patch", metavar="FILE", help="with --herald-rev: apply this -p1 diff to the export "
                                                   "(e.g. a fix under review)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="first wait up to S seconds for other processes to use under 20%% CPU")
