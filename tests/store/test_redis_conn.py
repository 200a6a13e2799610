"""Which Redis the relay talks to: a Sentinel-managed one, for several relays sharing Redis."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from relay.settings import RedisSettings
from relay.store.embedded import EmbeddedRedis, free_port, server_binary
from relay.store.redis_conn import async_client, parse_sentinel_url, sync_client


@pytest.fixture
def sentinel(
    tmp_path: Path, private_redis: Callable[[], EmbeddedRedis]
) -> Iterator[tuple[int, EmbeddedRedis]]:
    master = private_redis()
    port = free_port()
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: it must be writable
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor relaymaster 127.0.0.1 {master.port} 1\n"
    )
    process = subprocess.Popen(
        [server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, master
    process.terminate()
    process.wait(timeout=10)


async def test_sentinel_url_reaches_the_master(sentinel: tuple[int, EmbeddedRedis]) -> None:
    port, master = sentinel
    url = f"redis+sentinel://127.0.0.1:{port}/relaymaster/0"
    settings = RedisSettings(url=url, timeout=2.0)
    client = async_client(url, settings)
    assert isinstance(client, aioredis.Redis)
    await client.set("through-sentinel", "yes")
    for monitor in client.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        await monitor.aclose()
    await client.aclose()
    direct = sync_client(master.url, settings)
    assert direct.get("through-sentinel") == b"yes"
    direct.close()
    via_sync = sync_client(url, settings)
    assert isinstance(via_sync, redis.Redis)
    assert via_sync.get("through-sentinel") == b"yes"
    for monitor in via_sync.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        monitor.close()
    via_sync.close()


def test_sentinel_url_parsing() -> None:
    assert parse_sentinel_url("redis+sentinel://:s3cret@a:26379,[::1]:26380/svc/2") == (
        [("a", 26379), ("::1", 26380)],
        "svc",
        2,
        "s3cret",
    )
    with pytest.raises(ValueError, match="service"):
        parse_sentinel_url("redis+sentinel://a:26379")
    with pytest.raises(ValueError, match="host:port"):
        parse_sentinel_url("redis+sentinel://a/svc")
