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
        a retry to the same relay process is still deduplicated; the log says so. The pairs
        also go to the write journal (``writeback``), replayed when Redis is back, so that a
        retry reaching another relay afterwards is deduplicated too; on a cluster or with
        Sentinel, a write no replica confirmed (``replicated``) is journalled the same way.
Rule 5: an entry's expiry only ever grows (``RECORD_LUA``), so a replayed entry never shortens
        the life of a newer one; a forget that Redis missed, or that follows a journalled
        entry, is journalled after it, so the replay deletes what it re-created.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from relay.store import replicated
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys
from relay.store.replicated import Durability
from relay.store.writeback import Entry, WriteBack

log = logging.getLogger("relay.store.ledger")

DEFAULT_TTL = 7 * 24 * 3600
SETTLED_TTL = 3600
# Any failure of the client counts as "Redis did not answer": besides Redis's own errors, a
# cluster client can raise library errors while it re-learns the slot map during a failover.
ERRORS = (Exception,)

# KEYS[1]: the message's ledger hash. ARGV[1]: expiry (unix ms); ARGV[2..]: field, value pairs.
# The expiry is set only when it is later than the current one (Rule 5).
RECORD_LUA = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local current = redis.call('PEXPIRETIME', KEYS[1])
if current < 0 or current < tonumber(ARGV[1]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
return 1
"""


def message_key(mail_from: str, data: bytes) -> str:
    h = hashlib.sha256()
    h.update(mail_from.lower().encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()[:32]


class Ledger:
    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        *,
        timeout: float,
        ttl: int = DEFAULT_TTL,
        settled_ttl: int = SETTLED_TTL,
        memory_limit: int = 100_000,
        durability: Durability | None = None,
        writeback: WriteBack | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.timeout = timeout
        self.ttl = ttl
        self.settled_ttl = settled_ttl
        self.durability = durability or Durability.off()
        self.writeback = writeback
        self._memory: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()
        self._memory_limit = memory_limit
        self._journalled: set[str] = set()  # keys journalled by this process (Rule 5)

    async def done(self, key: str) -> dict[str, str]:
        """Recipients (lower-cased) already answered for good -> the upstream reply text."""
        return (await self.read(key))[0]

    async def read(self, key: str) -> tuple[dict[str, str], bool]:
        """``done``, and whether Redis answered (False: this process's memory only)."""
        found: dict[str, str] = {}
        remembered = self._memory.get(key)
        if remembered and remembered[0] > time.monotonic():
            found.update(remembered[1])
        try:
            raw = await bounded(self.client.hgetall(self.keys.delivered(key)), self.timeout)
        except ERRORS as exc:
            log.warning("ledger read failed (%s); using this process's memory only", exc)
            return found, False
        found.update({_text(k): _text(v) for k, v in raw.items()})
        return found, True

    async def forget(self, key: str) -> None:
        """The client acknowledged the 250 of a settled message (it sent another command on
        the same connection): a later identical message is a new one, not a retry (Rule 4)."""
        self._memory.pop(key, None)
        try:
            await bounded(self.client.delete(self.keys.delivered(key)), self.timeout)
            failed = False
        except ERRORS as exc:
            log.warning("ledger entry not removed (%s); it expires by itself", exc)
            failed = True
        if (failed or key in self._journalled) and self.writeback is not None:
            self._journalled.discard(key)
            await self._journal("forget", key=key)

    def _command(self, key: str, entries: Mapping[str, str], expires_ms: int) -> replicated.Command:
        pairs = [item for pair in entries.items() for item in pair]
        return replicated.script(RECORD_LUA, [self.keys.delivered(key)], [expires_ms, *pairs])

    async def record(self, key: str, replies: Mapping[str, str], *, settled: bool = False) -> None:
        """Remember final answers; ``settled``: every recipient is done (Rule 2)."""
        if not replies:
            return
        ttl = self.settled_ttl if settled else self.ttl
        entries = {rcpt.lower(): text for rcpt, text in replies.items()}
        expires_ms = int((time.time() + ttl) * 1000)
        try:
            _replies, confirmed = await bounded(
                replicated.execute(
                    self.client, [self._command(key, entries, expires_ms)], self.durability
                ),
                self.timeout + self.durability.timeout_ms / 1000,
            )
        except ERRORS as exc:
            log.warning("ledger write failed (%s); kept in this process's memory", exc)
            self._remember(key, entries, ttl)
            confirmed = False
        if not confirmed:
            self._journalled.add(key)
            await self._journal("ledger", key=key, replies=entries, expires_ms=expires_ms)

    def _remember(self, key: str, entries: Mapping[str, str], ttl: int) -> None:
        expires = time.monotonic() + ttl
        previous = self._memory.pop(key, (0.0, {}))[1]
        self._memory[key] = (expires, {**previous, **entries})
        while len(self._memory) > self._memory_limit:
            self._memory.popitem(last=False)

    async def _journal(self, op: str, **data: object) -> None:
        if self.writeback is None:
            return
        try:
            await self.writeback.add(op, **data)
        except OSError as exc:
            log.error("ledger entry not journalled (%s): %s", exc, json.dumps(data)[:200])

    # -- replay of the write journal (``writeback``) -----------------------------------------

    async def replay_records(self, entries: Sequence[Entry]) -> list[bool]:
        commands = [
            self._command(str(e["key"]), dict(e["replies"]), int(e["expires_ms"])) for e in entries
        ]
        _replies, confirmed = await replicated.execute(self.client, commands, self.durability)
        return [confirmed] * len(entries)

    async def replay_forgets(self, entries: Sequence[Entry]) -> list[bool]:
        commands = [
            replicated.Command(
                ("DEL", self.keys.delivered(str(e["key"]))), self.keys.delivered(str(e["key"]))
            )
            for e in entries
        ]
        _replies, confirmed = await replicated.execute(self.client, commands, self.durability)
        return [confirmed] * len(entries)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
