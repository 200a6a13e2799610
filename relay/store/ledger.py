"""The delivery ledger: which recipients of a message the upstream already answered for good.

Why a ledger and not a spool: the relay never accepts a message before the upstream did, so it
holds no mail of its own that could be lost; the only risk left is *duplication* when a client
retries a message of which some recipient groups were already delivered (a 4xx after a partial
success, or a connection lost after the upstream's 250). Recording (message, recipient) pairs
in Redis costs one round trip per message and survives a relay restart, while a durable spool
would turn the relay into a store-and-forward MTA with its own queue to operate.

Rule 1: a message is identified by a hash of its envelope sender and its exact bytes, which a
        retrying client sends again unchanged; no address appears in a key.
Rule 2: a pair is recorded right after the upstream's final answer (2xx or 5xx), before the
        client is answered. When some recipient is still deferred the client will retry, and
        the pairs are kept ``ttl`` seconds (longer than any client retry schedule). When every
        recipient is done the client gets 250 and should not retry; the pairs are then kept
        only ``settled_ttl`` seconds, for a client that lost the 250 on a broken connection,
        so that an application deliberately sending the same bytes again later is served.
Rule 4: once the client shows it received that 250 (by sending its next command on the same
        connection) the pairs of a settled message are forgotten at once, so that an
        application sending the very same bytes again on purpose gets them delivered again.
Rule 3: when Redis cannot be reached the ledger keeps the pairs in process memory (bounded), so
        a retry to the same relay process is still deduplicated; the log says so.
Rule 5: recipients are keyed as RCPT folds them (``smtp.address.fold``: the local part as
        written, the domain in any case), so two distinct local parts never share an entry.
Rule 6: RFC 1047's window: as the end of the data goes to the upstream (while it decides), the
        accepted recipients are written as *in flight*; the upstream's final answer replaces
        that entry (a deferral removes it). An entry still in flight on a retry means the
        relay stopped (kill -9, power loss) between the end of the data and the ledger write:
        the upstream most probably accepted it, so it counts as delivered and the conductor
        says so in the log and the audit record (``IN_FLIGHT``) rather than send a second copy.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relay.smtp.address import fold
from relay.store.redis_keys import Keys

log = logging.getLogger("relay.store.ledger")

DEFAULT_TTL = 7 * 24 * 3600
SETTLED_TTL = 3600
# The value of an entry written as the end of the data went out, before its reply (Rule 6).
IN_FLIGHT = "(in flight when the relay stopped: counted as delivered, RFC 1047)"


def rcpt_key(rcpt: str) -> str:
    """The ledger's key for a recipient (Rule 5)."""
    return fold(rcpt)


def message_key(mail_from: str, data: bytes) -> str:
    h = hashlib.sha256()
    h.update(mail_from.lower().encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()[:32]


class Ledger:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        timeout: float,
        ttl: int = DEFAULT_TTL,
        settled_ttl: int = SETTLED_TTL,
        memory_limit: int = 100_000,
    ) -> None:
        self.client = client
        self.keys = keys
        self.timeout = timeout
        self.ttl = ttl
        self.settled_ttl = settled_ttl
        self._memory: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()
        self._memory_limit = memory_limit

    async def done(self, key: str) -> dict[str, str]:
        """Recipients (``rcpt_key``) answered for good, or in flight (Rule 6) -> reply text."""
        found: dict[str, str] = {}
        remembered = self._memory.get(key)
        if remembered and remembered[0] > time.monotonic():
            found.update(remembered[1])
        try:
            raw = await self.client.hgetall(self.keys.delivered(key))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("ledger read failed (%s); using this process's memory only", exc)
            return found
        found.update({_text(k): _text(v) for k, v in raw.items()})
        return found

    async def forget(self, key: str) -> None:
        """The client acknowledged the 250 of a settled message (it sent another command on
        the same connection): a later identical message is a new one, not a retry (Rule 4)."""
        self._memory.pop(key, None)
        try:
            await self.client.delete(self.keys.delivered(key))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("ledger entry not removed (%s); it expires by itself", exc)

    async def in_flight(self, key: str, rcpts: Sequence[str]) -> None:
        """Rule 6: ``rcpts`` are about to get the end of the data; a final answer replaces this."""
        await self._write(key, {rcpt_key(r): IN_FLIGHT for r in rcpts}, (), self.ttl)

    async def record(
        self,
        key: str,
        replies: Mapping[str, str],
        *,
        settled: bool = False,
        cleared: Sequence[str] = (),
    ) -> None:
        """Remember final answers; ``settled``: every recipient is done (Rule 2); ``cleared``:
        recipients written in flight whose transaction was deferred after all (Rule 6)."""
        entries: dict[str, str] = {rcpt_key(r): text for r, text in replies.items()}
        gone = tuple(rcpt_key(r) for r in cleared if r not in replies)
        if entries or gone:
            await self._write(key, entries, gone, self.settled_ttl if settled else self.ttl)

    async def _write(
        self, key: str, entries: Mapping[str, str], gone: Sequence[str], ttl: int
    ) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if entries:
                    pipe.hset(self.keys.delivered(key), mapping=cast("Mapping[Any, Any]", entries))
                if gone:
                    pipe.hdel(self.keys.delivered(key), *gone)
                pipe.expire(self.keys.delivered(key), ttl)
                await pipe.execute()
            return
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("ledger write failed (%s); kept in this process's memory", exc)
        expires = time.monotonic() + ttl
        previous = self._memory.pop(key, (0.0, {}))[1]
        kept = {k: v for k, v in previous.items() if k not in gone}
        self._memory[key] = (expires, {**kept, **entries})
        while len(self._memory) > self._memory_limit:
            self._memory.popitem(last=False)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
