"""HTTP API request signing (docs/http-api.md, "Signing").

The verifier is tested directly with the published worked example and through the ASGI app, where
requests are signed by an independent signer written here from the documented rules (not Herald's own
`shared.protocol.signatures`) and by the pusher-http-python SDK's own request builder.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from pusher.pusher_client import PusherClient
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from shared.apps.config import AppConfig
from shared.apps.registry import AppRegistry
from shared.backend import Backend, memory_backend
from shared.bus.base import Envelope
from trigger_api.app import build_routes
from trigger_api.auth import parse_query, verify_signature
from trigger_api.errors import ApiError

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient will move from httpx to httpx2; httpx works today.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

# The signing worked example (docs/http-api.md).
EX_APP = AppConfig(id="3", key="278d425bdf160c739803", secret="7ad3773142a6692b25b8")
EX_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
EX_MD5 = "ec365a775a4cd0599faeb73354201b6f"
EX_TS = 1353088179
EX_SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
EX_PARAMS = [
    ("auth_key", EX_APP.key),
    ("auth_timestamp", str(EX_TS)),
    ("auth_version", "1.0"),
    ("body_md5", EX_MD5),
    ("auth_signature", EX_SIGNATURE),
]
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"

APPS = [
    EX_APP,
    AppConfig(id="app-1", key="key-1", secret="secret-1"),
    AppConfig(id="app-2", key="key-2", secret="secret-2"),
    AppConfig(id="app-off", key="key-off", secret="secret-off", enabled=False),
    AppConfig(id="app-h", key="key-h", secret="secret-h", history_size=5, history_channel_prefixes=("room-", "cache-")),
]
SECRETS = {a.id: (a.key, a.secret) for a in APPS}


def sign_query(
    method: str,
    path: str,
    app_id: str,
    params: dict[str, str] | None = None,
    body: bytes = b"",
    timestamp: int | None = None,
    encode: bool = False,
    md5: bool | None = None,
) -> str:
    """An independent section-6.2 signer; returns the query string (values percent-encoded if `encode`)."""
    key, secret = SECRETS[app_id]
    query = dict(params or {})
    query.update(auth_key=key, auth_timestamp=str(EX_TS if timestamp is None else timestamp),
                 auth_version="1.0")
    if md5 or (md5 is None and body):
        query["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
    query["auth_signature"] = hmac.new(
        secret.encode(), f"{method}\n{path}\n{to_sign}".encode(), hashlib.sha256
    ).hexdigest()
    if encode:
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in query.items())


class Harness:
    """The HTTP API routes over an in-memory backend, a fixed clock, and a receiver recording bus envelopes."""

    def __init__(self, client: TestClient, backend: Backend, clock: list[float]) -> None:
        self.client = client
        self.backend = backend
        self.clock = clock
        self.received: list[Envelope] = []
        backend.bus.set_receiver(self.received.append)

    def run(self, coro: object) -> object:
        return asyncio.run(coro)  # type: ignore[arg-type]

    def listen(self, app_id: str, *channels: str) -> None:
        for channel in channels:
            self.run(self.backend.bus.subscribe(app_id, channel))

    def post(self, path: str, body: object, app_id: str = "app-1", raw: bytes | None = None,
             **sign: object) -> tuple[int, object]:
        data = raw if raw is not None else json.dumps(body).encode()
        query = sign_query("POST", path, app_id, body=data, **sign)  # type: ignore[arg-type]
        resp = self.client.post(f"{path}?{query}", content=data,
                                headers={"Content-Type": "application/json"})
        return resp.status_code, resp.json()

    def get(self, path: str, params: dict[str, str] | None = None, app_id: str = "app-1",
            **sign: object) -> tuple[int, object]:
        query = sign_query("GET", path, app_id, params, **sign)  # type: ignore[arg-type]
        resp = self.client.get(f"{path}?{query}")
        return resp.status_code, resp.json()


def make_harness(backend: Backend | None = None) -> Iterator[Harness]:
    backend = backend or memory_backend()
    clock = [float(EX_TS + 100)]
    app = Starlette(routes=build_routes(AppRegistry(APPS), backend, clock=lambda: clock[0]))
    with TestClient(app) as client:
        yield Harness(client, backend, clock)


@pytest.fixture
def api() -> Iterator[Harness]:
    yield from make_harness()


# -- the verifier function, no network -------------------------------------------------------------


def test_worked_example_verifies() -> None:
    verify_signature(EX_APP, "POST", "/apps/3/events", EX_PARAMS, EX_BODY, now=EX_TS)


def test_worked_example_with_altered_body_is_rejected() -> None:
    altered = EX_BODY.replace(b"foo", b"bar")
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/events", EX_PARAMS, altered, now=EX_TS)
    assert err.value.status == 401
    assert "body_md5" in err.value.message


def test_altered_body_with_matching_md5_fails_the_signature() -> None:
    altered = EX_BODY.replace(b"foo", b"bar")
    params = [(k, hashlib.md5(altered).hexdigest() if k == "body_md5" else v) for k, v in EX_PARAMS]
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/events", params, altered, now=EX_TS)
    assert err.value.status == 401
    assert err.value.message.startswith("Invalid signature")
    assert "POST\\n/apps/3/events\\nauth_key=278d425bdf160c739803" in err.value.message


@pytest.mark.parametrize("skew", [600, -600])
def test_timestamp_at_the_window_edge_is_accepted(skew: int) -> None:
    verify_signature(EX_APP, "POST", "/apps/3/events", EX_PARAMS, EX_BODY, now=EX_TS + skew)


@pytest.mark.parametrize("skew", [601, -601])
def test_timestamp_601_seconds_off_is_rejected(skew: int) -> None:
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/events", EX_PARAMS, EX_BODY, now=EX_TS + skew)
    assert err.value.status == 401
    assert err.value.message.startswith(f"Timestamp expired: Given timestamp ({EX_TS}) not within 600s")


def test_get_with_md5_of_empty_body_verifies() -> None:
    query = sign_query("GET", "/apps/3/channels", "3", {"filter_by_prefix": "presence-"}, md5=True)
    assert f"body_md5={EMPTY_MD5}" in query
    verify_signature(EX_APP, "GET", "/apps/3/channels", parse_query(query), b"", now=EX_TS)


def test_percent_encoded_query_values_verify() -> None:
    params = {"info": "user_count,subscription_count", "filter_by_prefix": "presence-a b"}
    query = sign_query("GET", "/apps/3/channels", "3", params, encode=True)
    assert "info=user_count%2Csubscription_count" in query and "presence-a%20b" in query
    verify_signature(EX_APP, "GET", "/apps/3/channels", parse_query(query), b"", now=EX_TS)


def test_missing_body_md5_with_a_body_is_rejected() -> None:
    params = [(k, v) for k, v in EX_PARAMS if k != "body_md5"]
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/events", params, EX_BODY, now=EX_TS)
    assert (err.value.status, err.value.message) == (401, "body_md5 is required when the request has a body")


@pytest.mark.parametrize("missing", ["auth_key", "auth_timestamp", "auth_signature"])
def test_missing_auth_parameter_is_named(missing: str) -> None:
    params = [(k, v) for k, v in EX_PARAMS if k != missing]
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/events", params, EX_BODY, now=EX_TS)
    assert err.value.status == 401
    assert missing in err.value.message


def test_key_of_another_app_is_rejected() -> None:
    other = AppConfig(id="3", key="other-key", secret=EX_APP.secret)
    with pytest.raises(ApiError) as err:
        verify_signature(other, "POST", "/apps/3/events", EX_PARAMS, EX_BODY, now=EX_TS)
    assert err.value.status == 401
    assert "auth_key" in err.value.message


def test_signature_is_bound_to_the_path() -> None:
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/batch_events", EX_PARAMS, EX_BODY, now=EX_TS)
    assert err.value.status == 401


def test_garbage_timestamp_is_rejected() -> None:
    params = [(k, "soon" if k == "auth_timestamp" else v) for k, v in EX_PARAMS]
    with pytest.raises(ApiError) as err:
        verify_signature(EX_APP, "POST", "/apps/3/events", params, EX_BODY, now=EX_TS)
    assert err.value.status == 401
    assert "auth_timestamp" in err.value.message


# -- through the ASGI app ---------------------------------------------------------------------------


def test_worked_example_is_accepted_and_published(api: Harness) -> None:
    api.listen("3", "project-3")
    query = "&".join(f"{k}={v}" for k, v in EX_PARAMS)
    resp = api.client.post(f"/apps/3/events?{query}", content=EX_BODY,
                           headers={"Content-Type": "application/json"})
    assert (resp.status_code, resp.json()) == (200, {})
    [env] = api.received
    assert (env.app_id, env.channel, env.event, env.data) == ("3", "project-3", "foo", '{"some":"data"}')


def test_worked_example_601_seconds_later_is_401(api: Harness) -> None:
    api.clock[0] = EX_TS + 601
    query = "&".join(f"{k}={v}" for k, v in EX_PARAMS)
    resp = api.client.post(f"/apps/3/events?{query}", content=EX_BODY)
    assert resp.status_code == 401
    body = resp.json()
    assert body["code"] == 401 and body["error"].startswith("Timestamp expired")


def test_altered_body_through_the_app_is_401(api: Harness) -> None:
    api.listen("3", "project-3")
    query = "&".join(f"{k}={v}" for k, v in EX_PARAMS)
    resp = api.client.post(f"/apps/3/events?{query}", content=EX_BODY.replace(b"foo", b"bar"))
    assert resp.status_code == 401
    assert resp.json() == {"error": "body_md5 does not match the MD5 of the request body", "code": 401}
    assert api.received == []


def test_percent_encoded_get_through_the_app(api: Harness) -> None:
    api.run(api.backend.occupancy.add("app-1", "presence-room", "1.1"))
    status, body = api.get("/apps/app-1/channels/presence-room",
                           {"info": "user_count,subscription_count"}, encode=True, md5=True)
    assert (status, body) == (200, {"occupied": True, "user_count": 0, "subscription_count": 1})


def test_unknown_app_is_404(api: Harness) -> None:
    query = sign_query("GET", "/apps/nope/channels", "app-1")
    resp = api.client.get(f"/apps/nope/channels?{query}")
    assert resp.status_code == 404
    assert resp.json() == {"error": "Unknown app id 'nope'", "code": 404}


def test_disabled_app_is_403_after_a_valid_signature(api: Harness) -> None:
    status, body = api.get("/apps/app-off/channels", app_id="app-off")
    assert status == 403
    assert body == {"error": "App 'app-off' is disabled", "code": 403}


def test_disabled_app_with_a_bad_signature_is_401(api: Harness) -> None:
    query = sign_query("GET", "/apps/app-off/channels", "app-1")
    resp = api.client.get(f"/apps/app-off/channels?{query}")
    assert resp.status_code == 401


def test_key_of_another_app_through_the_app_is_401(api: Harness) -> None:
    # Correctly signed with app-2's credentials, but aimed at app-1.
    query = sign_query("GET", "/apps/app-1/channels", "app-2")
    resp = api.client.get(f"/apps/app-1/channels?{query}")
    assert resp.status_code == 401
    assert "not the key of app 'app-1'" in resp.json()["error"]


def test_unsigned_request_is_401(api: Harness) -> None:
    resp = api.client.get("/apps/app-1/channels")
    assert resp.status_code == 401
    assert resp.json()["error"] == (
        "Missing authentication parameter(s): auth_key, auth_timestamp, auth_signature"
    )


def sdk_client() -> PusherClient:
    # pusher-http-python only accepts numeric app ids.
    return PusherClient(app_id="3", key=EX_APP.key, secret=EX_APP.secret, host="testserver", ssl=False)


def test_requests_built_by_pusher_http_python_verify(api: Harness) -> None:
    """The SDK's own signing (body_md5 on GETs, raw unescaped values) against the app."""
    api.clock[0] = time.time()
    api.listen("3", "my-channel")
    sdk = sdk_client()
    for req in (
        sdk.trigger.make_request(["my-channel"], "my-event", {"hello": "world"}),
        sdk.channels_info.make_request("presence-", ["user_count"]),
        sdk.channel_info.make_request("my-channel", ["subscription_count"]),
        sdk.users_info.make_request("presence-room"),
        sdk.terminate_user_connections.make_request("user-7"),
    ):
        resp = api.client.request(req.method, req.signed_path, content=req.body, headers=req.headers)
        assert resp.status_code == 200, (req.path, resp.text)
    assert [(e.channel, e.event, e.data) for e in api.received] == [
        ("my-channel", "my-event", '{"hello": "world"}')
    ]
