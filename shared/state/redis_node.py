"""The node's lease on its Redis records: mirror, heartbeat, re-sync after outages, and the reaper
(docs/cluster.md, "Node death" and "Redis outages").

Key layout (P = key prefix, A = app id; every key of one app shares the hash tag `{A}`, so each
script touches one Redis Cluster slot):

    P:{A}:occ            hash channel -> subscriptions in the cluster
    P:{A}:occn:NODE      hash channel -> subscriptions held by NODE
    P:{A}:pc:CHANNEL     hash user -> connections of that user in a presence channel
    P:{A}:pm:CHANNEL     hash user -> member JSON [user_id, user_info]
    P:{A}:presn:NODE     hash "CHANNEL\\nUSER" -> connections held by NODE
    P:{A}:conns          hash NODE -> open connections
    P:{A}:uc             hash user -> signed-in sockets of that user in the cluster
    P:{A}:ucn:NODE       hash user -> signed-in sockets held by NODE
    P:{A}:cache:CHANNEL  the last event of a cache channel, with its TTL
    P:nodes              sorted set NODE -> lease expiry (ms)
    P:nodeapps:NODE      set of apps NODE holds state in
    P:reaper             lock: the one node currently reaping

Each node keeps a mirror of what it *means* to hold (its sockets' subscriptions, members, signed-in
users, connections). The `node_sync` script replaces the node's records with the mirror and applies
the difference to the aggregates, returning the transitions. It repairs state after a Redis outage or
restart, after this node was reaped while partitioned, and, with an empty mirror, is how the reaper
removes a dead node.

Timings: a node renews its lease every lease / 3; a lease not renewed for `lease_s` expires; some live
node runs the reaper every `reaper_interval_s`. A dead node's members are therefore gone at most
lease + reaper interval (+ one script) after its last heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from shared import metrics
from shared.clock import Clock
from shared.redis.health import COMMANDS, RedisHealth
from shared.redis.scripts import ScriptRunner, load_script
from shared.state.base import Member, NodeLease, StoreUnavailable, Transitions, TransitionsListener

log = logging.getLogger("herald.state")

NODE_LEASE_S = 15.0
REAPER_INTERVAL_S = 5.0
# After an outage, wait this long before publishing repair transitions: longer than the bus
# subscribers' capped reconnect back-off (1 s, jittered up to 1.5 s).
RECOVERY_GRACE_S = 2.0
# Node-owned keys and aggregates expire if no live node refreshes them (every node gone).
KEY_TTL_FACTOR = 10

COUNTS_ADD = load_script("counts_add")
COUNTS_REMOVE = load_script("counts_remove")
NODE_SYNC = load_script("node_sync")


def member_json(member: Member) -> bytes:
    return orjson.dumps([member.user_id, member.user_info])


def member_from_json(raw: bytes | str) -> Member:
    user_id, user_info = orjson.loads(raw)
    return Member(user_id, user_info)


@dataclass
class Mirror:
    """What this node holds for one app: the desired state that `node_sync` writes back."""

    occ: dict[str, int] = field(default_factory=dict)
    pres: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # -> [count, member JSON]
    users: dict[str, int] = field(default_factory=dict)  # signed-in user -> sockets here
    conns: int = 0


class Gate:
    """Incremental updates run together; a full sync runs alone (so no script is in flight)."""

    def __init__(self) -> None:
        self._active = 0
        self._syncing = False
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if self._syncing:
            async with self._cond:
                await self._cond.wait_for(lambda: not self._syncing)
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._syncing:
                async with self._cond:
                    self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._syncing)
            self._syncing = True
            await self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._syncing = False
                self._cond.notify_all()


class RedisNode:
    """This node's records in Redis: the context the Redis stores share, and the `NodeLease`.

    The stores (`shared.state.redis_impl`) change the aggregates through scripts and the mirror here;
    this class renews the lease, re-syncs after outages and reaps dead nodes.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        node_id: str,
        lease_s: float = NODE_LEASE_S,
        reaper_interval_s: float = REAPER_INTERVAL_S,
        clock: Clock = time.time,
        recovery_grace_s: float = RECOVERY_GRACE_S,
        health: RedisHealth | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.node_id = node_id
        self.lease_s = lease_s
        self.heartbeat_s = lease_s / 3
        self.reaper_interval_s = reaper_interval_s
        self.clock = clock  # wall-clock seconds: leases are compared across processes
        self.recovery_grace_s = recovery_grace_s
        self.key_ttl_ms = int(lease_s * KEY_TTL_FACTOR * 1000)
        self.mirror: dict[str, Mirror] = {}
        self.gate = Gate()
        self.scripts = ScriptRunner(client)
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[TransitionsListener] = []
        self.needs_sync = True
        self._registered_apps: set[str] = set()
        # Leaves whose script failed (Redis away). If Redis comes back empty, sync can't see them, so
        # after syncing each is checked and reported as a transition when it really happened.
        self.failed_occ: set[tuple[str, str]] = set()
        self.failed_pres: dict[tuple[str, str, str], Member] = {}
        self.failed_users: set[tuple[str, str]] = set()
        self._healthy = False
        self._outage_seen = False
        # Reachability facts for /ready and metrics; the heartbeat reports the command side, the bus
        # its subscriber connections.
        self.health = health if health is not None else RedisHealth()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def redis_health(self) -> RedisHealth:
        return self.health

    # -- helpers for the stores ----------------------------------------------------------------

    def base(self, app_id: str) -> str:
        return f"{self.prefix}:{{{app_id}}}"

    def app(self, app_id: str) -> Mirror:
        mirror = self.mirror.get(app_id)
        if mirror is None:
            mirror = self.mirror[app_id] = Mirror()
        return mirror

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        return await self.scripts.run(source, keys, args)

    async def register_app(self, app_id: str) -> None:
        if app_id in self._registered_apps:
            return
        await self.client.sadd(f"{self.prefix}:nodeapps:{self.node_id}", app_id)
        self._registered_apps = self._registered_apps | {app_id}

    async def count_in(self, app_id: str, kind: str, counts: dict[str, int], name: str) -> int:
        """One more of `name` (a channel, or a signed-in user) held by this node; the cluster total."""
        base = self.base(app_id)
        async with self.gate.shared():
            await self.register_app(app_id)
            total = await self.script(COUNTS_ADD, [f"{base}:{kind}", f"{base}:{kind}n:{self.node_id}"], [name])
            counts[name] = counts.get(name, 0) + 1
        return int(total)

    async def count_out(self, app_id: str, kind: str, counts: dict[str, int], name: str,
                        failed: set[tuple[str, str]]) -> tuple[bool, int]:
        """One fewer; (whether this node held one, the cluster total). The mirror changes even when
        Redis is away, and the failure is remembered for the repair after the outage."""
        base = self.base(app_id)
        left = counts.get(name, 0) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)
        async with self.gate.shared():
            try:
                changed, total = await self.script(
                    COUNTS_REMOVE, [f"{base}:{kind}", f"{base}:{kind}n:{self.node_id}"], [name]
                )
            except (RedisError, OSError):
                self.needs_sync = True
                failed.add((app_id, name))
                raise
        return bool(changed), int(total)

    # -- NodeLease -------------------------------------------------------------------------------

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        self._listeners.append(listener)

    async def start_node(self) -> None:
        """Register this node's lease and start the heartbeat and reaper loops."""
        self._registered_apps = set()
        try:
            await self.heartbeat()
        except (RedisError, OSError) as exc:
            self.health.report(COMMANDS, False)
            log.warning("Redis unavailable at start (%s); will retry", exc)
        self._tasks = [
            asyncio.create_task(self._every(self.heartbeat_s, self.heartbeat)),
            asyncio.create_task(self._every(self.reaper_interval_s, self.reap)),
        ]

    async def stop_node(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A clean stop leaves nothing behind: remove this node's records as the reaper would.
        self.mirror = {app: Mirror() for app in self.mirror}
        with contextlib.suppress(RedisError, OSError):
            await self.sync_all()
            await self.client.zrem(f"{self.prefix}:nodes", self.node_id)
            await self.client.delete(f"{self.prefix}:nodeapps:{self.node_id}")

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except (RedisError, OSError, StoreUnavailable) as exc:
                self.health.report(COMMANDS, False)
                if self._healthy:
                    log.warning("Redis unavailable (%s); node state will be re-synced", exc)
                self._healthy = False
                self._outage_seen = True
                self.needs_sync = True
            except Exception:
                log.exception("%s failed", getattr(job, "__name__", "job"))

    async def heartbeat(self) -> None:
        """Renew the lease and the keys' TTLs; after an outage or a reap, rewrite this node's records."""
        expiry_ms = int((self.clock() + self.lease_s) * 1000)
        nodes_key = f"{self.prefix}:nodes"
        apps_key = f"{self.prefix}:nodeapps:{self.node_id}"
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(nodes_key, {self.node_id: expiry_ms})
            if self.mirror:
                pipe.sadd(apps_key, *self.mirror)
            pipe.pexpire(apps_key, self.key_ttl_ms)
            for app_id, mirror in self.mirror.items():
                base = self.base(app_id)
                for key in (f"{base}:occ", f"{base}:conns", f"{base}:occn:{self.node_id}",
                            f"{base}:presn:{self.node_id}", f"{base}:uc", f"{base}:ucn:{self.node_id}"):
                    pipe.pexpire(key, self.key_ttl_ms)
                for channel in {ch for ch, _ in mirror.pres}:
                    pipe.pexpire(f"{base}:pc:{channel}", self.key_ttl_ms)
                    pipe.pexpire(f"{base}:pm:{channel}", self.key_ttl_ms)
            results = await pipe.execute()
        self._registered_apps = set(self.mirror)
        newly_added = results[0] == 1
        if self._outage_seen and not self._healthy:
            # Redis is back after an outage. Give every node's subscriber time to re-subscribe
            # (their reconnect back-off is capped below this), or the transitions this sync
            # publishes would reach nobody.
            await asyncio.sleep(self.recovery_grace_s)
        if newly_added or self.needs_sync or not self._healthy:
            # Reaped while partitioned, Redis restarted empty, or writes failed: rewrite our records.
            if self._healthy and newly_added and self.mirror:
                log.warning("node %s was missing from Redis; re-registering its state", self.node_id)
            await self.sync_all()
        self._healthy = True
        self._outage_seen = False
        self.health.report(COMMANDS, True)

    async def sync_all(self) -> None:
        async with self.gate.exclusive():
            failed_occ, failed_pres = set(self.failed_occ), dict(self.failed_pres)
            failed_users = set(self.failed_users)
            for app_id in list(self.mirror):
                transitions = await self.sync(app_id, self.node_id, self.mirror[app_id])
                await self._settle_failed_leaves(transitions, failed_occ, failed_pres, failed_users)
                if transitions:
                    await self._emit(transitions)
            # Only a complete pass clears the repair work; a failure leaves it for the next heartbeat.
            self.needs_sync = False
            self.failed_occ -= failed_occ
            self.failed_users -= failed_users
            for key in failed_pres:
                self.failed_pres.pop(key, None)

    async def _settle_failed_leaves(
        self,
        transitions: Transitions,
        failed_occ: set[tuple[str, str]],
        failed_pres: dict[tuple[str, str, str], Member],
        failed_users: set[tuple[str, str]],
    ) -> None:
        """Report leaves that failed during an outage and that sync could not see (Redis lost them)."""
        app_id = transitions.app_id
        base = self.base(app_id)
        channels = [ch for app, ch in failed_occ if app == app_id and ch not in transitions.vacated]
        if channels:
            values = await self.client.hmget(f"{base}:occ", channels)
            for channel, value in zip(channels, values, strict=True):
                if value is None or int(value) <= 0:
                    transitions.vacated.append(channel)
        seen = {(ch, m.key) for ch, m in transitions.removed}
        members = [(ch, m) for (app, ch, key), m in failed_pres.items() if app == app_id and (ch, key) not in seen]
        if members:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, member in members:
                    pipe.hexists(f"{base}:pc:{channel}", member.key)
                present = await pipe.execute()
            transitions.removed.extend(m for m, here in zip(members, present, strict=True) if not here)
        users = [u for app, u in failed_users if app == app_id and u not in transitions.offline]
        if users:
            values = await self.client.hmget(f"{base}:uc", users)
            for user, value in zip(users, values, strict=True):
                if value is None or int(value) <= 0:
                    transitions.offline.append(user)

    async def sync(self, app_id: str, node_id: str, mirror: Mirror) -> Transitions:
        """Run `node_sync` for one app of `node_id` with `mirror` as what it holds."""
        base = self.base(app_id)
        args: list[Any] = [base, node_id, mirror.conns, len(mirror.occ)]
        for channel, count in mirror.occ.items():
            args += [channel, count]
        args.append(len(mirror.pres))
        for (channel, user), (count, encoded) in mirror.pres.items():
            args += [f"{channel}\n{user}", count, encoded]
        args.append(len(mirror.users))
        for user, count in mirror.users.items():
            args += [user, count]
        keys = [f"{base}:occ", f"{base}:occn:{node_id}", f"{base}:presn:{node_id}", f"{base}:conns",
                f"{base}:uc", f"{base}:ucn:{node_id}"]
        occupied, vacated, added, removed, online, offline, counts = await self.script(NODE_SYNC, keys, args)
        return Transitions(
            app_id,
            occupied=[c.decode() for c in occupied],
            vacated=[c.decode() for c in vacated],
            added=[(added[i].decode(), member_from_json(added[i + 1])) for i in range(0, len(added), 2)],
            removed=[(removed[i].decode(), member_from_json(removed[i + 1])) for i in range(0, len(removed), 2)],
            online=[u.decode() for u in online],
            offline=[u.decode() for u in offline],
            counts=[(counts[i].decode(), int(counts[i + 1])) for i in range(0, len(counts), 2)],
        )

    async def _emit(self, transitions: Transitions) -> None:
        for listener in self._listeners:
            try:
                await listener(transitions)
            except Exception:
                log.warning("transitions listener failed", exc_info=True)

    async def reap(self) -> None:
        """If this node holds the reaper lock, remove every node whose lease expired."""
        lock_key = f"{self.prefix}:reaper"
        lock_ms = int(max(self.reaper_interval_s * 2, 1) * 1000)
        got = await self.client.set(lock_key, self.node_id, nx=True, px=lock_ms)
        if not got:
            holder = await self.client.get(lock_key)
            if holder is None or holder.decode() != self.node_id:
                return
            await self.client.pexpire(lock_key, lock_ms)
        metrics.REAPER_RUNS.inc()
        now_ms = int(self.clock() * 1000)
        dead = await self.client.zrangebyscore(f"{self.prefix}:nodes", "-inf", now_ms)
        for raw in dead:
            node = raw.decode()
            if node == self.node_id:
                continue
            await self.reap_node(node)

    async def reap_node(self, node: str) -> None:
        apps_key = f"{self.prefix}:nodeapps:{node}"
        apps = [a.decode() for a in await self.client.smembers(apps_key)]
        log.warning("reaping node %s (lease expired; %d apps)", node, len(apps))
        for app_id in apps:
            transitions = await self.sync(app_id, node, Mirror())
            metrics.REAPED_MEMBERS.inc(len(transitions.removed))
            metrics.REAPED_USERS.inc(len(transitions.offline))
            if transitions:
                await self._emit(transitions)
        await self.client.delete(apps_key)
        await self.client.zrem(f"{self.prefix}:nodes", node)
        metrics.REAPED_NODES.inc()


def _conforms(node: RedisNode) -> NodeLease:
    return node  # checked by mypy: RedisNode implements NodeLease
