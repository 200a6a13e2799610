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
Rule 7: when Redis cannot be reached the final answers (and forgets) also go to the write
        journal (``writeback``), replayed when Redis is back, so that a retry reaching another
        relay afterwards is deduplicated too; on a cluster or with Sentinel a final answer no
        replica confirmed (``replicated``) is journalled the same way. In-flight entries are
        never journalled: replayed late, one could mark as done a recipient whose transaction
        was deferred meanwhile. Each write carries its time (field ``_t``, ``RECORD_LUA``): a
        replayed write older than the entry's last one adds only the answers the entry lacks
        and leaves its expiry alone, so a replay never undoes a newer write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from relay.smtp.address import fold
from relay.store import replicated
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys
from relay.store.replicated import Command, Durability
from relay.store.writeback import Entry, WriteBack

log = logging.getLogger("relay.store.ledger")

DEFAULT_TTL = 7 * 24 * 3600
SETTLED_TTL = 3600
# The value of an entry written as the end of the data went out, before its reply (Rule 6).
IN_FLIGHT = "(in flight when the relay stopped: counted as delivered, RFC 1047)"
WRITTEN_AT = "_t"  # the hash field holding the time of the entry's last write (Rule 7)
# Any failure of the client counts as "Redis did not answer": besides Redis's own errors, a
# cluster client can raise library errors while it re-learns the slot map during a failover.
ERRORS = (Exception,)

# KEYS[1]: the message's ledger hash. ARGV: the write's time (unix ms), its expiry (unix ms),
# the in-flight marker, the number of answers, the answers as field/value pairs, then the
# fields to clear (those still in flight). Rule 7 for an older write.
RECORD_LUA = """
local key = KEYS[1]
local at, n = tonumber(ARGV[1]), tonumber(ARGV[4])
local newer = at >= tonumber(redis.call('HGET', key, '_t') or '0')
for i = 0, n - 1 do
  local field, value = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  if newer or redis.call('HEXISTS', key, field) == 0 then
    redis.call('HSET', key, field, value)
  end
end
for i = 5 + 2 * n, #ARGV do
  if newer and redis.call('HGET', key, ARGV[i]) == ARGV[3] then
    redis.call('HDEL', key, ARGV[i])
  end
end
if newer then
  redis.call('HSET', key, '_t', ARGV[1])
  redis.call('PEXPIREAT', key, ARGV[2])
end
return 1
"""


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
        self._journalled: set[str] = set()  # keys journalled by this process (Rule 7)

    async def done(self, key: str) -> dict[str, str]:
        """Recipients (``rcpt_key``) answered for good, or in flight (Rule 6) -> reply text."""
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
        found.update({_text(k): _text(v) for k, v in raw.items() if _text(k) != WRITTEN_AT})
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
        if failed or key in self._journalled:  # after a journalled write: undo it too
            self._journalled.discard(key)
            await self._journal("forget", key=key)

    async def in_flight(self, key: str, rcpts: Sequence[str]) -> None:
        """Rule 6: ``rcpts`` are about to get the end of the data; a final answer replaces this."""
        entries = {rcpt_key(r): IN_FLIGHT for r in rcpts}
        await self._write(key, entries, (), self.ttl, final=False)

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
            ttl = self.settled_ttl if settled else self.ttl
            await self._write(key, entries, gone, ttl, final=True)

    def _command(
        self, key: str, entries: Mapping[str, str], gone: Sequence[str], at: int, expires: int
    ) -> Command:
        pairs = [item for pair in entries.items() for item in pair]
        args = [at, expires, IN_FLIGHT, len(entries), *pairs, *gone]
        return replicated.script(RECORD_LUA, [self.keys.delivered(key)], args)

    async def _write(
        self, key: str, entries: Mapping[str, str], gone: Sequence[str], ttl: int, *, final: bool
    ) -> None:
        at = int(time.time() * 1000)
        command = self._command(key, entries, gone, at, at + ttl * 1000)
        durability = self.durability if final else Durability.off()
        try:
            _replies, confirmed = await bounded(
                replicated.execute(self.client, [command], durability),
                self.timeout + durability.timeout_ms / 1000,
            )
        except ERRORS as exc:
            log.warning("ledger write failed (%s); kept in this process's memory", exc)
            self._remember(key, entries, gone, ttl)
            confirmed = False
        if not confirmed and final:  # Rule 7
            self._journalled.add(key)
            await self._journal(
                "ledger", key=key, replies=dict(entries), gone=list(gone), written_ms=at, ttl=ttl
            )

    def _remember(
        self, key: str, entries: Mapping[str, str], gone: Sequence[str], ttl: int
    ) -> None:
        expires = time.monotonic() + ttl
        previous = self._memory.pop(key, (0.0, {}))[1]
        kept = {k: v for k, v in previous.items() if k not in gone}
        self._memory[key] = (expires, {**kept, **entries})
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
        commands = []
        for entry in entries:
            at = int(entry["written_ms"])
            commands.append(
                self._command(
                    str(entry["key"]),
                    dict(entry["replies"]),
                    list(entry.get("gone", [])),
                    at,
                    at + int(entry["ttl"]) * 1000,
                )
            )
        _replies, confirmed = await replicated.execute(self.client, commands, self.durability)
        return [confirmed] * len(entries)

    async def replay_forgets(self, entries: Sequence[Entry]) -> list[bool]:
        commands = []
        for entry in entries:
            name = self.keys.delivered(str(entry["key"]))
            commands.append(Command(("DEL", name), name))
        _replies, confirmed = await replicated.execute(self.client, commands, self.durability)
        return [confirmed] * len(entries)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
