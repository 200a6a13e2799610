"""Reading many recipients' consent chains, the same on one server and on a Redis Cluster.

Stage: async edge helpers of the consent store, its verification and its export.
Input: recipient keys and a controller's key scope. Output: each chain's records and state.

Rule 1: one script per recipient (``READ_LUA``) reads its records and its state at one instant,
        so that an append landing in between cannot look like a broken chain; both keys carry
        the recipient's tag (one hash slot), and the scripts of many recipients go in one
        pipeline, which a cluster client splits by master.
Rule 2: the recipients of a scope are listed by a scan of every master that checks the slot map
        around it (``fanout.scan_keys``): during a slot migration it says so rather than miss
        a chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.store.fanout import queue_script, scan_keys
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys

# KEYS: events list, state hash of one recipient (Rule 1).
READ_LUA = """
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2])}
"""

Chain = tuple[list[bytes], dict[str, str]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_chains(
    client: AsyncRedis, keys: Keys, rkeys: Sequence[str], scope: str
) -> list[Chain]:
    """(records in append order, state hash) of each recipient, in the order given."""
    pipe = client.pipeline(transaction=False)
    for rkey in rkeys:
        names = [keys.consent_events(rkey, scope), keys.consent_state(rkey, scope)]
        queue_script(pipe, READ_LUA, names, [])
    out: list[Chain] = []
    for records, flat in await pipe.execute():
        state = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        out.append((list(records), state))
    return out


async def recipient_keys(client: AsyncRedis, keys: Keys, scope: str = "") -> set[str]:
    """Every recipient with events or a state under one scope (Rule 2)."""
    found: set[str] = set()
    for pattern in (keys.consent_events_match(scope), keys.consent_state_match(scope)):
        found.update(keys.tag_of(key) for key in await scan_keys(client, pattern))
    return found
