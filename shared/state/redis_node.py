"""The node's lease on its Redis records: heartbeat, re-sync after outages, and the reaper
(docs/cluster.md, "Node death" and "Redis outages").

Key layout (P = key prefix, A = app id; every key of one app shares the hash tag `{A}`, so each
script touches one Redis Cluster slot):

    P:{A}:occ            hash channel -> subscriptions in the cluster
    P:{A}:occn:NODE      hash channel -> subscriptions held by NODE
    P:{A}:pc:CHANNEL     hash user -> connections of that user in a presence channel
    P:{A}:pm:CHANNEL     hash user -> member JSON [user_id, user_info]
    P:{A}:presn:NODE     hash presence field -> connections held by NODE; the field is the channel's
                         byte length, ":", the channel, then the user key (`presence_field`), so no
                         bytes inside either can make two records look alike
    P:{A}:clock          the app's last transition stamp (`shared.state.base.Stamp`)
    P:{A}:left:CHANNEL   the stamp of the channel's recent vacate (expires after PAIR_WINDOW_S)
    P:{A}:mleft:FIELD    the stamp of a member's recent removal (same)
    P:{A}:conns          hash NODE -> open connections
    P:{A}:uc             hash user -> signed-in sockets of that user in the cluster
    P:{A}:ucn:NODE       hash user -> signed-in sockets held by NODE
    P:{A}:cache:CHANNEL  the last event of a cache channel, with its TTL
    P:nodes              sorted set NODE -> lease expiry (ms)
    P:nodeapps:NODE      set of apps NODE holds state in
    P:reaper             lock: the one node currently reaping
    P:boot               a random id for this life of Redis (gone after a restart that lost the keys)
    P:boot:meta          "created ms:restart flag" of that boot
    P:synced             hash NODE -> the boot NODE has re-subscribed and re-synced to

Each node keeps a mirror of what it *means* to hold (its sockets' subscriptions, members, signed-in
users, connections). The `node_sync` script replaces the node's records with the mirror and applies
the difference to the aggregates, returning the transitions. It repairs state after a Redis outage or
restart, after this node was reaped while partitioned, and, with an empty mirror, is how the reaper
removes a dead node.

Timings: a node renews its lease every lease / 3; a lease not renewed for `lease_s` expires; some live
node runs the reaper every `reaper_interval_s`. A dead node's members are therefore gone at most
lease + reaper interval (+ one script) after its last heartbeat.

Redis restarts (docs/cluster.md, "Redis restarts"; single Redis, see `boot_gate`): every node checks
`P:boot` every BOOT_POLL_S and the first to find it missing creates a new one. A node seeing a new boot
waits until its bus subscriber receives from it again (a probe on its control topic came back),
writes its records back, then records `P:synced[NODE] = boot`. The cluster is synced when every node
with a live lease has done so and, after a restart, BOOT_GRACE_S has passed (time for a live node to
notice). Until then the HTTP API answers 503, and every publish it acknowledges is checked against
the boot in the same script, so an event answered 200 was published while every live gateway was
subscribed. Repair transitions wait for the cluster to be synced too, so they reach every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from shared import metrics
from shared.bus.base import BusUnavailable, PublishGuard
from shared.clock import Clock
from shared.redis.health import COMMANDS, RedisHealth
from shared.redis.scripts import ScriptRunner, load_script
from shared.state.base import (
    CLOCK_KEEP_S,
    PAIR_WINDOW_S,
    ChannelChange,
    ClusterResyncing,
    Member,
    MemberChange,
    NodeLease,
    ResyncedListener,
    StoreUnavailable,
    Transitions,
    TransitionsListener,
)
from shared.state.redis_records import Gate, Mirror, member_from_json, presence_field

log = logging.getLogger("herald.state")

NODE_LEASE_S = 15.0
REAPER_INTERVAL_S = 5.0
# How often a node checks that Redis is still the same life (and, while re-syncing, whether the
# cluster is synced).
BOOT_POLL_S = 0.5
# After a restart, nodes that have not re-synced yet count for this long even when Redis does not
# list them: longer than a live node takes to notice (BOOT_POLL_S) and re-register, and than the bus
# subscribers' capped reconnect back-off (1 s, jittered up to 1.5 s).
BOOT_GRACE_S = 2.0
# How long a re-sync waits for this node's bus subscriber to be back before it tries again later.
SUBSCRIBED_WAIT_S = 10.0
# How long one probe of the bus subscriber may take before its connection is taken for stalled and
# replaced: a round trip through Redis takes milliseconds, and a node busy fanning out still answers
# within a few hundred.
PROBE_TIMEOUT_S = 2.0
# How long repair transitions wait for the rest of the cluster to be synced before going out anyway.
CLUSTER_WAIT_S = 30.0
# Node-owned keys and aggregates expire if no live node refreshes them (every node gone).
KEY_TTL_FACTOR = 10

COUNTS_ADD = load_script("counts_add")
COUNTS_REMOVE = load_script("counts_remove")
NODE_SYNC = load_script("node_sync")
CLOCK_STAMPS = load_script("clock_stamps")
BOOT_ENSURE = load_script("boot_ensure")
CLUSTER_STATE = load_script("cluster_state")

CLOCK_KEEP_MS = int(CLOCK_KEEP_S * 1000)
PAIR_WINDOW_MS = int(PAIR_WINDOW_S * 1000)


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
        health: RedisHealth | None = None,
        bus: Any = None,
        boot_gate: bool = False,
        boot_grace_s: float = BOOT_GRACE_S,
        boot_poll_s: float = BOOT_POLL_S,
    ) -> None:
        """`bus` is the node's RedisBus; `boot_gate` turns on the Redis-restart handling (module
        docstring), which needs the bus and a single Redis (on a Redis Cluster each shard restarts on
        its own, which one boot key can't describe)."""
        self.client = client
        self.prefix = prefix
        self.node_id = node_id
        self.lease_s = lease_s
        self.heartbeat_s = lease_s / 3
        self.reaper_interval_s = reaper_interval_s
        self.clock = clock  # wall-clock seconds: leases are compared across processes
        self.bus = bus
        self.boot_gate = boot_gate and bus is not None
        self.boot_grace_s = boot_grace_s
        self.boot_poll_s = boot_poll_s
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
        # No reaping before this (wall clock): after an outage every lease has run out, and the node
        # that gets back first must not reap the others before they have had one lease to renew.
        self._reap_not_before = 0.0
        # Reachability facts for /ready and metrics; the heartbeat reports the command side, the bus
        # its subscriber connections.
        self.health = health if health is not None else RedisHealth()
        # Redis restarts (module docstring): the boot this node is synced to, whether the whole
        # cluster is, and the re-sync in progress.
        self.boot: str | None = None
        self._cluster_synced = not self.boot_gate
        self._synced = asyncio.Event()
        if self._cluster_synced:
            self._synced.set()
        self._resync_task: asyncio.Task[None] | None = None
        self._control_subscribed = False
        self._beat = asyncio.Lock()
        self._resynced_listeners: list[ResyncedListener] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def redis_health(self) -> RedisHealth:
        return self.health

    @property
    def cluster_synced(self) -> bool:
        return self._cluster_synced

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

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

    def _count_keys(self, app_id: str, kind: str, name: str, stamped: bool) -> list[str]:
        base = self.base(app_id)
        keys = [f"{base}:{kind}", f"{base}:{kind}n:{self.node_id}"]
        if stamped:
            keys += [f"{base}:clock", f"{base}:left:{name}"]
        return keys

    async def count_in(self, app_id: str, kind: str, counts: dict[str, int], name: str,
                       stamped: bool = False) -> tuple[int, int, int]:
        """One more of `name` (a channel, or a signed-in user) held by this node: (the cluster total,
        and when `stamped` and the total became 1, the transition's stamp and the stamp it follows)."""
        async with self.gate.shared():
            await self.register_app(app_id)
            total, stamp, after = await self.script(
                COUNTS_ADD, self._count_keys(app_id, kind, name, stamped), [name, CLOCK_KEEP_MS])
            counts[name] = counts.get(name, 0) + 1
        return int(total), int(stamp), int(after)

    async def count_out(self, app_id: str, kind: str, counts: dict[str, int], name: str,
                        failed: set[tuple[str, str]], stamped: bool = False) -> tuple[bool, int, int]:
        """One fewer: (whether this node held one, the cluster total, the stamp when `stamped` and it
        reached 0). The mirror changes even when Redis is away, and the failure is remembered for the
        repair after the outage."""
        left = counts.get(name, 0) - 1
        if left > 0:
            counts[name] = left
        else:
            counts.pop(name, None)
        async with self.gate.shared():
            try:
                changed, total, stamp = await self.script(
                    COUNTS_REMOVE, self._count_keys(app_id, kind, name, stamped),
                    [name, CLOCK_KEEP_MS, PAIR_WINDOW_MS],
                )
            except (RedisError, OSError):
                self.needs_sync = True
                failed.add((app_id, name))
                raise
        return bool(changed), int(total), int(stamp)

    # -- NodeLease -------------------------------------------------------------------------------

    def add_transitions_listener(self, listener: TransitionsListener) -> None:
        self._listeners.append(listener)

    def add_resynced_listener(self, listener: ResyncedListener) -> None:
        self._resynced_listeners.append(listener)

    def publish_guard(self) -> PublishGuard | None:
        if not self.boot_gate:
            return None
        if not self._cluster_synced or self.boot is None:
            raise ClusterResyncing("Redis restarted; the cluster is re-syncing, try again shortly")
        return PublishGuard(self._key("boot"), self.boot)

    async def confirm_synced(self) -> None:
        guard = self.publish_guard()
        if guard is None:
            return
        try:
            current = await self.client.get(guard.key)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc
        if current is None or current.decode() != guard.value:
            self.boot_changed()
            raise ClusterResyncing("Redis restarted; the cluster is re-syncing, try again shortly")

    def boot_changed(self) -> None:
        """A guarded publish or a read found Redis restarted: stop answering until re-synced."""
        if self._cluster_synced and self.boot_gate:
            self._cluster_synced = False
            self._synced.clear()

    async def wait_synced(self, timeout_s: float) -> bool:
        if self._cluster_synced:
            return True
        try:
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def start_node(self) -> None:
        """Register this node's lease, sync its records (and, with the boot gate, wait until it is synced
        to Redis's current boot), then start the heartbeat and reaper loops (and the boot watch)."""
        self._registered_apps = set()
        self._stopping = False
        try:
            await self.heartbeat()
            if self.boot_gate:
                await self.check_cluster()
        except (RedisError, OSError, StoreUnavailable) as exc:
            self.health.report(COMMANDS, False)
            log.warning("Redis unavailable at start (%s); will retry", exc)
        self._tasks = [
            asyncio.create_task(self._every(self.heartbeat_s, self.renew)),
            asyncio.create_task(self._every(self.reaper_interval_s, self.reap)),
        ]
        if self.boot_gate:
            self._tasks.append(asyncio.create_task(self._every(self.boot_poll_s, self.watch_boot)))

    async def stop_node(self) -> None:
        self._stopping = True
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A clean stop leaves nothing behind: remove this node's records as the reaper would.
        self.mirror = {app: Mirror() for app in self.mirror}
        with contextlib.suppress(RedisError, OSError):
            await self._report(await self.sync_all(), resynced=False)
            await self.client.zrem(self._key("nodes"), self.node_id)
            await self.client.hdel(self._key("synced"), self.node_id)
            await self.client.delete(self._key(f"nodeapps:{self.node_id}"))

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        # The flag as well as the cancel: a cancel that lands inside a Redis command can come out of
        # redis-py as a connection error, and the loop would go on after stop_node.
        while not self._stopping:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except (RedisError, OSError, StoreUnavailable) as exc:
                if self._stopping:
                    return
                self.outage_seen()
                if self._healthy:
                    log.warning("Redis unavailable (%s); node state will be re-synced", exc)
                self._healthy = False
                self.needs_sync = True
            except Exception:
                log.exception("%s failed", getattr(job, "__name__", "job"))

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def heartbeat(self) -> None:
        """Renew the lease and the keys' TTLs; after an outage, a Redis restart or a reap, rewrite this
        node's records (and wait for that)."""
        task = await self.renew()
        if task is not None:
            await asyncio.shield(task)

    async def renew(self) -> asyncio.Task[None] | None:
        """`heartbeat` without waiting for the re-sync it starts, so the lease keeps being renewed
        while a re-sync waits for the bus (the heartbeat loop)."""
        async with self._beat:
            return await self._renew()

    async def _renew(self) -> asyncio.Task[None] | None:
        expiry_ms = int((self.clock() + self.lease_s) * 1000)
        apps_key = self._key(f"nodeapps:{self.node_id}")
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self._key("nodes"), {self.node_id: expiry_ms})
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
            if self.boot_gate:
                pipe.get(self._key("boot"))
                pipe.pexpire(self._key("synced"), self.key_ttl_ms)
            results = await pipe.execute()
        self.health.report(COMMANDS, True)
        if self._reap_not_before == math.inf:
            self._reap_not_before = self.clock() + self.lease_s
        self._registered_apps = set(self.mirror)
        running = self._resync_task is not None and not self._resync_task.done()
        if running:
            return self._resync_task
        newly_added = results[0] == 1
        boot = self.boot
        if self.boot_gate:
            raw = results[-2]
            boot = raw.decode() if raw is not None else await self._ensure_boot()
        new_boot = boot != self.boot
        if new_boot or newly_added or self.needs_sync or not self._healthy:
            # Redis restarted (or this is the node's first heartbeat), the node was reaped while
            # partitioned, or writes failed during an outage: rewrite its records, in the background.
            if self._healthy and newly_added and self.mirror and not new_boot:
                log.warning("node %s was missing from Redis; re-registering its state", self.node_id)
            self._resync_task = self._spawn(self._resync(boot, new_boot))
            return self._resync_task
        return None

    async def _ensure_boot(self) -> str:
        restart = "1" if self.boot is not None else "0"
        raw = await self.script(BOOT_ENSURE, [self._key("boot"), self._key("boot:meta")],
                                [secrets.token_hex(8), restart])
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def _resync(self, boot: str | None, new_boot: bool) -> None:
        """Re-subscribe, rewrite this node's records (for a new boot of Redis: record that), and report
        what changed once the cluster is synced."""
        first = self.boot is None
        self._healthy = False
        if new_boot:
            self.boot_changed()
            if not first:
                log.warning("Redis restarted (boot %s); re-syncing node %s", boot, self.node_id)
        try:
            await self._await_subscribed()
            # After a restart, what this node writes back already held before: not new to anyone.
            changes = await self.sync_all(report_ups=not new_boot)
            if self.boot_gate and boot is not None:
                await self.client.hset(self._key("synced"), self.node_id, boot)
        except (RedisError, OSError, StoreUnavailable) as exc:
            log.warning("re-sync of node %s failed (%s); retrying", self.node_id, exc)
            self.needs_sync = True
            return
        self.boot = boot
        self._healthy = True
        if self.boot_gate:
            with contextlib.suppress(RedisError, OSError):
                await self.check_cluster()
        if new_boot and first and not changes:
            return  # starting up: nothing to tell anyone
        # In the background: the report may wait for the rest of the cluster to re-sync.
        self._spawn(self._report(changes, resynced=not (new_boot and first), wait_cluster=self.boot_gate))

    async def _await_subscribed(self) -> None:
        """Return once this node's bus subscriber receives from the Redis now answering (so it gets
        what is published from now on); raise StoreUnavailable if it doesn't in time.

        Proven by a probe that came back, not by Redis counting the subscription: after a partition
        heals, Redis still lists the node's old subscriber connection while that connection carries
        nothing for seconds more (docs/cluster.md, "Partitions"). A probe that doesn't come back
        replaces the connection."""
        if not self.boot_gate:
            return
        channel = f"#node-{self.node_id}"
        if not self._control_subscribed:
            # App id "" is never an app's, so the topic can't collide with a channel.
            try:
                await self.bus.subscribe("", channel)
            except BusUnavailable as exc:
                raise StoreUnavailable(f"the bus subscriber is not back: {exc}") from exc
            self._control_subscribed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUBSCRIBED_WAIT_S
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise StoreUnavailable("the bus subscriber did not receive a probe in time")
            try:
                if await self.bus.probe("", channel, min(PROBE_TIMEOUT_S, left)):
                    return
            except BusUnavailable as exc:
                raise StoreUnavailable(f"cannot probe the bus subscriber: {exc}") from exc
            self.bus.reconnect("", channel, f"did not deliver a probe in {PROBE_TIMEOUT_S:.0f}s")

    async def watch_boot(self) -> None:
        """Every BOOT_POLL_S: notice a restart of Redis, and whether the cluster is synced."""
        raw = await self.client.get(self._key("boot"))
        if raw is None or raw.decode() != self.boot:
            self.boot_changed()
            await self.renew()
        elif not self._cluster_synced:
            await self.check_cluster()

    async def check_cluster(self) -> bool:
        """Read whether every live node is synced to this node's boot (module docstring)."""
        boot, ready = await self.script(
            CLUSTER_STATE, [self._key("boot"), self._key("boot:meta"), self._key("nodes"), self._key("synced")],
            [int(self.clock() * 1000), int(self.boot_grace_s * 1000)],
        )
        synced = bool(ready) and boot is not None and boot.decode() == self.boot
        if synced != self._cluster_synced:
            self._cluster_synced = synced
            if synced:
                self._synced.set()
                log.info("cluster synced to Redis boot %s", self.boot)
            else:
                self._synced.clear()
        return synced

    async def _report(self, changes: list[Transitions], resynced: bool, wait_cluster: bool = False) -> None:
        """Publish repair transitions (once every node can receive them) and refresh what was built
        from events this node may have missed."""
        if wait_cluster and not await self.wait_synced(CLUSTER_WAIT_S):
            log.warning("cluster not synced after %.0f s; publishing repair transitions anyway", CLUSTER_WAIT_S)
        for transitions in changes:
            if transitions.recount:
                await self._recount(transitions)
            await self._emit(transitions)
        if resynced:
            for listener in self._resynced_listeners:
                try:
                    await listener()
                except Exception:
                    log.warning("re-sync listener failed", exc_info=True)

    async def _recount(self, transitions: Transitions) -> None:
        """Subscription counts of channels a failed leave changed, read once every node re-synced."""
        channels = sorted(transitions.recount)
        values = await self.client.hmget(f"{self.base(transitions.app_id)}:occ", channels)
        transitions.counts = [(ch, int(v) if v is not None else 0) for ch, v in zip(channels, values, strict=True)]

    async def sync_all(self, report_ups: bool = True) -> list[Transitions]:
        """Rewrite this node's records of every app; the transitions (see `sync`). Without
        `report_ups`, subscription counts are left for `_recount` (other nodes are re-syncing too)."""
        out = []
        async with self.gate.exclusive():
            failed_occ, failed_pres = set(self.failed_occ), dict(self.failed_pres)
            failed_users = set(self.failed_users)
            for app_id in list(self.mirror):
                transitions = await self.sync(app_id, self.node_id, self.mirror[app_id], report_ups)
                await self._settle_failed_leaves(transitions, failed_occ, failed_pres, failed_users)
                if not report_ups:
                    transitions.counts = []
                    transitions.recount = {ch for app, ch in failed_occ if app == app_id}
                if transitions or transitions.recount:
                    out.append(transitions)
            # Only a complete pass clears the repair work; a failure leaves it for the next heartbeat.
            self.needs_sync = False
            self.failed_occ -= failed_occ
            self.failed_users -= failed_users
            for key in failed_pres:
                self.failed_pres.pop(key, None)
        return out

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
        seen_vacated = {c.channel for c in transitions.vacated}
        vacated: list[str] = []
        channels = [ch for app, ch in failed_occ if app == app_id and ch not in seen_vacated]
        if channels:
            values = await self.client.hmget(f"{base}:occ", channels)
            vacated = [ch for ch, value in zip(channels, values, strict=True) if value is None or int(value) <= 0]
        seen = {(c.channel, c.member.key) for c in transitions.removed}
        removed: list[tuple[str, Member]] = []
        members = [(ch, m) for (app, ch, key), m in failed_pres.items() if app == app_id and (ch, key) not in seen]
        if members:
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, member in members:
                    pipe.hexists(f"{base}:pc:{channel}", member.key)
                present = await pipe.execute()
            removed = [m for m, here in zip(members, present, strict=True) if not here]
        if vacated or removed:
            stamps = iter(await self.script(CLOCK_STAMPS, [f"{base}:clock"],
                                            [len(vacated) + len(removed), CLOCK_KEEP_MS]))
            transitions.vacated.extend(ChannelChange(ch, int(next(stamps))) for ch in vacated)
            transitions.removed.extend(MemberChange(ch, m, int(next(stamps))) for ch, m in removed)
        users = [u for app, u in failed_users if app == app_id and u not in transitions.offline]
        if users:
            values = await self.client.hmget(f"{base}:uc", users)
            for user, value in zip(users, values, strict=True):
                if value is None or int(value) <= 0:
                    transitions.offline.append(user)

    async def sync(self, app_id: str, node_id: str, mirror: Mirror, report_ups: bool = True) -> Transitions:
        """Run `node_sync` for one app of `node_id` with `mirror` as what it holds. With `report_ups`
        False, what the node adds back is not reported as new (the state had lost it)."""
        base = self.base(app_id)
        args: list[Any] = [base, node_id, mirror.conns, 1 if report_ups else 0, CLOCK_KEEP_MS, PAIR_WINDOW_MS,
                           len(mirror.occ)]
        for channel, count in mirror.occ.items():
            args += [channel, count]
        args.append(len(mirror.pres))
        for (channel, user), (count, encoded) in mirror.pres.items():
            args += [presence_field(channel, user), count, encoded]
        args.append(len(mirror.users))
        for user, count in mirror.users.items():
            args += [user, count]
        keys = [f"{base}:occ", f"{base}:occn:{node_id}", f"{base}:presn:{node_id}", f"{base}:conns",
                f"{base}:uc", f"{base}:ucn:{node_id}", f"{base}:clock"]
        occupied, vacated, added, removed, online, offline, counts = await self.script(NODE_SYNC, keys, args)
        return Transitions(
            app_id,
            occupied=[ChannelChange(occupied[i].decode(), int(occupied[i + 1]), int(occupied[i + 2]))
                      for i in range(0, len(occupied), 3)],
            vacated=[ChannelChange(vacated[i].decode(), int(vacated[i + 1])) for i in range(0, len(vacated), 2)],
            added=[MemberChange(added[i].decode(), member_from_json(added[i + 1]), int(added[i + 2]),
                                int(added[i + 3])) for i in range(0, len(added), 4)],
            removed=[MemberChange(removed[i].decode(), member_from_json(removed[i + 1]), int(removed[i + 2]))
                     for i in range(0, len(removed), 3)],
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

    def outage_seen(self) -> None:
        """Redis could not be reached: hold the reaper until one lease after it can be again."""
        self.health.report(COMMANDS, False)
        self._reap_not_before = math.inf

    async def reap(self) -> None:
        """If this node holds the reaper lock, remove every node whose lease expired.

        Not within one lease after this node's own outage: the others' leases ran out during it too
        (a Redis failover takes longer than a lease), and they renew them once they reach Redis again.
        """
        if self.clock() < self._reap_not_before:
            return
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
        dead = await self.client.zrangebyscore(self._key("nodes"), "-inf", now_ms)
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
        await self.client.zrem(self._key("nodes"), node)
        await self.client.hdel(self._key("synced"), node)
        metrics.REAPED_NODES.inc()


def _conforms(node: RedisNode) -> NodeLease:
    return node  # checked by mypy: RedisNode implements NodeLease
