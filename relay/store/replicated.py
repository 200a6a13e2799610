"""Writes that wait until a replica holds them (``WAIT``), for the ledger, consent and audit.

Why: Redis replication is asynchronous. A master answers a write before its replicas have it;
if the master dies in that instant and a replica is promoted (Redis Cluster, Sentinel), the
write is gone although the relay was told it was done. ``WAIT n ms`` on the connection that
wrote blocks until ``n`` replicas acknowledged everything that connection wrote, or ``ms``
passed. It cannot undo anything: a write that times out may still be lost or kept.

Stage: async edge helper of the stores.
Input: commands, each with the key that routes it; the wait settings.
Output: the commands' replies, and whether every master written to confirmed the writes.

Rule 1: the commands and one ``WAIT`` per master written to go in one pipeline. A pipeline
        uses one connection per master, so each ``WAIT`` follows that connection's writes;
        a cluster client sends a ``WAIT`` to the master named by ``target_nodes``.
Rule 2: when a command was redirected (MOVED/ASK) its ``WAIT`` ran on the old master and says
        nothing: the write counts as unconfirmed.
Rule 3: an unconfirmed write is not an error (the master has it). The caller journals it
        (``writeback``), and the replay writes it again later; every journalled write is
        idempotent, so replaying a write that survived changes nothing, and replaying one
        the failover lost restores it. ``Durability.off`` (one server: no replica to wait
        for) confirms every write that succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import SlotNotCoveredError

from relay.settings import RedisSettings
from relay.settings_redis import is_cluster_url
from relay.store.redis_conn import SENTINEL_SCHEME, AsyncRedis


@dataclass(frozen=True, slots=True)
class Durability:
    replicas: int = 0  # 0: do not wait
    timeout_ms: int = 250

    @classmethod
    def off(cls) -> Durability:
        return cls(0)

    @classmethod
    def for_url(cls, url: str, settings: RedisSettings) -> Durability:
        """Wait only where replicas are part of the setup: a cluster or a Sentinel group."""
        if is_cluster_url(url) or url.startswith(SENTINEL_SCHEME):
            return cls(settings.wait_replicas, int(settings.wait_timeout * 1000))
        return cls.off()


@dataclass(frozen=True, slots=True)
class Command:
    args: tuple[Any, ...]
    key: str  # the key that routes the command (a script's first key)


def script(text: str, keys: Sequence[str], args: Sequence[Any]) -> Command:
    """A script call as a pipelined ``EVAL`` (see ``fanout`` Rule 3)."""
    return Command(("EVAL", text, len(keys), *keys, *args), keys[0])


def _node(client: RedisCluster, key: str) -> ClusterNode:
    node = client.get_node_from_key(key)
    if node is None:
        raise SlotNotCoveredError(f"no master serves the slot of {key!r}")
    return node


async def execute(
    client: AsyncRedis, commands: Sequence[Command], durability: Durability
) -> tuple[list[Any], bool]:
    """Run ``commands`` in one pipeline, then WAIT (Rule 1): (replies, all confirmed).

    A command that fails raises, as a pipeline does; the writes before it may have happened
    (callers journal the whole batch, which is idempotent).
    """
    if not commands:
        return [], True
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command.args)
    if durability.replicas <= 0:
        return list(await pipe.execute()), True
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = {c.key: _node(client, c.key) for c in commands}
        targets = {node.name: node for node in nodes.values()}
        for node in targets.values():
            pipe.execute_command(
                "WAIT", durability.replicas, durability.timeout_ms, target_nodes=node
            )
        replies = list(await pipe.execute())
        acked = replies[len(commands) :]
        moved = any(_node(client, k).name != n.name for k, n in nodes.items())
        confirmed = not moved and all(int(a) >= durability.replicas for a in acked)
        return replies[: len(commands)], confirmed
    pipe.execute_command("WAIT", durability.replicas, durability.timeout_ms)
    replies = list(await pipe.execute())
    return replies[:-1], int(replies[-1]) >= durability.replicas
