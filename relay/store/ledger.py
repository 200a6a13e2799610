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
        connection) the pairs of a settled message are forgotten, so that an application
        sending the very same bytes again on purpose gets them delivered again. The delete
        goes in the same round trip as this process's next ledger read, before it (so the
        same bytes sent again, on this connection or another, are read as new), or within a
        second when no read comes (``keep_alive``): the client's MAIL is answered without a
        round trip to Redis, and a message costs one Redis round trip less (issue 15).
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
Rule 7: ...but only when the relay that wrote it is gone. An entry names its writer (a stable
        identity: host, SMTP address and worker number; and the process's instance id), and
        every relay process keeps ``alive:<identity> = <instance>`` fresh in Redis (a few
        seconds' expiry, refreshed every second, overwritten at once by a restarted relay of
        the same identity). An entry whose writer is still alive belongs to a transaction
        still under way (the same bytes sent again concurrently, on purpose): it counts as
        nothing, so that message is delivered rather than taken for a copy of one whose
        outcome is not known yet. A retry after a crash reaches either the restarted relay
        (the identity now names another instance) or another relay once the writer's key has
        expired (``ALIVE_SECONDS``): a retry to another relay within those seconds after a
        crash is the one case sent twice.
Rule 8: when Redis cannot be reached the final answers (and forgets) also go to the write
        journal (``writeback``), replayed when Redis is back, so that a retry reaching another
        relay afterwards is deduplicated too; on a cluster or with Sentinel a final answer no
        replica confirmed (``replicated``) is journalled the same way. In-flight entries are
        never journalled: replayed late, one could mark as done a recipient whose transaction
        was deferred meanwhile. Each write carries its time (field ``_t``, ``RECORD_LUA``): a
        replayed write older than the entry's last one adds only the answers the entry lacks
        and leaves its expiry alone, so a replay never undoes a newer write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from relay.smtp.address import fold
from relay.store import replicated
from relay.store.fanout import get_many
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys
from relay.store.replicated import Command, Durability
from relay.store.writeback import Entry, WriteBack

log = logging.getLogger("relay.store.ledger")

DEFAULT_TTL = 7 * 24 * 3600
SETTLED_TTL = 3600
FORGET_BACKLOG = 10_000  # Rule 4: forgets waiting at most (a second's worth at any rate)
# The value of an entry written as the end of the data went out, before its reply (Rule 6).
IN_FLIGHT = "(in flight when the relay stopped: counted as delivered, RFC 1047)"
# What an in-flight entry stores: the marker, then "<identity>|<instance>" of its writer.
_WRITTEN_IN_FLIGHT = "inflight:"
# Seconds a relay process's liveness key lasts without refresh (Rule 7).
ALIVE_SECONDS = 5.0
WRITTEN_AT = "_t"  # the hash field holding the time of the entry's last write (Rule 8)
# Any failure of the client counts as "Redis did not answer": besides Redis's own errors, a
# cluster client can raise library errors while it re-learns the slot map during a failover.
ERRORS = (Exception,)

# KEYS[1]: the message's ledger hash. ARGV: the write's time (unix ms), its expiry (unix ms),
# the in-flight prefix, the number of answers, the answers as field/value pairs, then the
# fields to clear (those still in flight). Rule 8 for an older write.
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
  local value = redis.call('HGET', key, ARGV[i])
  if newer and value and string.sub(value, 1, #ARGV[3]) == ARGV[3] then
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
        identity: str | None = None,
    ) -> None:
        # Rule 7: who writes this process's in-flight entries. Without a stable identity
        # (tests, tools) a fresh one: such a writer is recognised as gone only by expiry.
        self.identity = identity or uuid.uuid4().hex
        self.instance = uuid.uuid4().hex[:16]
        self._announced = float("-inf")  # when this process last said it was alive
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
        self._forgets: list[str] = []  # Rule 4: deletes waiting for the next read

    async def done(self, key: str) -> dict[str, str]:
        """Recipients (``rcpt_key``) answered for good, or in flight (Rule 6) -> reply text."""
        return (await self.read(key))[0]

    async def read(self, key: str) -> tuple[dict[str, str], bool]:
        """``done``, and whether Redis answered (False: this process's memory only)."""
        found: dict[str, str] = {}
        remembered = self._memory.get(key)
        if remembered and remembered[0] > time.monotonic():
            found.update(remembered[1])
        forgets, self._forgets = self._forgets, []
        try:
            if forgets:  # Rule 4: the deletes first, in the same round trip
                pipe = self.client.pipeline(transaction=False)
                for forgotten in forgets:
                    pipe.delete(self.keys.delivered(forgotten))
                pipe.hgetall(self.keys.delivered(key))
                answers = await bounded(pipe.execute(raise_on_error=False), self.timeout)
                await self._forgotten(forgets, answers[:-1])
                forgets = []
                raw = answers[-1]
                if isinstance(raw, Exception):
                    raise raw
            else:
                raw = await bounded(self.client.hgetall(self.keys.delivered(key)), self.timeout)
        except ERRORS as exc:
            log.warning("ledger read failed (%s); using this process's memory only", exc)
            await self._forgotten(forgets, [exc] * len(forgets))
            return await self._settle_in_flight(found), False
        found.update({_text(k): _text(v) for k, v in raw.items() if _text(k) != WRITTEN_AT})
        return await self._settle_in_flight(found), True

    async def _settle_in_flight(self, found: dict[str, str]) -> dict[str, str]:
        """Rule 7: in-flight entries of a live writer count as nothing, of a gone one as sent."""
        writers = {v.removeprefix(_WRITTEN_IN_FLIGHT) for v in found.values()
                   if v.startswith(_WRITTEN_IN_FLIGHT)}  # fmt: skip
        if not writers:
            return found
        alive = {f"{self.identity}|{self.instance}"}
        others = sorted(w for w in writers if w not in alive)
        if others:
            try:
                names = [self.keys.relay_alive(w.partition("|")[0]) for w in others]
                current = await bounded(get_many(self.client, names), self.timeout)
            except ERRORS as exc:
                # Unknown: take them as sent (no second copy), as before Rule 7.
                log.warning("liveness of in-flight writers unknown (%s)", exc)
                current = [None] * len(others)
            alive |= {w for w, now in zip(others, current, strict=True)
                      if now is not None and _text(now) == w.partition("|")[2]}  # fmt: skip
        settled: dict[str, str] = {}
        for rcpt, value in found.items():
            if not value.startswith(_WRITTEN_IN_FLIGHT):
                settled[rcpt] = value
            elif value.removeprefix(_WRITTEN_IN_FLIGHT) not in alive:
                settled[rcpt] = IN_FLIGHT
        return settled

    async def announce(self) -> None:
        """Rule 7: this process is alive (and its predecessor of the same identity is not)."""
        name = self.keys.relay_alive(self.identity)
        await self.client.set(name, self.instance, px=int(ALIVE_SECONDS * 1000))
        self._announced = time.monotonic()

    async def keep_alive(self, stopping: asyncio.Event | None = None) -> None:
        """Rule 7: refresh this process's liveness key every second, until ``stopping`` is set
        (or the task is cancelled); then delete it: a stopping relay is gone at once."""
        name = self.keys.relay_alive(self.identity)
        stopping = stopping or asyncio.Event()
        try:
            while not stopping.is_set():
                with contextlib.suppress(*ERRORS):
                    await self.announce()
                await self.send_forgets()  # Rule 4 (errors are journalled there)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
        finally:
            with contextlib.suppress(*ERRORS):
                await asyncio.shield(self.send_forgets())
            with contextlib.suppress(*ERRORS):
                # Shielded: a stopping relay says at once that it is gone.
                await asyncio.shield(self.client.delete(name))

    async def forget_soon(self, key: str) -> None:
        """``forget``, sent with the next ledger read or within a second (Rule 4)."""
        self._memory.pop(key, None)
        if len(self._forgets) < FORGET_BACKLOG:  # else it expires by itself (settled_ttl)
            self._forgets.append(key)

    async def send_forgets(self) -> None:
        """The forgets no read took along (``keep_alive`` calls this every second)."""
        forgets, self._forgets = self._forgets, []
        for key in forgets:
            await self.forget(key)

    async def _forgotten(self, keys: Sequence[str], answers: Sequence[object]) -> None:
        """After deletes: a failed one goes to the journal, and so does one after a journalled
        write, to undo that write too (Rule 8)."""
        for key, answer in zip(keys, answers, strict=True):
            failed = isinstance(answer, BaseException)
            if failed:
                log.warning("ledger entry not removed (%s); it expires by itself", answer)
            if failed or key in self._journalled:
                self._journalled.discard(key)
                await self._journal("forget", key=key)

    async def forget(self, key: str) -> None:
        """The client acknowledged the 250 of a settled message (it sent another command on
        the same connection): a later identical message is a new one, not a retry (Rule 4)."""
        self._memory.pop(key, None)
        answer: object
        try:
            answer = await bounded(self.client.delete(self.keys.delivered(key)), self.timeout)
        except ERRORS as exc:
            answer = exc
        await self._forgotten([key], [answer])

    async def in_flight(self, key: str, rcpts: Sequence[str]) -> None:
        """Rule 6: ``rcpts`` are about to get the end of the data; a final answer replaces this."""
        value = f"{_WRITTEN_IN_FLIGHT}{self.identity}|{self.instance}"
        entries = {rcpt_key(r): value for r in rcpts}
        await self._write(key, entries, (), self.ttl, final=False, alive=True)

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
        args = [at, expires, _WRITTEN_IN_FLIGHT, len(entries), *pairs, *gone]
        return replicated.script(RECORD_LUA, [self.keys.delivered(key)], args)

    async def _write(
        self,
        key: str,
        entries: Mapping[str, str],
        gone: Sequence[str],
        ttl: int,
        *,
        final: bool,
        alive: bool = False,
    ) -> None:
        at = int(time.time() * 1000)
        command = self._command(key, entries, gone, at, at + ttl * 1000)
        durability = self.durability if final else Durability.off()
        try:
            # The writer's liveness must outlast the entry's write (Rule 7). ``keep_alive``
            # refreshes it every second; only when that has not happened lately (Redis was
            # away) does the write renew it first, not at every message.
            if alive and time.monotonic() - self._announced > ALIVE_SECONDS / 2:
                await bounded(self.announce(), self.timeout)
            _replies, confirmed = await bounded(
                replicated.execute(self.client, [command], durability),
                self.timeout + durability.timeout_ms / 1000,
            )
        except ERRORS as exc:
            log.warning("ledger write failed (%s); kept in this process's memory", exc)
            self._remember(key, entries, gone, ttl)
            confirmed = False
        if not confirmed and final:  # Rule 8
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
