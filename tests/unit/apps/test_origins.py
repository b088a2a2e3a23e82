"""`allowed_origins` patterns (shared/apps/origins.py): exact origins, any-scheme hosts, `*.` wildcards,
ports as the browser writes them, and a missing Origin header."""

from __future__ import annotations

import pytest

from shared.apps.origins import ANY_ORIGIN, OriginPolicy


@pytest.mark.parametrize(
    ("patterns", "origin", "allowed"),
    [
        ([], "https://anything.example", True),
        ([], None, True),
        (["*"], "https://anything.example", True),
        (["https://app.example.com", "*"], None, True),
        (["https://app.example.com"], "https://app.example.com", True),
        (["https://app.example.com"], "HTTPS://App.Example.com", True),
        (["https://app.example.com/"], "https://app.example.com", True),  # a trailing slash is forgiven
        (["https://app.example.com"], "http://app.example.com", False),
        (["https://app.example.com"], "https://app.example.com:8443", False),
        (["https://app.example.com"], "https://evil.example.com", False),
        (["https://app.example.com"], "https://app.example.com.evil.net", False),
        (["https://app.example.com"], None, False),
        (["https://app.example.com"], "", False),
        (["app.example.com"], "http://app.example.com", True),
        (["app.example.com"], "https://app.example.com", True),
        (["localhost:3000"], "http://localhost:3000", True),
        (["localhost:3000"], "http://localhost:3001", False),
        (["https://*.example.com"], "https://a.example.com", True),
        (["https://*.example.com"], "https://a.b.example.com", True),
        (["https://*.example.com"], "https://example.com", False),
        (["https://*.example.com"], "http://a.example.com", False),
        (["https://*.example.com"], "https://a.example.com:8443", False),
        (["https://*.example.com"], "https://badexample.com", False),
        (["*.example.com"], "http://a.example.com", True),
        (["*.example.com:8080"], "https://a.example.com:8080", True),
        (["null"], "null", True),
        (["capacitor://localhost"], "capacitor://localhost", True),
        (["http://[::1]:3000"], "http://[::1]:3000", True),
    ],
)
def test_origin_matching(patterns: list[str], origin: str | None, allowed: bool) -> None:
    assert OriginPolicy(patterns).allows(origin) is allowed


@pytest.mark.parametrize("bad", ["https://*bad.example.com", "https://a.*.example.com", "https://x.com/path",
                                 "://x.com", "1http://x.com", "https://", "*.*"])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"not an origin|invalid scheme"):
        OriginPolicy([bad])


def test_policies_compare_by_their_patterns() -> None:
    assert OriginPolicy(["https://a.com"]) == OriginPolicy(["https://a.com"])
    assert OriginPolicy(["https://a.com"]) != OriginPolicy(["https://b.com"])
    assert OriginPolicy() == ANY_ORIGIN and ANY_ORIGIN.allow_any
