from __future__ import annotations

import redis

from relay.store.embedded import EmbeddedRedis
from tests.support.redis import sync_client


def test_redis_fixture_is_a_real_server(redis_url: str) -> None:
    client = sync_client(redis_url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert b"valkey" in str(client.info("server")).encode().lower() or client.info("server")
    client.close()


def test_embedded_server_keeps_data_across_restart(private_redis) -> None:  # type: ignore[no-untyped-def]
    server: EmbeddedRedis = private_redis()
    client = redis.Redis.from_url(server.url)
    client.set("survives", "yes")
    client.close()
    server.stop()
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.get("survives") == b"yes"
    client.close()
