"""The auditors' decision log: decision records stored in Redis, indexed, kept, queried, exported.

Stage: audit (async edge). Input: ``DecisionRecord``s from ``build_records`` (one per message and
recipient). Output: entries of one Redis Stream plus two indexes; JSON Lines and CSV exports.

Storage (measured in ``bench/audit_bench.py``; figures in the README):
- the stream ``audit:log`` holds one entry per record, a single field ``r`` whose value is the
  compact form of ``audit_codec.encode``; the stream id is the time the record was
  stored, so a time range is an ``XRANGE`` and needs no index of its own;
- ``audit:msg:<hash of Message-ID>`` is a list of the stream ids of that message's records (a
  Message-ID may contain an address, so only its hash is in the key);
- ``audit:rcpt:<recipient key>`` is a sorted set of stream ids scored by their time, so that
  "this recipient between these dates" is one ``ZRANGEBYSCORE``;
- the per-day counts and the "tracked without consent" index of ``audit_counts``, so that the
  auditors' first page reads a few hash fields instead of scanning the log.

Rule 1: one Lua script writes a batch: stream entries, both indexes and the day's counts
        together, atomically, and it skips any record whose id the message's index already
        holds. So a write retried after a lost reply, or a journal replay interrupted and
        restarted, never doubles a record (nor its counts).
Rule 2: ``write`` never raises and never loses a record: if Redis fails or answers too late,
        the records go to the local journal (``audit_journal``), fsynced, and ``replay_journal``
        stores them later, in journal order. After a failure the log skips Redis for a few
        seconds, so that a Redis outage does not add a timeout to every message.
Rule 3: every Redis call is bounded by ``timeout``.
Rule 4: ranges are half-open ``[since, until)`` over the time the record was stored. Records
        replayed from the journal are stored (and so exported) at replay time; they keep their
        own ``decided_at``. Because a past range never changes, its export is reproducible.
Rule 5: retention trims the stream by time (``XTRIM MINID``) and removes the trimmed ids from
        both indexes, and their tallies from the counts, in the same transaction, batch by batch.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
import sys
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TypeVar

import redis.asyncio as aioredis

from relay.core.recipients import recipient_key
from relay.errors import RelayError, StoreUnavailable
from relay.store.audit_codec import CSV_COLUMNS, csv_rows, decode, encode
from relay.store.audit_counts import DAY_MS, count_keys, encode_tally, has_untracked, tally
from relay.store.audit_journal import Journal
from relay.store.audit_record import (
    DecisionRecord,
    TrackerRecord,
    build_records,
    canonical_json,
    record_from_json,
)
from relay.store.audit_script import WRITE_SCRIPT
from relay.store.redis_keys import Keys

__all__ = [
    "AuditLog",
    "DecisionRecord",
    "TrackerRecord",
    "build_records",
    "message_key",
    "record_from_json",
]

log = logging.getLogger("relay.store.audit")

T = TypeVar("T")

BATCH = 500  # records per script call or per XRANGE page: bounded work per Redis round trip
SKIP_REDIS_AFTER_FAILURE = 5.0  # seconds (Rule 2)
EXPORT_FORMATS = ("jsonl", "csv")


def normalise_message_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def message_key(message_id: str) -> str:
    """Index key part for a Message-ID: 64 bits of hash (a collision only merges two lists)."""
    data = normalise_message_id(message_id).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def to_ms(moment: datetime) -> int:
    """Stream time of a moment; a naive datetime is UTC (never the host's local time)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _entries(raw: object) -> list[tuple[str, bytes]]:
    """XRANGE's answer as (stream id, stored record) pairs (the stubs type it loosely)."""
    pairs: list[tuple[str, bytes]] = []
    for sid, fields in raw or []:  # type: ignore[attr-defined]
        sid_text = sid.decode() if isinstance(sid, bytes) else str(sid)
        payload = fields.get(b"r", b"") if isinstance(fields, dict) else b""
        pairs.append((sid_text, payload if isinstance(payload, bytes) else b""))
    return pairs


def _next_id(sid: str) -> str:
    ms, _, seq = sid.partition("-")
    return f"{ms}-{int(seq) + 1}"


def _is_rkey(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


class AuditLog:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        journal_path: str | Path,
        *,
        timeout: float,
        retention_days: int,
        address_key: bytes = b"",
    ) -> None:
        self.client = client
        self.keys = keys
        self.journal = Journal(journal_path)
        self.timeout = timeout
        self.retention_days = retention_days
        # Needed only to search by address (the CLI passes it); the pipeline's records carry
        # their recipient key already.
        self.address_key = address_key
        self._script = client.register_script(WRITE_SCRIPT)
        self._skip_until = 0.0

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, self.timeout)

    async def _xrange(self, low: str, high: str, count: int) -> list[tuple[str, bytes]]:
        stream = self.keys.audit_stream()
        return _entries(await self._call(self.client.xrange(stream, low, high, count=count)))

    # -----------------------------------------------------------------------------------------
    # Writing

    async def _store(self, records: Sequence[DecisionRecord]) -> int:
        """Store a batch atomically (Rule 1); the number of records that were new."""
        ck = count_keys(self.keys)[0]
        keys = [self.keys.audit_stream(), ck.counts, ck.dims, ck.days, ck.without_consent]
        args: list[bytes | str] = []
        for record in records:
            keys.append(self.keys.audit_by_message(message_key(record.message_id)))
            keys.append(self.keys.audit_by_rcpt(record.recipient_key))
            args += [
                encode(record),
                encode_tally(tally(record)),
                "1" if has_untracked(record) else "0",
            ]
        written = await self._call(self._script(keys=keys, args=args))
        return int(written)

    async def write(self, records: Sequence[DecisionRecord]) -> None:
        """Store the records, or journal them (Rule 2). Never raises."""
        if not records:
            return
        if time.monotonic() >= self._skip_until:
            try:
                await self._store(records)
                return
            except Exception as exc:  # any failure: the journal keeps the records (Rule 2)
                self._skip_until = time.monotonic() + SKIP_REDIS_AFTER_FAILURE
                log.warning(
                    "[%s] audit log unavailable (%s): %d record(s) journalled",
                    records[0].relay_id,
                    type(exc).__name__,
                    len(records),
                )
        lines = [canonical_json(record.to_json()) for record in records]
        try:
            await asyncio.to_thread(self.journal.append, lines)
        except OSError as exc:
            # Neither Redis nor the disk took the records: the one case where they are lost.
            ids = ", ".join(r.record_id for r in records)
            log.critical("audit records LOST (journal %s: %s): %s", self.journal.path, exc, ids)

    async def replay_journal(self) -> int:
        """Store journalled records in order, each once; the number newly stored.

        Raises StoreUnavailable when Redis fails meanwhile: what was claimed stays on disk and
        the next call goes on where this one stopped (Rule 1 skips what is already stored).
        """
        if not self.journal.pending():
            return 0
        stored = 0
        with self.journal.replay_lock() as mine:
            if not mine:
                return 0  # another process is replaying
            for _round in range(100):  # bounded: new lines may keep arriving while we replay
                path = self.journal.claim()
                if path is None:
                    break
                rows = await asyncio.to_thread(self.journal.read, path)
                records: list[DecisionRecord] = []
                for number, data in rows:
                    try:
                        records.append(record_from_json(data))
                    except (ValueError, TypeError) as exc:
                        log.error("audit journal line %d is not a record (%s)", number, exc)
                        self.journal.reject([canonical_json(data)])
                for start in range(0, len(records), BATCH):
                    try:
                        stored += await self._store(records[start : start + BATCH])
                    except Exception as exc:
                        raise StoreUnavailable(f"audit journal replay stopped: {exc}") from exc
                self.journal.done(path)
        self._skip_until = 0.0
        return stored

    # -----------------------------------------------------------------------------------------
    # Retention

    async def trim(self, now: datetime) -> int:
        """Remove records stored before ``now - retention_days`` and their index entries."""
        cutoff = to_ms(now - timedelta(days=self.retention_days))
        stream = self.keys.audit_stream()
        removed = 0
        while True:
            entries = await self._xrange("-", f"({cutoff}-0", BATCH)
            if not entries:
                break
            ck = count_keys(self.keys)[0]
            pipe = self.client.pipeline(transaction=True)
            for sid, payload in entries:
                try:
                    record = decode(payload)
                except (ValueError, TypeError):
                    log.error("audit entry %s is not a record; trimmed without index cleanup", sid)
                    continue
                pipe.lrem(self.keys.audit_by_message(message_key(record.message_id)), 0, sid)
                pipe.zrem(self.keys.audit_by_rcpt(record.recipient_key), sid)
                # audit_counts Rule 1: what leaves the log leaves its day's counts.
                day = int(sid.partition("-")[0]) // DAY_MS
                for name, n in tally(record).items():
                    pipe.hincrby(ck.counts, f"{day}|{name}", -n)
                pipe.zrem(ck.without_consent, sid)
            pipe.xtrim(stream, minid=_next_id(entries[-1][0]), approximate=False)
            await self._call(pipe.execute())
            removed += len(entries)
        await self._drop_empty_days(cutoff // DAY_MS)
        return removed

    async def _drop_empty_days(self, first_kept: int) -> None:
        """Delete the count fields of days wholly before retention: every record of those days
        was subtracted as it was trimmed, so only zeros remain."""
        for ck in count_keys(self.keys):
            raw_days = await self._call(self.client.zrangebyscore(ck.days, "-inf", first_kept - 1))
            if not raw_days:
                continue
            dims = await self._call(self.client.smembers(ck.dims))
            names = [d.decode() if isinstance(d, bytes) else str(d) for d in dims]
            for raw in raw_days:
                day = raw.decode() if isinstance(raw, bytes) else str(raw)
                pipe = self.client.pipeline(transaction=True)
                if names:
                    pipe.hdel(ck.counts, *[f"{day}|{name}" for name in names])
                pipe.zrem(ck.days, day)
                await self._call(pipe.execute())

    # -----------------------------------------------------------------------------------------
    # Queries

    async def _fetch(self, sids: object) -> list[DecisionRecord]:
        """The records behind index members (stream ids), in the index's order."""
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in sids or []]  # type: ignore[attr-defined]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        stream = self.keys.audit_stream()
        for sid in ids:
            pipe.xrange(stream, sid, sid)
        found: list[DecisionRecord] = []
        for raw in await self._call(pipe.execute()):
            # An index may briefly name an entry that retention just removed: skip it.
            found.extend(decode(payload) for _sid, payload in _entries(raw))
        return found

    async def by_message(self, message_id: str) -> list[DecisionRecord]:
        """Every record of one message, in the order they were stored."""
        wanted = normalise_message_id(message_id)
        sids = await self._call(
            self.client.lrange(self.keys.audit_by_message(message_key(message_id)), 0, -1)
        )
        found = await self._fetch(sids)
        return [r for r in found if normalise_message_id(r.message_id) == wanted]

    def _rkey(self, rcpt: str) -> str:
        if _is_rkey(rcpt):
            return rcpt
        if not self.address_key:
            raise RelayError("searching by address needs [secrets] address_key (or link_key)")
        return recipient_key(rcpt, self.address_key)

    async def search(
        self, rcpt: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> list[DecisionRecord]:
        """Records of one recipient (address or recipient key) and/or a time range, oldest first,
        at most ``limit``."""
        low = "-" if since is None else str(to_ms(since))
        if rcpt is None:
            high = "+" if until is None else f"({to_ms(until)}-0"
            return [decode(payload) for _sid, payload in await self._xrange(low, high, limit)]
        rkey = self._rkey(rcpt)
        low = "-inf" if since is None else low
        high = "+inf" if until is None else f"({to_ms(until)}"
        sids = await self._call(
            self.client.zrangebyscore(self.keys.audit_by_rcpt(rkey), low, high, 0, limit)
        )
        return [r for r in await self._fetch(sids) if r.recipient_key == rkey]

    async def export(
        self, since: datetime, until: datetime, fmt: str, out: IO[str], progress: bool
    ) -> int:
        """Write the records of ``[since, until)`` to ``out``; the number of records.

        Same range, same bytes (Rule 4): stream order, canonical JSON, fixed CSV columns.
        """
        if fmt not in EXPORT_FORMATS:
            raise RelayError(f"export format must be one of {', '.join(EXPORT_FORMATS)}")
        from tqdm import tqdm

        writer = csv.writer(out, lineterminator="\r\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        low, high = f"{to_ms(since)}-0", f"({to_ms(until)}-0"
        count = 0
        with tqdm(unit=" records", file=sys.stderr, disable=not progress) as bar:
            while True:
                entries = await self._xrange(low, high, BATCH)
                if not entries:
                    return count
                for _sid, payload in entries:
                    record = decode(payload)
                    if writer is None:
                        out.write(canonical_json(record.to_json()) + "\n")
                    else:
                        writer.writerows(csv_rows(record))
                count += len(entries)
                bar.update(len(entries))
                low = "(" + entries[-1][0]
