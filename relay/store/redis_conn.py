"""Which Redis to talk to: an external URL, or the embedded server (started once, shared).

Rule 1: ``[redis] url = "embedded"`` means one private server per data folder. The process that
        starts it writes ``<data_dir>/server.port``; any other relay command (``relay consent``,
        ``relay audit`` ...) finds the running server through that file instead of starting a
        second server on the same files, and starts its own only when none answers.
Rule 2: every client gets the configured timeout on connect and on every call.
Rule 3: ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` with TLS) names seed
        nodes of a Redis Cluster (or a Valkey one); the client learns the other nodes and the
        slot map from them and follows failovers and slot migrations by itself. Any one
        reachable seed is enough; listing several lets the relay start while one is down.
Rule 4: a plain ``redis://`` server is reached through ``multiplexed.MultiplexedRedis``: one
        connection per process that writes the commands of all sessions together.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.cluster
import redis.retry
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel as SyncSentinel

from relay.settings import RedisSettings
from relay.settings_redis import ClusterURL, is_cluster_url, parse_cluster_url
from relay.store.embedded import EmbeddedRedis
from relay.store.multiplexed import MultiplexedRedis
from relay.time_limits import time_limit

PORT_FILE = "server.port"
T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``await`` with a time limit. Unlike ``asyncio.wait_for`` on Python 3.11, it never loses
    a cancellation that arrives as the awaited call completes (a stopping relay would then
    wait for a task that goes on running)."""
    with time_limit(seconds):
        return await awaitable


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def running_url(settings: RedisSettings) -> str | None:
    """The URL of the configured server when it is external or an embedded one already runs."""
    if settings.url != "embedded":
        return settings.url
    port_file = Path(settings.data_dir) / PORT_FILE
    if port_file.exists():
        text = port_file.read_text().strip()
        if text.isdigit() and _answers(int(text)):
            return f"redis://127.0.0.1:{int(text)}/0"
    return None


def resolve(settings: RedisSettings) -> tuple[str, EmbeddedRedis | None]:
    """The URL to use, and the embedded server this call started (the caller stops it)."""
    url = running_url(settings)
    if url is not None:
        return url, None
    data_dir = Path(settings.data_dir)
    port_file = data_dir / PORT_FILE
    server = EmbeddedRedis(data_dir).start()
    port_file.write_text(str(server.port))
    return server.url, server


SENTINEL_SCHEME = "redis+sentinel://"


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """``redis+sentinel://[:password@]host1:26379,host2:26379/<service>[/<db>]`` ->
    (sentinels, service name, database, password). Several relays behind a load balancer
    share one Redis; Sentinel gives that Redis a standby without changing the relay's URL."""
    rest = url.removeprefix(SENTINEL_SCHEME)
    password: str | None = None
    if "@" in rest:
        credentials, rest = rest.rsplit("@", 1)
        password = unquote(credentials.partition(":")[2] or credentials) or None
    hosts, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    if not hosts or not service:
        raise ValueError(f"{url!r}: expected {SENTINEL_SCHEME}host:port[,host:port]/service[/db]")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: {item!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    return sentinels, service, int(db or 0), password


# The relay's clients: one server (plain or through Sentinel) or a cluster.
AsyncRedis: TypeAlias = aioredis.Redis | RedisCluster
SyncRedis: TypeAlias = redis.Redis | redis.cluster.RedisCluster


class _Cluster(RedisCluster):
    """redis-py's asyncio cluster client, made safe for concurrent first use.

    redis-py 8.1 picks a command's routing policy before it learns the slot map, so commands
    issued concurrently by a fresh (or re-initialising) client go to random nodes and come
    back MOVED; every fifth MOVED makes the client close all its connections, under the
    commands still using them (``AttributeError: 'NoneType' object has no attribute
    'writelines'``). Learning the slot map first routes every command right.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def _cluster_kwargs(parsed: ClusterURL, settings: RedisSettings, retry: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "username": parsed.username,
        "password": parsed.password,
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        # A master that fails over is replaced within seconds; the relay's own timeouts
        # bound each call, so the client need not fail the whole cluster's coverage.
        "require_full_coverage": False,
        # A MOVED reply (failover, slot migration) patches that slot only, instead of
        # closing every connection each fifth time under the commands using them.
        "reinitialize_steps": 0,
        # No retry by the client: it would re-send a whole pipeline, writes that reached a
        # live master included, after closing every connection of the client. The stores
        # handle a failed call themselves (fail closed, journal and replay idempotently).
        "retry": retry,
    }
    if parsed.tls:
        kwargs.update(ssl=True, **parsed.options)
    return kwargs


def cluster_client(url: str, settings: RedisSettings) -> RedisCluster:
    parsed = parse_cluster_url(url)
    nodes = [ClusterNode(host, port) for host, port in parsed.seeds]
    return _Cluster(startup_nodes=nodes, **_cluster_kwargs(parsed, settings, Retry(NoBackoff(), 0)))


def sync_cluster_client(url: str, settings: RedisSettings) -> redis.cluster.RedisCluster:
    parsed = parse_cluster_url(url)
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in parsed.seeds]  # type: ignore[no-untyped-call]
    kwargs = _cluster_kwargs(parsed, settings, redis.retry.Retry(NoBackoff(), 0))
    return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)


class _TimedWrites:
    """redis-py's connection with its writes bounded by ``time_limits.time_limit`` rather than
    ``asyncio.wait_for``, which on Python 3.11 runs every command's write in a task of its
    own (about ten per message, a few percent of the relay's CPU). Same limit, same errors:
    a write that runs out disconnects and raises redis-py's ``TimeoutError``."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        limit = self.socket_timeout
        if not limit:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        # Without a socket timeout redis-py writes directly; the read that follows in the
        # same call (a health check's PING) stays bounded by the limit set here.
        self.socket_timeout = None
        try:
            with time_limit(limit):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit


class _TimedConnection(_TimedWrites, aioredis.Connection):
    pass


class _TimedSSLConnection(_TimedWrites, aioredis.SSLConnection):
    pass


def async_client(url: str, settings: RedisSettings) -> AsyncRedis:
    if is_cluster_url(url):
        return cluster_client(url, settings)
    if url.startswith(SENTINEL_SCHEME):
        sentinels, service, db, password = parse_sentinel_url(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
        )
        master: aioredis.Redis = sentinel.master_for(
            service,
            db=db,
            password=password,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
        )
        return master
    timed: dict[str, Any] = {}
    # Rule 4: on a plain server the commands of every session share one connection and one
    # write per loop iteration; redis-py's pool stays for what needs a connection of its own.
    client_class = MultiplexedRedis if url.startswith("redis://") else aioredis.Redis
    if url.startswith("redis://"):
        timed["connection_class"] = _TimedConnection
    elif url.startswith("rediss://"):
        timed["connection_class"] = _TimedSSLConnection
    return client_class.from_url(
        url,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        health_check_interval=30,
        **timed,
    )


def sync_client(url: str, settings: RedisSettings) -> SyncRedis:
    if is_cluster_url(url):
        return sync_cluster_client(url, settings)
    if url.startswith(SENTINEL_SCHEME):
        sentinels, service, db, password = parse_sentinel_url(url)
        sentinel = SyncSentinel(sentinels, socket_timeout=settings.timeout)  # type: ignore[no-untyped-call]
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            service, db=db, password=password, socket_timeout=settings.timeout
        )
        return master
    return redis.Redis.from_url(
        url, socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout
    )
