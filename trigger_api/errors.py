"""Errors of the HTTP API and the JSON body every error response carries.

Bodies are `{"error": "<what was wrong>", "code": <status>}` (soketi's form); the SDKs only surface the
body text, so the message must name the field or parameter at fault.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """A request the API refuses; `status` is the HTTP status, `message` goes to the caller verbatim."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message, "code": status})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(status, message), status_code=status, media_type="application/json",
                    headers=headers)
