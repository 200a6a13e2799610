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
Rule 4: a script goes as ``EVALSHA``; a server that does not know it (a replica just promoted
        has an empty script cache) answers NOSCRIPT without running it, and only those calls
        are sent again with their text.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, SlotNotCoveredError

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
    fallback: tuple[Any, ...] = ()  # what to send when the server lacks the script (EVAL)


@functools.cache
def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def script(text: str, keys: Sequence[str], args: Sequence[Any]) -> Command:
    """A script call: ``EVALSHA``, and ``EVAL`` (the text) for a server whose script cache
    lacks it (a fresh server, a replica just promoted by a failover: Rule 4)."""
    tail = (len(keys), *keys, *args)
    return Command(("EVALSHA", _sha(text), *tail), keys[0], ("EVAL", text, *tail))


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
    replies, confirmed = await _run(client, [c.args for c in commands], commands, durability)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:  # those did not run: send them with their text
        again = [commands[i] for i in missing]
        more, also = await _run(client, [c.fallback for c in again], again, durability)
        for index, reply in zip(missing, more, strict=True):
            replies[index] = reply
        confirmed = confirmed and also
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies, confirmed


async def _run(
    client: AsyncRedis,
    sent: Sequence[tuple[Any, ...]],
    commands: Sequence[Command],
    durability: Durability,
) -> tuple[list[Any], bool]:
    pipe = client.pipeline(transaction=False)
    for args in sent:
        pipe.execute_command(*args)
    if durability.replicas <= 0:
        return list(await pipe.execute(raise_on_error=False)), True
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = {c.key: _node(client, c.key) for c in commands}
        targets = {node.name: node for node in nodes.values()}
        for node in targets.values():
            pipe.execute_command(
                "WAIT", durability.replicas, durability.timeout_ms, target_nodes=node
            )
        replies = list(await pipe.execute(raise_on_error=False))
        acked = replies[len(sent) :]
        moved = any(_node(client, k).name != n.name for k, n in nodes.items())
        confirmed = not moved and all(
            not isinstance(a, Exception) and int(a) >= durability.replicas for a in acked
        )
        return replies[: len(sent)], confirmed
    pipe.execute_command("WAIT", durability.replicas, durability.timeout_ms)
    replies = list(await pipe.execute(raise_on_error=False))
    last = replies[-1]
    return replies[:-1], not isinstance(last, Exception) and int(last) >= durability.replicas
