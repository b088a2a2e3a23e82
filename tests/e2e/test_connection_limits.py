"""Hostile clients on every listener: a client that floods WebSocket pings and never reads, header floods,
slowloris requests and half-sent bodies. Each is cut off with a bounded cost, measured on the real
Herald process from /proc (RSS and open file descriptors).

The timeouts are made short through the environment (`HERALD_HEADER_TIMEOUT`, `HERALD_BODY_TIMEOUT`),
so the tests wait for Herald's answers, not for the defaults.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import HeraldProcess, running_herald

APP = {"id": "51", "key": "limits-key", "secret": "limits-secret"}
SHORT_TIMEOUTS = {"HERALD_HEADER_TIMEOUT": "0.5", "HERALD_BODY_TIMEOUT": "0.5"}
# What the client may send before Herald must have reacted; far beyond every bound under test.
FLOOD_LIMIT_BYTES = 64 * 1024 * 1024
# Herald may keep this much more RSS after a flood than before it (the per-socket bound is 4 MiB).
RSS_SLACK_KIB = 24 * 1024
# Longest a test waits for one reaction from Herald (it should take well under a second).
REACTION_S = 10.0
SLOWLORIS_SOCKETS = 20


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(condition: object, timeout: float = REACTION_S) -> bool:
    """Poll a /proc reading until it holds (the server's fd table has no event to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {data[:300]!r}")
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes (a timeout here means it kept the connection open)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open; got {data[:300]!r}") from None
    except ConnectionResetError:
        pass
    return data


def websocket(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(REACTION_S)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /app/{APP['key']}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    read_until(sock, b"pusher:connection_established")
    return sock


# -- WebSocket pings nobody reads ----------------------------------------------------------------


def test_unread_pongs_count_against_the_slow_reader_bound(tmp_path: Path) -> None:
    """A client flooding pings without reading gets its pongs queued; past the 4 MiB per-socket bound
    Herald drops it instead of growing."""
    with running_herald(tmp_path, apps=[APP]) as herald:
        pid = herald.proc.pid
        sock = websocket(herald.port, rcvbuf=4096)
        fds = open_fds(pid)
        rss_before = rss_kib(pid)
        flood = masked(0x9, b"p" * 125) * 2000
        sent = 0
        dropped = False
        try:
            while sent < FLOOD_LIMIT_BYTES:
                sock.sendall(flood)
                sent += len(flood)
        except (ConnectionResetError, BrokenPipeError):
            dropped = True
        except TimeoutError:
            pass  # the server stopped reading but kept the socket: not dropped
        grown = rss_kib(pid) - rss_before
        sock.close()
        assert dropped, f"{sent >> 20} MiB of unread pings later the socket is still open (RSS +{grown >> 10} MiB)"
        assert grown < RSS_SLACK_KIB, f"RSS grew by {grown >> 10} MiB"
        assert wait_for(lambda: open_fds(pid) <= fds - 1), "the dropped socket's descriptor is still open"
        # Everyone else is still served.
        websocket(herald.port).close()


# -- HTTP limits on every listener -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["serve", "gateway", "trigger-api"])
def listener(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path_factory.mktemp(request.param), apps=[APP], command=request.param,
                        env=SHORT_TIMEOUTS) as herald:
        yield herald


def http_connection(herald: HeraldProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", herald.port))
    sock.settimeout(REACTION_S)
    return sock


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def test_header_flood_is_refused_with_431(listener: HeraldProcess) -> None:
    pid = listener.proc.pid
    rss_before = rss_kib(pid)
    sock = http_connection(listener)
    sock.sendall(f"GET /app/{APP['key']}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
    line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
    sent = 0
    try:
        while sent < FLOOD_LIMIT_BYTES // 4:
            sock.sendall(line * 256)
            sent += len(line) * 256
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        raise AssertionError(f"the server stopped reading after {sent >> 10} KiB of headers") from None
    response = read_to_eof(sock)
    sock.close()
    assert status_of(response) == 431, response[:300]
    grown = rss_kib(pid) - rss_before
    assert grown < RSS_SLACK_KIB, f"RSS grew by {grown >> 10} MiB for {sent >> 20} MiB of headers"


def test_slowloris_requests_get_408_and_their_sockets_are_closed(listener: HeraldProcess) -> None:
    pid = listener.proc.pid
    fds = open_fds(pid)
    socks = [http_connection(listener) for _ in range(SLOWLORIS_SOCKETS)]
    for sock in socks:
        sock.sendall(f"GET /app/{APP['key']}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
    answers: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + REACTION_S
    # The attack: one more header byte per socket every 100 ms, until Herald answers each of them.
    while len(answers) < len(socks) and time.monotonic() < deadline:
        waiting = [s for s in socks if s not in answers]
        for sock in waiting:
            sock.sendall(b"a")
        readable, _, _ = select.select(waiting, [], [], 0.1)
        for sock in readable:
            answers[sock] = read_to_eof(sock)
    assert len(answers) == len(socks), f"{len(socks) - len(answers)} slowloris requests are still held open"
    assert {status_of(a) for a in answers.values()} == {408}
    for sock in socks:
        sock.close()
    assert wait_for(lambda: open_fds(pid) <= fds), f"{open_fds(pid) - fds} descriptors still open"


def test_half_sent_body_gets_408(listener: HeraldProcess) -> None:
    sock = http_connection(listener)
    sock.sendall(f"POST /apps/{APP['id']}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: 1000\r\n\r\n{{\"name\":".encode())
    response = read_to_eof(sock)
    sock.close()
    assert status_of(response) == 408, response[:300]
