"""Readiness for ``/readyz``: can this relay do its work right now?

Rule: each check is bounded by a short timeout and reports a sentence naming what is wrong;
liveness (``/healthz``) stays a separate, I/O-free answer so that an orchestrator does not
restart a relay merely because Redis or the upstream is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from redis.asyncio.cluster import RedisCluster

from relay.settings import Settings
from relay.store.redis_conn import AsyncRedis

TIMEOUT = 2.0


async def _redis(client: AsyncRedis) -> str | None:
    try:
        if isinstance(client, RedisCluster):
            return await _cluster(client)
        await asyncio.wait_for(client.ping(), TIMEOUT)
    except Exception as exc:
        return f"redis: {exc.__class__.__name__}: {exc}"
    return None


async def _cluster(client: RedisCluster) -> str | None:
    """Ready while any master answers: during a failover the relay keeps deciding (fail closed
    for the slots of the master that died), and every relay shares the same cluster, so taking
    them all out of the balancer would only turn a partial outage into a whole one."""
    await asyncio.wait_for(client.initialize(), TIMEOUT)
    masters = client.get_primaries()
    answers = await asyncio.gather(
        *(asyncio.wait_for(client.ping(target_nodes=node), TIMEOUT) for node in masters),
        return_exceptions=True,
    )
    if any(answer is True for answer in answers):
        return None
    return f"redis: no cluster master answers ({len(masters)} known)"


async def _upstream(url: str) -> str | None:
    if url.startswith("file:"):
        folder = Path(url.removeprefix("file:").removeprefix("//"))
        if folder.is_dir() and os.access(folder, os.W_OK):
            return None
        return f"upstream: outbox {folder} is not a writable folder"
    parts = urlsplit(url)
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "localhost", port), TIMEOUT
        )
    except Exception as exc:
        return f"upstream: cannot connect to {parts.hostname}:{port}: {exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def check_ready(settings: Settings, client: AsyncRedis) -> list[str]:
    found = await asyncio.gather(_redis(client), _upstream(settings.upstream.url))
    return [problem for problem in found if problem]
