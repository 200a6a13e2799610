"""Which Redis to talk to: an external URL, or the embedded server (started once, shared).

Rule 1: ``[redis] url = "embedded"`` means one private server per data folder. The process that
        starts it writes ``<data_dir>/server.port``; any other relay command (``relay consent``,
        ``relay audit`` ...) finds the running server through that file instead of starting a
        second server on the same files, and starts its own only when none answers.
Rule 2: every client gets the configured timeout on connect and on every call.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.sentinel import Sentinel as SyncSentinel

from relay.settings import RedisSettings
from relay.store.embedded import EmbeddedRedis

PORT_FILE = "server.port"


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


def async_client(url: str, settings: RedisSettings) -> aioredis.Redis:
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
    return aioredis.Redis.from_url(
        url,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        health_check_interval=30,
    )


def sync_client(url: str, settings: RedisSettings) -> redis.Redis:
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
