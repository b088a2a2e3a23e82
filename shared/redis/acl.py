"""The least a Redis ACL user must allow for Herald to work: every command Herald sends (directly or
from its Lua scripts), on keys and pub/sub channels under its prefix (README, "Redis": "ACL").

    ACL SETUSER herald on >PASSWORD resetkeys resetchannels ~herald:* &herald:* -@all +ping +hello ...

The tests run Herald under exactly `acl_rule()` with the default user disabled.
"""

from __future__ import annotations

# Connection set-up: PING (health checks, the subscriber's keep-alive), HELLO (Herald's cluster
# detection) and SELECT (a database other than 0). redis-py also sends CLIENT SETINFO on Redis 7.2+;
# it ignores a refusal, and naming it would make the rule invalid on 7.0.
CONNECTION = ("ping", "hello", "select")
# The bus: per-channel topics, sharded ones on a Redis Cluster.
PUBSUB = ("publish", "subscribe", "unsubscribe", "spublish", "ssubscribe", "sunsubscribe")
# Lua scripts (shared/redis/lua/) run with EVALSHA, sent with EVAL when Redis doesn't have them yet;
# the HTTP API's rate limiter reads the server's clock (TIME) in its script.
SCRIPTS = ("eval", "evalsha", "time")
# Every data command, whether sent directly or called by a script.
DATA = (
    "get", "set", "pttl", "pexpire", "del", "incr",
    "hget", "hset", "hdel", "hincrby", "hgetall", "hmget", "hvals", "hlen", "hexists",
    "sadd", "smembers",
    "zadd", "zrem", "zrange", "zrangebyscore",
    # Channel history: one stream per channel (docs/history.md).
    "xadd", "xrange", "xrevrange",
)
# Redis Cluster only: redis-py reads the slot map (CLUSTER SLOTS) and where each command's keys are
# (COMMAND).
CLUSTER = ("cluster|slots", "command")

COMMANDS = CONNECTION + PUBSUB + SCRIPTS + DATA + CLUSTER


def acl_rule(prefix: str = "herald", password: str = "PASSWORD") -> str:
    """The ACL rule (after `ACL SETUSER <name>` or `user <name>` in an ACL file) for a Herald using
    `--redis-prefix prefix`."""
    allowed = " ".join(f"+{command}" for command in COMMANDS)
    return f"on >{password} resetkeys resetchannels ~{prefix}:* &{prefix}:* -@all {allowed}"
