"""Herald's own HTTP/1.1 layer (herald/http.py) as a client sees it on the wire: keep-alive, pipelining,
`Expect: 100-continue`, HTTP/1.0, malformed requests and upgrades to paths that are not WebSocket
endpoints. Raw sockets against a real `herald serve`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from shared.protocol.signatures import body_md5, sign_http
from tests.helpers import HeraldProcess, running_herald

APP = {"id": "61", "key": "http-key", "secret": "http-secret"}
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path_factory.mktemp("http"), apps=[APP]) as proc:
        yield proc


def connect(herald: HeraldProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", herald.port))
    sock.settimeout(TIMEOUT_S)
    return sock


class Responses:
    """Reads HTTP/1.1 responses (Content-Length bodies) off one connection, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed; unread {self.buf[:200]!r}")
        self.buf += chunk

    def next(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def signed_post(herald: HeraldProcess, body: bytes, extra_headers: str = "") -> bytes:
    path = f"/apps/{APP['id']}/events"
    params = [("auth_key", APP["key"]), ("auth_timestamp", str(int(time.time()))), ("auth_version", "1.0"),
              ("body_md5", body_md5(body))]
    query = "&".join(f"{k}={v}" for k, v in params) + "&auth_signature=" + sign_http(APP["secret"], "POST", path,
                                                                                     params)
    return (f"POST {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1:{herald.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra_headers}\r\n").encode() + body


def event_body(data_size: int = 10) -> bytes:
    return json.dumps({"name": "e", "channel": "http-test", "data": "x" * data_size}).encode()


def test_keep_alive_and_pipelined_requests_are_answered_in_order(herald: HeraldProcess) -> None:
    sock = connect(herald)
    reader = Responses(sock)
    # Three requests in one write: health, a signed trigger (the hot path), a query (the Starlette path).
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + signed_post(herald, event_body())
                 + f"GET /apps/{APP['id']}/channels HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    statuses = [reader.next()[0] for _ in range(3)]
    assert statuses == [200, 200, 401], statuses  # the unsigned query is refused, in its turn
    # The connection stays usable.
    sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = reader.next()
    assert (status, json.loads(body)) == (200, {"ready": True})
    assert headers["content-type"] == "application/json"
    sock.close()


def test_expect_100_continue_gets_continue_before_the_body(herald: HeraldProcess) -> None:
    """curl (and so the PHP SDK) sends this for bodies over 1 KiB and waits for the interim answer."""
    sock = connect(herald)
    body = event_body(2000)
    request = signed_post(herald, body, "Expect: 100-continue\r\n")
    head, body_part = request[: -len(body)], body
    sock.sendall(head)
    reader = Responses(sock)
    interim = reader.next()
    assert interim[0] == 100
    sock.sendall(body_part)
    status, _, answer = reader.next()
    assert (status, answer) == (200, b"{}")
    sock.close()


def test_http_1_0_is_answered_and_closed(herald: HeraldProcess) -> None:
    sock = connect(herald)
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    reader = Responses(sock)
    status, headers, _ = reader.next()
    assert status == 200 and headers.get("connection") == "close"
    assert reader.closed()


def test_connection_close_is_honoured(herald: HeraldProcess) -> None:
    sock = connect(herald)
    sock.sendall(signed_post(herald, event_body(), "Connection: close\r\n"))
    reader = Responses(sock)
    assert reader.next()[0] == 200
    assert reader.closed()


def test_garbage_is_400_and_the_connection_closes(herald: HeraldProcess) -> None:
    sock = connect(herald)
    sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
    reader = Responses(sock)
    status, _, body = reader.next()
    assert status == 400 and json.loads(body)["code"] == 400
    assert reader.closed()


def test_declared_body_over_the_limit_is_413_before_it_is_sent(herald: HeraldProcess) -> None:
    sock = connect(herald)
    sock.sendall(f"POST /apps/{APP['id']}/events HTTP/1.1\r\nHost: x\r\nContent-Length: {2 << 20}\r\n\r\n".encode())
    status, _, body = Responses(sock).next()
    assert status == 413 and "1048576" in json.loads(body)["error"]
    sock.close()


@pytest.mark.parametrize("path", ["/apps/1/events", "/nowhere"])
def test_upgrade_to_a_path_that_is_not_a_websocket_endpoint_is_404(herald: HeraldProcess, path: str) -> None:
    sock = connect(herald)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert Responses(sock).next()[0] == 404
    sock.close()


def test_a_broken_websocket_handshake_is_400(herald: HeraldProcess) -> None:
    sock = connect(herald)
    sock.sendall(f"GET /app/{APP['key']}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n".encode())
    status, _, body = Responses(sock).next()
    assert status == 400 and "Sec-WebSocket-Version" in json.loads(body)["error"]
    sock.close()


def test_the_server_still_serves_after_all_that(herald: HeraldProcess) -> None:
    sock = connect(herald)
    sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
    assert Responses(sock).next()[0] == 200
    sock.close()
    assert herald.proc.poll() is None
