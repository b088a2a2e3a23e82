"""Redis pub/sub for the bus: a lean subscriber and a lean publisher on `hiredis.Reader`.

redis-py's asyncio pub/sub reader tops out near 100k messages/s on this class of machine; this
protocol parses replies with hiredis and hands each envelope to the hub straight from
`data_received`, several times faster, and it confirms every SUBSCRIBE before `subscribe()` returns.

Per-channel topics (docs/cluster.md, "Fan-out"): a node subscribes only to the channels its
sockets are in. With Redis Cluster the topics are sharded channels (SSUBSCRIBE/SPUBLISH), one
subscriber connection per shard that owns a topic's slot. Connections come from
`shared.redis.connection` (TLS, unix sockets, ACL users, Sentinel), the protocol state from
`shared.redis.subscriber`.

Publishing to one Redis (TCP, TLS, unix socket or under Sentinel; not Redis Cluster) goes through
`PublisherConnection`: every concurrent PUBLISH of the process is written to one pipelined connection
and the replies are matched in order. redis-py's command path (connection pool, retry, timeout
context, a task per `wait_for`) cost about 110 us of CPU per single-event trigger request, more than
the rest of the request together (`python -m loadtest api-cpu`). Redis Cluster keeps redis-py's
client, which routes each SPUBLISH to the shard owning its slot.

Delivery guarantee: at most once. While a subscriber connection is down, messages for its topics
are lost; it reconnects with capped, jittered exponential back-off and re-subscribes every topic
still wanted: under Sentinel to whichever server the sentinels name as master now; on a Redis
Cluster, topics whose slot another master owns now (resharding, a replica that took over) move
there. Connections are pinged, so one to a server that vanished without closing TCP is replaced.

Redis lists a subscriber connection as subscribed for as long as its end of the TCP connection is
open, and after a partition heals that can be a connection that carries nothing yet (its
retransmissions back off for seconds before either end notices). So "subscribed" is proven by a
message that came through (`RedisBus.probe`), not by Redis's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.exceptions import RedisError

from shared.bus.base import Bus, BusUnavailable, Envelope, GuardFailed, PublishGuard, Receiver
from shared.protocol import events
from shared.redis.connection import SOCKET_TIMEOUT_S, Address, RedisConnector
from shared.redis.health import RedisHealth
from shared.redis.scripts import load_script
from shared.redis.subscriber import (
    Dropped,
    Reply,
    Subscribed,
    SubscribeRefused,
    SubscriberState,
    encode_command,
)

log = logging.getLogger("herald.bus")

SUBSCRIBE_TIMEOUT_S = 5.0
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 1.0
# Every subscriber connection is pinged this often; one that has received nothing (no answer, no
# message) by the next ping is closed and reconnected (a server that vanished without closing TCP: a
# dead VM, a partition).
PING_INTERVAL_S = 5.0
# While reconnecting, the reason is logged on the first failure and then every this many attempts.
RECONNECT_LOG_EVERY = 30

BUS_PUBLISH = load_script("bus_publish")
BUS_PUBLISH_SHA = hashlib.sha1(BUS_PUBLISH.encode()).hexdigest()  # Redis names scripts by SHA-1


class _SubscriberProtocol(asyncio.Protocol):
    """Moves bytes between the transport and the connection's `SubscriberState`."""

    def __init__(self, owner: SubscriberConnection) -> None:
        self.owner = owner
        self.receive_data = owner.state.receive_data
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; duck typing serves both loops.
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Bytes arrived: the connection is alive, whether or not the pong is among them (after a
        # healed partition Redis's side may resume before our PING's retransmission gets through).
        self.owner.heard = True
        if self.receive_data(data):
            self.owner.on_events()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.on_lost(self)


class SubscriberConnection:
    """One connection to one Redis server carrying (S)SUBSCRIBE for a set of topics; reconnects (asking
    the connector where the server is now, so under Sentinel it follows the master) and re-subscribes."""

    def __init__(
        self,
        connector: RedisConnector,
        node: Address | None,
        sharded: bool,
        bus: RedisBus,
        health: RedisHealth | None = None,
    ) -> None:
        self.connector = connector
        self.node = node  # a Redis Cluster node, or None: the server the connector names
        self.bus = bus
        self.health = health
        self.name = f"subscriber {connector.describe_target(node)}"
        self.state = SubscriberState(sharded, bus.on_message)
        self.reconnects = 0
        self.last_error: str | None = None  # why the last connection attempt failed
        self.opening: asyncio.Future[None] | None = None  # the first connection attempt, while it runs
        self._acks: dict[bytes, list[asyncio.Future[None]]] = {}
        self._replies: list[asyncio.Future[Reply]] = []
        self._protocol: _SubscriberProtocol | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        # Whether anything arrived since the last ping was sent (set by the protocol on every read).
        self.heard = True
        self._handshaking = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    @property
    def handshaking(self) -> bool:
        """A new connection is open and its AUTH, subscriptions and PING are not all answered yet."""
        return self._handshaking

    @property
    def topics(self) -> set[bytes]:
        return self.state.topics

    async def connect(self) -> None:
        protocol = await self.connector.open_subscriber(lambda: _SubscriberProtocol(self), self.node)
        self._protocol = protocol
        self.heard = True
        self._handshaking = True
        try:
            # AUTH, re-subscribe every topic, then PING: its answer comes after every subscription's,
            # so the connection counts as up only once Redis answered and the topics are back.
            # Both replies may come in one read: wait for each from before sending.
            auth = self._expect_reply() if self.connector.auth[1] else None
            pong = self._expect_reply()
            self._write(self.state.connection_made(*self.connector.auth) + self.state.ping())
            if auth is not None:
                reply = await asyncio.wait_for(auth, SUBSCRIBE_TIMEOUT_S)
                if reply.error is not None:
                    raise ConnectionError(f"Redis refused the subscriber's credentials: {reply.error}")
            reply = await asyncio.wait_for(pong, SUBSCRIBE_TIMEOUT_S)
            if reply.error is not None:
                raise ConnectionError(f"Redis refused PING: {reply.error}")
        except BaseException:
            self._protocol = None  # so its connection_lost is ignored; the caller decides what follows
            self._replies.clear()
            protocol.transport.close()
            raise
        finally:
            self._handshaking = False
        self.last_error = None
        self._connected.set()
        if self.health is not None:
            self.health.report(self.name, True)

    def _expect_reply(self) -> asyncio.Future[Reply]:
        """A future for the reply to the next plain command sent (replies come back in order)."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._replies.append(fut)
        return fut

    def _write(self, data: bytes) -> None:
        if not data:
            return
        if self._protocol is None or self._protocol.transport is None:
            raise BusUnavailable("Redis subscriber connection is down")
        self._protocol.transport.write(data)

    def on_events(self) -> None:
        for event in self.state.take_events():
            if isinstance(event, Subscribed):
                self._settle(event.topic, None)
            elif isinstance(event, SubscribeRefused):
                log.error("Redis refused the subscription to %r: %s", event.topic, event.error)
                self._settle(event.topic, BusUnavailable(f"Redis refused the subscription: {event.error}"))
            elif isinstance(event, Dropped):
                self.bus.on_dropped(event.topic)
            elif event.command == b"PING" and not self._handshaking:
                pass  # the keep-alive's answer: the read itself counted (`heard`)
            elif self._replies:
                fut = self._replies.pop(0)
                if not fut.done():
                    fut.set_result(event)
            elif event.error is not None:
                log.warning("redis subscriber error: %s", event.error)

    def _settle(self, topic: bytes, error: Exception | None) -> None:
        waiters = self._acks.get(topic)
        if not waiters:
            return
        fut = waiters.pop(0)
        if not waiters:
            del self._acks[topic]
        if not fut.done():
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    def on_lost(self, protocol: _SubscriberProtocol | None = None) -> None:
        if protocol is not None and protocol is not self._protocol:
            return  # a connection given up on during its handshake
        self._protocol = None
        was_connected = self.connected
        self._connected.clear()
        for waiters in self._acks.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(BusUnavailable("Redis connection lost"))
        self._acks.clear()
        for reply in self._replies:
            if not reply.done():
                reply.set_exception(ConnectionError("Redis connection lost"))
        self._replies.clear()
        if self.health is not None and not self._closing:
            self.health.report(self.name, False)
        if not self._closing and self._reconnect_task is None:
            if was_connected:
                log.warning("redis %s lost; reconnecting", self.name)
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        delay = RECONNECT_MIN_S
        attempts = 0
        try:
            while not self._closing:
                try:
                    await self.connect()
                except (TimeoutError, OSError, ConnectionError, RedisError) as exc:
                    self.failed(exc)
                    if attempts % RECONNECT_LOG_EVERY == 0:
                        log.warning("redis %s: cannot connect (%s); retrying", self.name, self.last_error)
                    attempts += 1
                    if self.node is not None and await self.bus.reroute(self):
                        return  # a Redis Cluster replica took over every topic's slot: this one is done
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                self.reconnects += 1
                log.info("redis %s reconnected; %d topics re-subscribed", self.name, len(self.topics))
                return
        finally:
            self._reconnect_task = None

    def failed(self, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__

    def ping(self) -> None:
        """Send a PING; if nothing arrived since the previous one, the connection is dead: replace it."""
        if not self.connected or self._protocol is None:
            return
        if not self.heard:
            self.replace(f"did not answer a ping in {PING_INTERVAL_S:.0f}s")
            return
        self.heard = False
        self._write(self.state.ping())

    def replace(self, why: str) -> None:
        """Drop the current connection (it reconnects and re-subscribes every topic); a no-op while
        there is none."""
        if not self.connected or self._protocol is None or self._protocol.transport is None:
            return
        log.warning("redis %s %s; reconnecting", self.name, why)
        self._connected.clear()  # at once: nothing may count on this connection any more
        self._protocol.transport.abort()

    async def subscribe(self, topic: bytes) -> None:
        if not self.connected:
            self.state.topics.add(topic)
            reason = f" ({self.last_error})" if self.last_error else ""
            raise BusUnavailable(f"Redis is unavailable{reason}; subscription will be restored on reconnect")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.setdefault(topic, []).append(fut)
        self._write(self.state.subscribe(topic))
        try:
            await asyncio.wait_for(asyncio.shield(fut), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError as exc:
            raise BusUnavailable("Redis did not confirm the subscription in time") from exc

    def unsubscribe(self, topic: bytes) -> None:
        if self._protocol is None or self._protocol.transport is None:
            # No connection: the next one simply won't subscribe it. (Registering an UNSUBSCRIBE that
            # is never sent would leave a reply expected that never comes, and the next reply, a
            # pong or a subscription's, would be taken for it.)
            self.state.topics.discard(topic)
            return
        # Sent during a handshake too: it is answered after the handshake's own replies.
        self._write(self.state.unsubscribe(topic))

    def retire(self) -> None:
        """Stop reconnecting (nothing is wanted from this server any more)."""
        self._closing = True
        if self.health is not None:
            self.health.forget(self.name)

    async def close(self) -> None:
        self.retire()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()


class _PublisherProtocol(asyncio.Protocol):
    def __init__(self, owner: PublisherConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.owner.on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.on_lost(self)


class PublisherConnection:
    """PUBLISH commands of the whole process on one pipelined connection, replies matched in order.

    Connects on first use and again after a loss (through the connector: TLS, unix socket, Sentinel's
    current master); a command unanswered after `timeout_s` drops the connection (and fails every
    command waiting on it), so callers answer 503 instead of hanging."""

    def __init__(self, connector: RedisConnector, timeout_s: float = SOCKET_TIMEOUT_S) -> None:
        self.connector = connector
        self.timeout_s = timeout_s
        self._protocol: _PublisherProtocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()

    async def _connected(self) -> _PublisherProtocol:
        while self._protocol is None:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            try:
                await asyncio.shield(self._connecting)
            finally:
                if self._connecting is not None and self._connecting.done():
                    self._connecting = None
        return self._protocol

    async def _connect(self) -> None:
        try:
            protocol = await self.connector.open_subscriber(lambda: _PublisherProtocol(self))
        except (OSError, TimeoutError, RedisError) as exc:
            raise BusUnavailable(f"cannot reach Redis at {self.connector.describe_target(None)}: {exc}") from exc
        username, password = self.connector.auth
        if password:
            await self._setup(protocol, "AUTH", *[a for a in (username, password) if a])
        db = self.connector.settings.db
        if db:
            # PUBLISH ignores databases, but a guarded publish reads its guard key (Bus.publish_many).
            await self._setup(protocol, "SELECT", str(db))
        self._protocol = protocol

    async def _setup(self, protocol: _PublisherProtocol, command: str, *args: str) -> None:
        """One command on a new connection before it is used; the connection is dropped if it fails.
        The error names the command only (AUTH's arguments are secrets)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        protocol.transport.write(encode_command(command, *args))
        try:
            reply = await asyncio.wait_for(fut, self.timeout_s)
        except (TimeoutError, BusUnavailable) as exc:
            protocol.transport.abort()
            raise BusUnavailable(f"Redis did not answer {command}") from exc
        if isinstance(reply, hiredis.ReplyError):
            protocol.transport.close()
            raise BusUnavailable(f"Redis {command} failed: {reply}")

    async def send(self, commands: Sequence[bytes]) -> list[Any]:
        """Write the encoded commands in one go; their replies, in order."""
        protocol = await self._connected()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._waiting.extend(futures)
        protocol.transport.write(commands[0] if len(commands) == 1 else b"".join(commands))
        timer = loop.call_later(self.timeout_s, self._timed_out, protocol)
        try:
            await futures[-1]  # replies come in order: when the last is in, all are
        finally:
            timer.cancel()
        return [f.result() for f in futures]

    def on_reply(self, reply: Any) -> None:
        if self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(reply)

    def _timed_out(self, protocol: _PublisherProtocol) -> None:
        log.warning("Redis did not answer a PUBLISH within %.1fs; reconnecting", self.timeout_s)
        if protocol.transport is not None:
            protocol.transport.abort()

    def on_lost(self, protocol: _PublisherProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
        waiting, self._waiting = self._waiting, deque()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(BusUnavailable("Redis connection lost"))

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()


class RedisBus:
    """See `Bus`: Redis pub/sub with per-channel topics (`{prefix}:ev:{app}:{channel}`)."""

    def __init__(self, connector: RedisConnector, prefix: str, client: Any, cluster: bool,
                 health: RedisHealth | None = None) -> None:
        self.connector = connector
        self.prefix = prefix
        self.client = client  # redis.asyncio.Redis or RedisCluster, for publishing
        self.cluster = cluster
        self.health = health
        self._receivers: list[Receiver] = []
        self._refs: dict[bytes, int] = {}
        self._connections: dict[Address | None, SubscriberConnection] = {}
        self._pinger: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        # Probes in flight (`probe`): nonce -> resolved when that probe comes back.
        self._probes: dict[str, asyncio.Future[None]] = {}
        # One Redis: the lean publisher (see the module docstring); Redis Cluster: redis-py's client.
        self._publisher = None if cluster else PublisherConnection(connector)

    @property
    def connections(self) -> list[SubscriberConnection]:
        return list(self._connections.values())

    def set_receiver(self, receiver: Receiver) -> None:
        self._receivers.append(receiver)

    def topic(self, app_id: str, channel: str) -> bytes:
        return f"{self.prefix}:ev:{app_id}:{channel}".encode()

    def on_message(self, raw: bytes) -> None:
        try:
            env = Envelope.unpack(raw)
            if self._probes and env.event == events.BUS_PROBE:
                self._probe_returned(env)
                return
            for receiver in self._receivers:
                receiver(env)
        except Exception:
            log.exception("bus receiver failed")

    async def probe(self, app_id: str, channel: str, timeout_s: float) -> bool:
        """Whether a message published on this subscribed topic now comes back through this process's
        subscriber within `timeout_s`. True proves the path from Redis to this node works from now on
        (a connection delivers in order); Redis merely listing the subscription does not (module
        docstring); False when no connection came up in time or the probe did not come back.
        Published with the command client, not the pipelined publisher, which may be stalled by the
        same partition. BusUnavailable, no verdict on the subscriber, when that publish fails or the
        topic is not subscribed here."""
        topic = self.topic(app_id, channel)
        conn = self._connections.get(self._address_for(topic))
        if conn is None or topic not in conn.topics:
            raise BusUnavailable(f"{topic!r} is not subscribed here")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        nonce = secrets.token_hex(8)
        back = self._probes[nonce] = loop.create_future()
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await conn.wait_connected()
            except TimeoutError:
                return False
            try:
                async with asyncio.timeout_at(deadline):
                    await self._publish_by_client(Envelope(app_id, channel, events.BUS_PROBE, nonce, ts=time.time()))
            except TimeoutError:
                raise BusUnavailable("Redis did not answer the probe's publish in time") from None
            try:
                async with asyncio.timeout_at(deadline):
                    await back
            except TimeoutError:
                return False
            return True
        finally:
            self._probes.pop(nonce, None)

    def _probe_returned(self, env: Envelope) -> None:
        # A probe that comes back after its waiter gave up finds no future here (or, with no probe in
        # flight, goes to the receivers, which ignore it like anything on a topic no socket can join).
        back = self._probes.get(env.data)
        if back is not None and not back.done():
            back.set_result(None)

    def reconnect(self, app_id: str, channel: str, why: str) -> None:
        """Replace the subscriber connection that carries this topic (a failed `probe`): it reconnects
        and re-subscribes every topic it carries."""
        conn = self._connections.get(self._address_for(self.topic(app_id, channel)))
        if conn is not None:
            conn.replace(why)

    def on_dropped(self, topic: bytes) -> None:
        """Redis ended a subscription still wanted (its cluster slot moved): subscribe where it lives now."""
        if topic in self._refs:
            log.warning("Redis ended the subscription to %r; subscribing again", topic)
            task = asyncio.ensure_future(self._resubscribe(topic))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resubscribe(self, topic: bytes) -> None:
        with contextlib.suppress(BusUnavailable):
            if self.cluster:
                await self.client.nodes_manager.initialize()  # the slot map moved with the slot
            conn = await self._connection_for(topic)
            await conn.subscribe(topic)

    def _address_for(self, topic: bytes) -> Address | None:
        if not self.cluster:
            return None
        node = self.client.get_node_from_key(topic)
        return (node.host, node.port)

    async def _connection_for(self, topic: bytes) -> SubscriberConnection:
        """The connection for `topic`'s server, once its first connection attempt is over (concurrent
        callers wait for the same attempt); it may be down, and then reconnecting."""
        addr = self._address_for(topic)
        conn = self._connections.get(addr)
        if conn is None:
            conn = SubscriberConnection(self.connector, addr, self.cluster, self, self.health)
            self._connections[addr] = conn
            conn.opening = asyncio.ensure_future(self._open(conn))
        if conn.opening is not None:
            await asyncio.shield(conn.opening)
        return conn

    @staticmethod
    async def _open(conn: SubscriberConnection) -> None:
        try:
            await conn.connect()
        except (TimeoutError, OSError, ConnectionError, RedisError) as exc:
            conn.failed(exc)
            conn.on_lost()  # starts the reconnect loop
        finally:
            conn.opening = None

    async def reroute(self, conn: SubscriberConnection) -> bool:
        """A Redis Cluster node's subscriber can't reconnect: if other masters own its topics' slots now
        (a replica took over), subscribe them there. True when none is left for `conn`, which is then
        dropped."""
        try:
            await self.client.nodes_manager.initialize()
        except (RedisError, OSError) as exc:
            log.debug("could not refresh the Redis Cluster slot map: %s", exc)
            return False
        moved = [t for t in conn.topics if self._address_for(t) != conn.node]
        for topic in moved:
            conn.state.topics.discard(topic)
            try:
                target = await self._connection_for(topic)
                await target.subscribe(topic)  # restored on reconnect if that node is down too
            except BusUnavailable as exc:
                log.warning("moving the subscription to %r off %s: %s", topic, conn.name, exc)
        if moved:
            log.warning("redis %s is gone; %d topics moved to the masters that own their slots now",
                        conn.name, len(moved))
        if conn.topics:
            return False
        self._connections.pop(conn.node, None)
        conn.retire()
        return True

    async def start(self) -> None:
        if not self.cluster:
            await self._connection_for(b"")
        self._pinger = asyncio.create_task(self._ping_forever())

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            for conn in list(self._connections.values()):
                try:
                    conn.ping()
                except Exception:
                    log.exception("pinging %s failed", conn.name)

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        for conn in self._connections.values():
            await conn.close()
        self._connections.clear()
        if self._publisher is not None:
            self._publisher.close()

    async def _publish_lean(self, publisher: PublisherConnection, envelopes: Sequence[Envelope]) -> None:
        replies = await publisher.send([
            encode_command(b"PUBLISH", self.topic(env.app_id, env.channel), env.pack()) for env in envelopes
        ])
        failed = [r for r in replies if isinstance(r, hiredis.ReplyError)]
        if failed:
            error = BusUnavailable(f"Redis publish failed: {failed[0]}")
            error.sent = None
            raise error

    async def publish(self, envelope: Envelope) -> None:
        if self._publisher is not None:
            await self._publish_lean(self._publisher, (envelope,))
            return
        await self._publish_by_client(envelope)

    async def _publish_by_client(self, envelope: Envelope) -> None:
        """Through redis-py's command client: Redis Cluster's path, and the probe's."""
        topic = self.topic(envelope.app_id, envelope.channel)
        try:
            if self.cluster:
                await self.client.spublish(topic, envelope.pack())
            else:
                await self.client.publish(topic, envelope.pack())
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"Redis publish failed: {exc}") from exc

    async def publish_many(self, envelopes: Sequence[Envelope], guard: PublishGuard | None = None) -> None:
        """One pipelined round trip (non-transactional: each PUBLISH stands alone). With a `guard`, one
        script that checks it and publishes (nothing when it fails: GuardFailed); on a Redis Cluster a
        script can't publish to other slots' topics, so there the guard is not checked."""
        if self._publisher is not None:
            try:
                if guard is not None:
                    await self._publish_guarded(self._publisher, envelopes, guard)
                else:
                    await self._publish_lean(self._publisher, envelopes)
            except GuardFailed:
                raise
            except BusUnavailable as exc:
                exc.sent = None  # a lost connection may have delivered a prefix; Redis can't say how much
                raise
            return
        if len(envelopes) == 1:
            await self.publish(envelopes[0])
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for env in envelopes:
                    topic = self.topic(env.app_id, env.channel)
                    if self.cluster:
                        pipe.spublish(topic, env.pack())
                    else:
                        pipe.publish(topic, env.pack())
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # A pipeline that failed may have sent a prefix; Redis can't say how much.
            error = BusUnavailable(f"Redis publish failed: {exc}")
            error.sent = None
            raise error from exc

    async def _publish_guarded(self, publisher: PublisherConnection, envelopes: Sequence[Envelope],
                               guard: PublishGuard) -> None:
        parts: list[bytes | str] = ["1", guard.key, guard.value]
        for env in envelopes:
            parts += [self.topic(env.app_id, env.channel), env.pack()]
        [reply] = await publisher.send([encode_command(b"EVALSHA", BUS_PUBLISH_SHA, *parts)])
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            [reply] = await publisher.send([encode_command(b"EVAL", BUS_PUBLISH, *parts)])  # Redis restarted
        if isinstance(reply, hiredis.ReplyError):
            error = BusUnavailable(f"Redis publish failed: {reply}")
            error.sent = None
            raise error
        if reply == -1:
            raise GuardFailed("Redis restarted; the cluster is re-syncing")

    async def subscribe(self, app_id: str, channel: str) -> None:
        topic = self.topic(app_id, channel)
        refs = self._refs.get(topic, 0)
        self._refs[topic] = refs + 1
        if refs:
            return
        try:
            conn = await self._connection_for(topic)
            await conn.subscribe(topic)
        except BaseException:
            await self.unsubscribe(app_id, channel)
            raise

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        topic = self.topic(app_id, channel)
        refs = self._refs.get(topic, 0) - 1
        if refs > 0:
            self._refs[topic] = refs
            return
        self._refs.pop(topic, None)
        conn = self._connections.get(self._address_for(topic))
        if conn is not None:
            conn.unsubscribe(topic)


def _conforms(bus: RedisBus) -> Bus:
    return bus  # checked by mypy: RedisBus implements Bus
