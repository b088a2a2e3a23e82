"""The ACL the README documents is the one the tests run Herald under (tests/e2e/test_redis_forms.py)."""

from __future__ import annotations

from shared.redis.acl import COMMANDS, acl_rule
from tests.helpers import REPO


def test_readme_documents_exactly_the_tested_rule() -> None:
    readme = (REPO / "README.md").read_text()
    assert f"ACL SETUSER herald {acl_rule('herald', 'PASSWORD')}\n" in readme


def test_the_rule_follows_the_prefix_and_allows_nothing_else() -> None:
    rule = acl_rule("tenant-a", "pw")
    assert rule.startswith("on >pw resetkeys resetchannels ~tenant-a:* &tenant-a:* -@all +")
    assert len(COMMANDS) == len(set(COMMANDS)) and "+@" not in rule and "allkeys" not in rule
