"""Property-based fuzzing of the signed HTTP API (hypothesis) on a real `herald serve`, in memory and
over Redis: generated methods, paths (real and odd app ids, channel names and user ids with any
characters, percent-encoded or not), extra and repeated query parameters, bodies (bytes, any JSON,
event-shaped objects with wrong types), most of them correctly signed.

What must hold: never a 5xx; every error is JSON `{"error": <text>, "code": <status>}` with that
status; every success a JSON object; the server keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from shared.protocol.signatures import sign_http
from tests.helpers import HeraldProcess, running_herald
from tests.redis_server import RedisServer
from tests.reliability.harness import size

APP = {"id": "98", "key": "fh-key", "secret": "fh-secret"}
NAMES = st.one_of(
    st.sampled_from(["pub", "presence-a", "private-a", "cache-x", "private-encrypted-x", "#server-to-user-1",
                     "pub\n", "a b", "x" * 201, "", "%0A", "..", "é"]),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=15,
)


@st.composite
def event_bodies(draw: st.DrawFn) -> Any:
    fields = {"name": NAMES | JSON_VALUES, "data": st.text(max_size=50) | JSON_VALUES,
              "channel": NAMES | JSON_VALUES, "channels": st.lists(NAMES, max_size=5) | JSON_VALUES,
              "socket_id": st.sampled_from(["1.1", "12.34", "1.1\n", "x"]) | JSON_VALUES,
              "info": st.sampled_from(["user_count", "subscription_count", "user_count,subscription_count", "x",
                                       ""]) | JSON_VALUES}
    doc = {k: draw(v) for k, v in fields.items() if draw(st.booleans())}
    if draw(st.integers(0, 3)) == 0:
        return {"batch": draw(st.lists(st.just(doc) | JSON_VALUES, max_size=12))}
    return doc


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes, bool]:
    app_id = draw(st.sampled_from([APP["id"]] * 8 + ["999", "", "%2F"]))
    seg = draw(NAMES)
    # Fully percent-encoded, or as loose as a URL allows (a literal "%0A" stays an encoded newline).
    enc = quote(seg, safe="" if draw(st.booleans()) else "%:@,;=!$&'()*+")
    path, method = draw(st.sampled_from([
        (f"/apps/{app_id}/events", "POST"), (f"/apps/{app_id}/batch_events", "POST"),
        (f"/apps/{app_id}/channels", "GET"), (f"/apps/{app_id}/channels/{enc}", "GET"),
        (f"/apps/{app_id}/channels/{enc}/users", "GET"),
        (f"/apps/{app_id}/users/{enc}/terminate_connections", "POST"), (f"/users/{enc}/terminate_connections", "POST"),
        (f"/apps/{app_id}/{enc}", "GET"), (f"/{enc}", "GET"),
    ]))
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    # The process's own routes (health, readiness, metrics: herald/server.py) are not the HTTP API.
    if path in ("/", "/ready", "/metrics"):
        path = "/apps/"
    params = draw(st.dictionaries(st.sampled_from(["info", "filter_by_prefix", "x", "auth_key", "AUTH_KEY",
                                                   "body_md5"]) | st.text(min_size=1, max_size=8),
                                  st.text(max_size=20) | NAMES, max_size=4))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        body = draw(st.binary(max_size=200))
    elif kind == 1:
        body = json.dumps(draw(JSON_VALUES)).encode()
    else:
        body = json.dumps(draw(event_bodies())).encode()
    if method == "GET" and draw(st.booleans()):
        body = b""
    return method, path, params, body, draw(st.integers(0, 5)) > 0


def sign(method: str, path: str, params: dict[str, str], body: bytes) -> dict[str, str]:
    signed = {k: v for k, v in params.items() if k.lower() not in ("auth_key", "body_md5")}
    signed.update(auth_key=APP["key"], auth_timestamp=str(int(time.time())), auth_version="1.0")
    if body:
        signed["body_md5"] = hashlib.md5(body).hexdigest()
    signed["auth_signature"] = sign_http(APP["secret"], method, path, signed.items())
    return signed


@pytest.fixture(params=["memory", "redis"])
def herald(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HeraldProcess]:
    extra: list[str] = []
    redis = None
    if request.param == "redis":
        redis = RedisServer(tmp_path).start()
        extra = ["--redis-url", redis.url]
    try:
        with running_herald(tmp_path, apps=[APP], extra_args=extra) as server:
            yield server
    finally:
        if redis is not None:
            redis.stop()


def test_the_signed_http_api_never_answers_5xx(herald: HeraldProcess) -> None:
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=herald.http_url, timeout=10) as http:

        @given(requests())
        @settings(max_examples=size(150, 3000), deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        def check(req: tuple[str, str, dict[str, str], bytes, bool]) -> None:
            method, path, params, body, signed = req
            query = sign(method, path, params, body) if signed else params
            url = path + ("?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
                          if query else "")
            response = http.request(method, url, content=body or None,
                                    headers={"Content-Type": "application/json"})
            note(f"{method} {url} {body[:200]!r} -> {response.status_code} {response.text[:200]}")
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (method, url, body, response.text)
            assert response.headers["content-type"] == "application/json", response.headers
            doc = response.json()
            assert isinstance(doc, dict)
            if response.status_code >= 400:
                assert set(doc) == {"error", "code"} and doc["code"] == response.status_code, doc
                assert isinstance(doc["error"], str) and doc["error"]

        check()
        assert http.get("/ready").status_code == 200
    assert herald.proc.poll() is None
    assert "Traceback" not in herald.log(), herald.log()[-3000:]
    print(f"signed HTTP API fuzz: statuses {dict(sorted(statuses.items()))}")
    assert statuses.get(200, 0) > 0
