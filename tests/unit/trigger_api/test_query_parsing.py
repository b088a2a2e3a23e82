"""The HTTP API's query parsing (trigger_api/auth.py `parse_query`) gives what `urllib.parse.parse_qsl`
gives, whether or not it takes its fast path for queries with nothing to decode."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from trigger_api.auth import parse_query

QUERIES = [
    "",
    "auth_key=k&auth_timestamp=1700000000&auth_version=1.0&body_md5=abc&auth_signature=def",
    "a=1&&b=2&",
    "flag&x=",
    "=value&name=",
    "a=b=c",
    "AUTH_KEY=K&auth_key=k",
    "info=user_count,subscription_count&filter_by_prefix=presence-",
    "name=%2Fapps%2F1&x=a+b",
    "a=%ZZ&b=%41",
    "spaces+in+name=1+2",
    "semi;colon=1&k=v",
]


@pytest.mark.parametrize("query", QUERIES)
def test_same_result_as_parse_qsl(query: str) -> None:
    assert parse_query(query) == parse_qsl(query, keep_blank_values=True)
