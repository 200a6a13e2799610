"""Reads and scans that span many keys, the same code on one server and on a Redis Cluster.

Stage: async edge helpers of the stores and the CLI.
Input: a client (``redis_conn.AsyncRedis`` / ``SyncRedis``) and key names or a match pattern.
Output: values in the order asked, or every matching key exactly once.

Rule 1: keys of different hash slots are never read with one multi-key command (a cluster would
        refuse it with CROSSSLOT): ``get_many`` pipelines one GET per key, which a cluster
        client sends to each master at once, one round trip per master.
Rule 2: ``scan_keys`` lists every matching key of every master. A key moves between masters
        only while its slot migrates, and a scan may then miss it (scanned on the target
        before it arrived, gone from the source when the source is scanned). So the scan
        reads the slot map and the migrations before and after; it is kept only when both
        show no migration and the same map, else it is repeated, and after ``SCAN_ATTEMPTS``
        unstable rounds the caller gets a ``StoreUnavailable`` naming the migration instead of
        a silently incomplete answer. Queries that know their keys' names (audit buckets,
        last-open buckets) need none of this: the client follows MOVED/ASK to the key.
Rule 4: ``per_master`` reads keys in one pipeline per master, concurrently, so that a master
        that is down (a failover in progress) fails only the keys it serves: the consent of
        the other recipients of a message is still read, and only theirs fails closed.
Rule 3: ``queue_script`` pipelines ``EVAL`` (the script text): a replica promoted by a failover
        has an empty script cache, where a pipelined EVALSHA would fail half-way through a
        batch (the writes of ``replicated`` send EVALSHA and resend only what failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis.cluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from relay.errors import StoreUnavailable
from relay.store.redis_conn import AsyncRedis, SyncRedis

SCAN_ATTEMPTS = 5
SCAN_RETRY_PAUSE = 1.0  # seconds between unstable scans (a slot's keys move in batches)

AnyPipeline = Pipeline | ClusterPipeline


def is_cluster(client: AsyncRedis | SyncRedis) -> bool:
    return isinstance(client, RedisCluster | redis.cluster.RedisCluster)


def queue_script(pipe: AnyPipeline, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue one script call (Rule 3); a cluster routes it by its first key."""
    pipe.execute_command("EVAL", script, len(keys), *keys, *args)


async def get_many(client: AsyncRedis, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys`` (None where absent), in order, whatever their slots (Rule 1)."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(await pipe.execute())


def sync_get_many(client: SyncRedis, keys: Sequence[str]) -> list[Any]:
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(pipe.execute())


async def per_master(
    client: AsyncRedis, keys: Sequence[str], queue: Callable[[AnyPipeline, str], object]
) -> list[Any]:
    """For each key, the reply of the command ``queue`` adds for it, or the exception that
    failed the pipeline of its master (Rule 4)."""
    groups: dict[str, list[int]] = {}
    if isinstance(client, RedisCluster):
        await client.initialize()
        for index, key in enumerate(keys):
            node = client.get_node_from_key(key)
            groups.setdefault(node.name if node else "", []).append(index)
    else:
        groups[""] = list(range(len(keys)))

    async def run(indexes: list[int]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for index in indexes:
            queue(pipe, keys[index])
        return list(await pipe.execute())

    found: list[list[Any] | BaseException]
    if len(groups) == 1:  # one server: no task to run it beside others
        try:
            found = [await run(next(iter(groups.values())))]
        except Exception as exc:
            found = [exc]
    else:
        found = await asyncio.gather(*(run(ix) for ix in groups.values()), return_exceptions=True)
    out: list[Any] = [None] * len(keys)
    for indexes, replies in zip(groups.values(), found, strict=True):
        for position, index in enumerate(indexes):
            out[index] = replies if isinstance(replies, BaseException) else replies[position]
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _topology(client: RedisCluster) -> tuple[tuple[str, ...], bool]:
    """(the masters and their slots, whether any slot is migrating), as the masters see it."""
    await client.initialize()
    views: set[str] = set()
    migrating = False
    for node in client.get_primaries():
        nodes = await client.execute_command("CLUSTER NODES", target_nodes=node)
        for address, info in dict(nodes).items():
            if "master" in info["flags"] and "fail" not in info["flags"]:
                slots = ",".join("-".join(r) for r in info["slots"])
                views.add(f"{info['node_id']}@{address}:{slots}")
            migrating = migrating or bool(info["migrations"])
    return tuple(sorted(views)), migrating


async def scan_keys(client: AsyncRedis, match: str, count: int = 1000) -> set[str]:
    """Every key matching ``match`` on every master, each once (Rule 2)."""
    if not isinstance(client, RedisCluster):
        return {_text(key) async for key in client.scan_iter(match=match, count=count)}
    for _attempt in range(SCAN_ATTEMPTS):
        before, moving = await _topology(client)
        if not moving:
            found = {_text(key) async for key in client.scan_iter(match=match, count=count)}
            after, moving = await _topology(client)
            if before == after and not moving:
                return found
        await asyncio.sleep(SCAN_RETRY_PAUSE)
    raise StoreUnavailable(
        "cluster slots are migrating (resharding in progress): a full scan could miss keys "
        "that move meanwhile; run the command again when the migration is over"
    )
