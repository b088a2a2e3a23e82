"""Schemathesis against the OpenAPI description the HTTP API serves (`GET /openapi.json`), on a real
`herald serve`: generated requests, most of them signed correctly for the configured app (so they
reach the handlers) and the rest as generated (exercising the 401/404 paths). What must hold: no 5xx,
every status documented, every body and Content-Type as the document says, Allow on 405.

Also: the document lists exactly the routes the server has.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from shared.apps.registry import AppRegistry
from shared.backend import memory_backend
from shared.protocol.signatures import sign_http
from tests.helpers import HeraldProcess, running_herald
from tests.reliability.harness import size
from trigger_api.app import build_routes
from trigger_api.openapi import openapi_document

APP = {"id": "96", "key": "schema-key", "secret": "schema-secret", "history_size": 20}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    with running_herald(tmp_path_factory.mktemp("schema"), apps=[APP]) as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


# Built from the module the server serves it from; test_the_served_document_is_this_one checks that
# the running server answers GET /openapi.json with exactly it.
schema = schemathesis.openapi.from_dict(openapi_document())


def signed(case: Any, base_url: str) -> httpx.Request:
    """The case as a request signed for APP, as the SDKs sign: four cases in five, so they reach the
    handlers; the others keep their generated (wrong) credentials and app id."""
    sign = zlib.crc32(case.id.encode()) % 5 != 0
    if "app_id" in case.path_parameters and sign:
        case.path_parameters["app_id"] = APP["id"]
    kwargs = case.as_transport_kwargs(base_url=base_url)
    body = json.dumps(kwargs["json"]).encode() if "json" in kwargs else kwargs.get("data") or b""
    if isinstance(body, str):
        body = body.encode()
    params: dict[str, str] = {k: str(v) for k, v in (kwargs.get("params") or {}).items()}
    if sign:
        params = {k: v for k, v in params.items() if not k.startswith("auth_") and k != "body_md5"}
        params.update(auth_key=APP["key"], auth_timestamp=str(int(time.time())), auth_version="1.0")
        if body:
            params["body_md5"] = hashlib.md5(body).hexdigest()
        path = urlsplit(kwargs["url"]).path
        params["auth_signature"] = sign_http(APP["secret"], kwargs["method"], path, params.items())
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() != "content-length"}
    return httpx.Request(kwargs["method"], kwargs["url"], params=params, content=body, headers=headers)


@schema.parametrize()
@settings(max_examples=size(40, 500), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_the_api_answers_as_its_openapi_document_says(case: Any, herald: HeraldProcess, http: httpx.Client) -> None:
    response = http.send(signed(case, herald.http_url))
    case.validate_response(response, checks=CHECKS)


def test_the_served_document_is_this_one(herald: HeraldProcess, http: httpx.Client) -> None:
    response = http.get(f"{herald.http_url}/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == openapi_document()


def test_the_document_lists_exactly_the_api_routes() -> None:
    routes = build_routes(AppRegistry([]), memory_backend(webhook_workers=0))
    served = {(r.path, m) for r in routes if isinstance(r, Route) and r.name.startswith("pusher_")
              and "{rest" not in r.path for m in ("GET", "POST")}
    documented = {(path, method.upper()) for path, ops in openapi_document()["paths"].items() for method in ops}
    # Each route answers every method (405 JSON for the wrong ones); the document names the real one.
    assert {p for p, _ in documented} == {p for p, _ in served}
    assert documented <= served
