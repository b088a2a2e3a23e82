"""The bus's subscriber and the command client built by one `RedisConnector`, against real
redis-servers over every transport (plain TCP, a unix socket, TLS), and what happens when TLS or
credentials are wrong: a clear error, never a silent fallback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.bus.base import BusUnavailable, Envelope
from shared.bus.redis_impl import RedisBus
from shared.redis.acl import acl_rule
from shared.redis.connection import RedisConnector, TlsOptions, parse_redis_url
from shared.redis.health import COMMANDS, RedisHealth
from tests.redis_server import RedisServer
from tests.tcpproxy import DelayProxy
from tests.tlscerts import Certs, make_certs

WAIT_S = 10.0


def client_tls(certs: Certs, **overrides: object) -> TlsOptions:
    options = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
    return TlsOptions(**{**options, **overrides})  # type: ignore[arg-type]


class Probe:
    """A bus and a command client from one connector; records what the bus delivers."""

    def __init__(self, url: str, tls: TlsOptions | None = None, prefix: str = "herald") -> None:
        self.connector = RedisConnector(parse_redis_url(url, tls))
        self.client = self.connector.command_client(cluster=False)
        self.health = RedisHealth()
        self.health.report(COMMANDS, True)  # no node here: only the subscriber's part counts
        self.bus = RedisBus(self.connector, f"{prefix}:{uuid.uuid4().hex[:6]}", self.client, False, self.health)
        self.received: asyncio.Queue[Envelope] = asyncio.Queue()
        self.bus.set_receiver(self.received.put_nowait)

    async def round_trip(self) -> None:
        """Subscribe, publish through the command client, receive through the subscriber."""
        await self.bus.subscribe("app", "news")
        await self.bus.publish(Envelope("app", "news", "e", "payload"))
        got = await asyncio.wait_for(self.received.get(), WAIT_S)
        assert (got.channel, got.data) == ("news", "payload")

    async def close(self) -> None:
        await self.bus.close()
        await self.client.aclose()
        await self.connector.aclose()


@pytest.fixture
async def probes() -> AsyncIterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        await probe.close()


async def started(probes: list[Probe], url: str, tls: TlsOptions | None = None, prefix: str = "herald") -> Probe:
    probe = Probe(url, tls, prefix)
    probes.append(probe)
    await probe.bus.start()
    return probe


async def test_tcp(redis_url: str, probes: list[Probe]) -> None:
    probe = await started(probes, redis_url)
    await probe.round_trip()
    assert probe.health.up and [c.node for c in probe.bus.connections] == [None]


async def test_unix_socket(redis_unix: RedisServer, probes: list[Probe]) -> None:
    """The subscriber connects to the socket too (it used to try localhost:6379 and stay silent)."""
    probe = await started(probes, redis_unix.url)
    await probe.round_trip()
    assert probe.health.up


async def test_tls_with_ca_and_client_certificate(redis_tls: RedisServer, redis_certs: Certs,
                                                  probes: list[Probe]) -> None:
    probe = await started(probes, redis_tls.url, client_tls(redis_certs))
    await probe.round_trip()
    assert probe.health.up
    # Host names are checked against the certificate: "localhost" is in it as well as 127.0.0.1.
    by_name = await started(probes, redis_tls.url.replace("127.0.0.1", "localhost"), client_tls(redis_certs))
    await by_name.round_trip()


async def test_tls_connections_share_the_connectors_context(redis_tls: RedisServer, redis_certs: Certs,
                                                          probes: list[Probe]) -> None:
    """redis-py builds a TLS context for every new connection (loading the system's CA store: ~47 ms
    of CPU on the event loop each), so 20 concurrent commands on a fresh client stalled the loop for
    about a second and timed out their own connects. Every connection uses the connector's context."""
    probe = Probe(redis_tls.url, client_tls(redis_certs))
    probes.append(probe)
    pool = probe.client.connection_pool
    assert pool.make_connection().ssl_context.get() is probe.connector._ssl_context
    assert await asyncio.gather(*(probe.client.incr("herald:tls-burst") for _ in range(20)))
    assert int(await probe.client.get("herald:tls-burst")) == 20
    await probe.client.delete("herald:tls-burst")


async def test_tls_cluster_nodes_share_the_connectors_context(tmp_path: Path, redis_certs: Certs) -> None:
    """The same on a Redis Cluster over TLS: the nodes known at start and those found later."""
    from tests.redis_server import RedisClusterFixture

    cluster = RedisClusterFixture(tmp_path, tls=redis_certs).start()
    connector = RedisConnector(parse_redis_url(cluster.url, client_tls(redis_certs)))
    client = connector.command_client(cluster=True)
    try:
        await client.initialize()  # as the backend does before use (shared/redis/backend.py)
        await asyncio.gather(*(client.incr(f"herald:tls-burst:{i}") for i in range(30)))
        nodes = client.get_nodes()
        assert len(nodes) == 3
        for node in nodes:
            # How a node makes each new connection.
            made = node.connection_class(**node.connection_kwargs)
            assert made.ssl_context.get() is connector._ssl_context
    finally:
        await client.aclose()
        await connector.aclose()
        cluster.stop()


async def test_tls_refuses_a_server_signed_by_an_unknown_ca(
    redis_tls: RedisServer, tmp_path: Path, probes: list[Probe]
) -> None:
    stranger = make_certs(tmp_path / "other", ca_name="Some other CA")
    probe = await started(probes, redis_tls.url, client_tls(stranger))
    with pytest.raises(BusUnavailable, match="certificate verify failed"):
        await probe.bus.subscribe("app", "news")
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await probe.client.ping()
    assert not probe.health.up


async def test_tls_checks_the_host_name(tmp_path: Path, probes: list[Probe]) -> None:
    certs = make_certs(tmp_path / "certs", server_names=("redis.example.com",))
    server = RedisServer(tmp_path, tls=certs, tls_auth_clients="no").start()
    try:
        probe = await started(probes, server.url, TlsOptions(ca_file=str(certs.ca)))
        with pytest.raises(BusUnavailable, match="certificate verify failed: IP address mismatch"):
            await probe.bus.subscribe("app", "news")
        # --redis-tls-insecure skips the checks (for tests and emergencies), and says so in the log.
        insecure = await started(probes, server.url, TlsOptions(insecure=True))
        await insecure.round_trip()
    finally:
        server.cleanup()


async def test_tls_client_certificate_required_by_the_server(
    redis_tls: RedisServer, redis_certs: Certs, probes: list[Probe]
) -> None:
    probe = await started(probes, redis_tls.url, TlsOptions(ca_file=str(redis_certs.ca)))
    with pytest.raises(BusUnavailable):
        await probe.bus.subscribe("app", "news")
    with pytest.raises(RedisConnectionError):
        await probe.client.ping()


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("acl"), acl=[f"user herald {acl_rule('herald', 'herald-pw')}"],
                         username="herald", password="herald-pw").start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_acl_user_and_password(acl_server: RedisServer, probes: list[Probe]) -> None:
    probe = await started(probes, acl_server.url)
    await probe.round_trip()


async def test_wrong_password_is_named_in_the_error(acl_server: RedisServer, probes: list[Probe]) -> None:
    probe = await started(probes, acl_server.url.replace("herald-pw", "wrong"))
    with pytest.raises(BusUnavailable, match="WRONGPASS"):
        await probe.bus.subscribe("app", "news")


async def test_a_channel_the_acl_refuses_fails_the_subscription_at_once(
    acl_server: RedisServer, probes: list[Probe]
) -> None:
    """With a prefix outside the ACL's channel pattern, subscribing fails with Redis's reason (no timeout)."""
    probe = await started(probes, acl_server.url, prefix="elsewhere")
    with pytest.raises(BusUnavailable, match="NOPERM"):
        await asyncio.wait_for(probe.bus.subscribe("app", "news"), WAIT_S)
    # The refused topic is not retried on its own; the connection still serves others.
    assert probe.bus.connections[0].connected and probe.bus.connections[0].topics == set()


async def test_a_cluster_slot_that_moves_takes_its_subscription_along(tmp_path: Path) -> None:
    """Redis Cluster ends sharded subscriptions whose slot moved to another master; the bus subscribes
    again where the slot lives now, and delivery goes on."""
    from redis.cluster import key_slot

    from shared.redis.backend import redis_backend
    from tests.redis_server import RedisClusterFixture

    cluster = RedisClusterFixture(tmp_path).start()
    backend = redis_backend(cluster.url, prefix="moving", cluster=True)
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    backend.bus.set_receiver(received.put_nowait)
    try:
        await backend.start()
        await backend.bus.subscribe("app", "news")
        topic = b"moving:ev:app:news"
        owner = backend.client.get_node_from_key(topic)
        target = next(s for s in cluster.servers if s.port != owner.port)
        with target.client() as client:
            target_id = client.execute_command("CLUSTER", "MYID").decode()
        for server in cluster.servers:
            with server.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", key_slot(topic), "NODE", target_id)
        # Publish until an event arrives through the new owner (at most once: some may be lost meanwhile).
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            assert asyncio.get_running_loop().time() < deadline, "no delivery after the slot moved"
            with contextlib.suppress(BusUnavailable):
                await backend.bus.publish(Envelope("app", "news", "e", "after the move"))
            try:
                await asyncio.wait_for(received.get(), 0.2)
            except TimeoutError:
                continue
            subscribed = {conn.node[1]: conn.topics for conn in backend.bus.connections}  # type: ignore[attr-defined]
            if subscribed.get(target.port) == {topic}:
                break
        assert subscribed[owner.port] == set()
        while not received.empty():
            received.get_nowait()
        await backend.bus.publish(Envelope("app", "news", "e", "last"))
        assert (await asyncio.wait_for(received.get(), WAIT_S)).data == "last"
    finally:
        await backend.close()
        cluster.stop()


@contextlib.asynccontextmanager
async def freezable(tmp_path: Path, probes: list[Probe]) -> AsyncIterator[tuple[Probe, Callable[[int], None]]]:
    """A redis-server of the test's own, a probe that made a round trip through it, and a way to
    signal the server (SIGSTOP freezes it: its sockets stay open and say nothing). The server is
    thawed and removed however the test ends."""
    server = RedisServer(tmp_path).start()
    assert server.proc is not None
    try:
        probe = await started(probes, server.url)
        await probe.round_trip()
        yield probe, server.proc.send_signal
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.cleanup()


async def test_a_server_that_stops_answering_is_dropped_after_an_unanswered_ping(
    tmp_path: Path, probes: list[Probe]
) -> None:
    """A server that vanished without closing TCP (a dead VM, a partition) looks connected forever;
    the bus pings every connection and replaces one whose previous ping got no answer. Here the
    redis-server is frozen with SIGSTOP: its socket stays open and says nothing."""
    async with freezable(tmp_path, probes) as (probe, signal_server):
        [conn] = probe.bus.connections
        signal_server(signal.SIGSTOP)
        conn.ping()
        assert conn.connected  # one ping in flight is normal
        conn.ping()  # the previous one is still unanswered: the connection is given up
        await asyncio.wait_for(_until(lambda: not probe.health.up), WAIT_S)
        # A new connection is accepted by the kernel but counts as up only once Redis answers.
        assert not conn.connected
        signal_server(signal.SIGCONT)
        await asyncio.wait_for(_until(lambda: conn.connected and probe.health.up), WAIT_S)
        assert conn.reconnects == 1 and probe.health.reconnects == 1
        await probe.bus.publish(Envelope("app", "news", "e", "after"))
        assert (await asyncio.wait_for(probe.received.get(), WAIT_S)).data == "after"


async def test_a_topic_unsubscribed_while_a_connection_is_being_set_up_stops_arriving(
    tmp_path: Path, probes: list[Probe]
) -> None:
    """An unsubscription made while a reconnect waits for Redis's answers goes out on that connection
    (it was forgotten, and the topic went on arriving). Redis is frozen with SIGSTOP to hold the
    reconnect in its set-up."""
    async with freezable(tmp_path, probes) as (probe, signal_server):
        await probe.bus.subscribe("app", "old")
        [conn] = probe.bus.connections
        signal_server(signal.SIGSTOP)
        conn.ping()
        conn.ping()  # unanswered: replaced; the new connection's set-up waits for the frozen Redis
        await asyncio.wait_for(_until(lambda: conn.handshaking), WAIT_S)
        await probe.bus.unsubscribe("app", "old")
        signal_server(signal.SIGCONT)
        await asyncio.wait_for(_until(lambda: conn.connected), WAIT_S)
        # Published in this order on one connection: had "old" still been subscribed, it came first.
        await probe.bus.publish(Envelope("app", "old", "e", "unwanted"))
        await probe.bus.publish(Envelope("app", "news", "e", "wanted"))
        assert (await asyncio.wait_for(probe.received.get(), WAIT_S)).data == "wanted"
        assert conn.reconnects == 1


async def test_a_connection_that_delivers_is_kept_while_its_ping_is_held_up(
    redis_url: str, probes: list[Probe]
) -> None:
    """After a partition heals, Redis's side of a connection may resume before the node's PING gets
    through (its retransmission backs off). Messages arriving prove the connection alive: the
    keep-alive must not replace it, which would lose what is published during the reconnect."""
    proxy = await DelayProxy(urlsplit(redis_url).port or 6379, 0.0).start()
    try:
        probe = await started(probes, f"redis://127.0.0.1:{proxy.port}")
        await probe.round_trip()
        [conn] = probe.bus.connections
        proxy.up_delay_s = 3600.0  # from now on what the node sends is held up; what Redis sends flows
        conn.ping()
        direct = Redis.from_url(redis_url)
        try:
            topic = probe.bus.topic("app", "news")
            await direct.publish(topic, Envelope("app", "news", "e", "first").pack())
            assert (await asyncio.wait_for(probe.received.get(), WAIT_S)).data == "first"
            conn.ping()  # its PING is unanswered, but the connection delivered since: kept
            await direct.publish(topic, Envelope("app", "news", "e", "second").pack())
            assert (await asyncio.wait_for(probe.received.get(), WAIT_S)).data == "second"
        finally:
            await direct.aclose()
        assert conn.connected and conn.reconnects == 0
    finally:
        await proxy.stop()


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


async def test_a_cluster_master_that_dies_hands_its_subscriptions_to_the_replica_that_took_over(
    tmp_path: Path,
) -> None:
    """The subscriber can't reconnect to a dead master; once its replica owns the slots, the bus
    subscribes the topics there and delivery goes on."""
    from shared.redis.backend import redis_backend
    from tests.redis_server import RedisClusterFixture

    cluster = RedisClusterFixture(tmp_path, replicas=1, node_timeout_ms=1000).start()
    backend = redis_backend(cluster.url, prefix="failover", cluster=True)
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    backend.bus.set_receiver(received.put_nowait)
    topic = b"failover:ev:app:news"
    try:
        await backend.start()
        await backend.bus.subscribe("app", "news")
        owner = backend.client.get_node_from_key(topic)
        dead = next(s for s in cluster.servers if s.port == owner.port)
        dead.stop(signal.SIGKILL)
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # publish until an event arrives through the new master (some are lost meanwhile)
            assert asyncio.get_running_loop().time() < deadline, "no delivery after the master died"
            with contextlib.suppress(BusUnavailable, RedisConnectionError):
                await backend.bus.publish(Envelope("app", "news", "e", "after"))
            try:
                await asyncio.wait_for(received.get(), 0.3)
                break
            except TimeoutError:
                continue
        nodes = {conn.node[1]: conn.topics for conn in backend.bus.connections}  # type: ignore[attr-defined]
        assert owner.port not in nodes and topic in set().union(*nodes.values())
    finally:
        await backend.close()
        cluster.stop()
