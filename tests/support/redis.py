"""Clients for the tests' Redis, whichever the suite runs against (one server or a cluster).

Tests never build a client from a URL themselves: ``redis.Redis.from_url`` knows neither
``redis+cluster://`` nor the relay's timeouts. These go through ``relay.store.redis_conn``, the
code the relay itself uses, so that a test talks to Redis exactly as the relay does.
"""

from __future__ import annotations

from relay.settings import RedisSettings
from relay.store.redis_conn import AsyncRedis, SyncRedis
from relay.store.redis_conn import async_client as _async_client
from relay.store.redis_conn import sync_client as _sync_client


def async_client(url: str, timeout: float = 5.0) -> AsyncRedis:
    return _async_client(url, RedisSettings(url=url, timeout=timeout))


def sync_client(url: str, timeout: float = 5.0) -> SyncRedis:
    return _sync_client(url, RedisSettings(url=url, timeout=timeout))
