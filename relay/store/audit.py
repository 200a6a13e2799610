"""The auditors' decision log: decision records stored in Redis, indexed, kept, queried, exported.

Stage: audit (async edge). Input: ``DecisionRecord``s from ``build_records`` (one per message and
recipient). Output: entries of the bucket streams plus two indexes; JSON Lines and CSV exports.

Storage (measured in ``bench/audit_bench.py`` and ``bench/cluster_bench.py``; figures in the
README): the log is cut into ``AUDIT_BUCKETS`` buckets (``redis_keys``: one hash slot each on a
Redis Cluster, spread evenly over the masters); a record goes to the bucket of its message. Per
bucket:
- the stream ``audit:{b}:log`` holds one entry per record, a single field ``r`` whose value is
  the compact form of ``audit_codec.encode``; the stream id is the time the record was stored,
  so a time range is an ``XRANGE`` per bucket, merged (``audit_scan``);
- ``audit:{b}:msg:<hash of Message-ID>`` is a list of the stream ids of that message's records
  (a Message-ID may contain an address, so only its hash is in the key);
- ``audit:{b}:rcpt:<recipient key>`` is a sorted set of the stream ids of that recipient's
  records in this bucket, scored by their time: "this recipient between these dates" is one
  ``ZRANGEBYSCORE`` per bucket, in one pipeline;
- the bucket's per-day counts and "tracked without consent" index (``audit_counts``), so that
  the auditors' first page reads a few hash fields instead of scanning the log.

Rule 1: one Lua script (``audit_script``) writes a batch of one bucket: stream entries, both
        indexes and the day's counts together, atomically, and it skips any record whose id the
        message's index already holds. So a write retried after a lost reply, or a journal
        replay interrupted and restarted, never doubles a record (nor its counts). A batch
        spanning buckets is one script per bucket, each atomic.
Rule 2: ``write`` never raises and never loses a record: if Redis fails or answers too late,
        the records go to the local journal (``audit_journal``), fsynced, and ``replay_journal``
        stores them later, in journal order. After a failure the log skips Redis for a few
        seconds, so that a Redis outage does not add a timeout to every message. On a cluster
        or with Sentinel the write waits for a replica (``replicated``); records no replica
        confirmed are journalled as well and the replay (Rule 1) restores them if a failover
        lost them. A replayed batch that is again unconfirmed is not journalled a third time:
        the residual window is a master dying after two writes, seconds apart, both
        unreplicated.
Rule 3: every Redis call is bounded by ``timeout``.
Rule 4: ranges are half-open ``[since, until)`` over the time the record was stored. Records
        replayed from the journal are stored (and so exported) at replay time; they keep their
        own ``decided_at``. Because a past range never changes, its export is reproducible.
Rule 5: retention (``audit_trim``) trims each bucket's stream by time (``XTRIM MINID``) and
        removes the trimmed ids from both indexes, and their tallies from the counts, in the
        same transaction (one slot), batch by batch.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import sys
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TypeVar

from relay.core.recipients import recipient_key
from relay.errors import RelayError, StoreUnavailable
from relay.store import audit_scan, replicated
from relay.store.audit_codec import CSV_COLUMNS, csv_rows, decode, encode
from relay.store.audit_counts import count_keys, encode_tally, has_untracked, tally
from relay.store.audit_journal import Journal
from relay.store.audit_record import (
    DecisionRecord,
    TrackerRecord,
    build_records,
    canonical_json,
    message_key,
    normalise_message_id,
    record_from_json,
)
from relay.store.audit_scan import stream_order
from relay.store.audit_script import WRITE_SCRIPT
from relay.store.audit_trim import trim
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys
from relay.store.replicated import Durability

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
MERGE_PAGE = 100  # entries per bucket and read while merging buckets (audit_scan Rule 2)
SKIP_REDIS_AFTER_FAILURE = 5.0  # seconds (Rule 2)
EXPORT_FORMATS = ("jsonl", "csv")


def to_ms(moment: datetime) -> int:
    """Stream time of a moment; a naive datetime is UTC (never the host's local time)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _is_rkey(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


class AuditLog:
    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        journal_path: str | Path,
        *,
        timeout: float,
        retention_days: int,
        address_key: bytes = b"",
        durability: Durability | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.journal = Journal(journal_path)
        self.timeout = timeout
        self.retention_days = retention_days
        # Needed only to search by address (the CLI passes it); the pipeline's records carry
        # their recipient key already.
        self.address_key = address_key
        self.durability = durability or Durability.off()
        self._skip_until = 0.0

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await bounded(awaitable, self.timeout)

    def _streams(self) -> list[str]:
        return self.keys.audit_streams()

    # -----------------------------------------------------------------------------------------
    # Writing

    async def _store(self, records: Sequence[DecisionRecord]) -> tuple[int, bool]:
        """Store a batch atomically per bucket (Rule 1): (records that were new, confirmed)."""
        by_bucket: dict[int, list[DecisionRecord]] = {}
        for record in records:
            bucket = self.keys.audit_bucket(message_key(record.message_id))
            by_bucket.setdefault(bucket, []).append(record)
        commands = []
        counts = count_keys(self.keys)
        for bucket, group in by_bucket.items():
            ck = counts[bucket]
            keys = [self.keys.audit_stream(bucket), ck.counts, ck.dims, ck.days, ck.without_consent]
            keys.append(self.keys.audit_ids(bucket))
            args: list[bytes | str] = []
            for record in group:
                keys.append(self.keys.audit_by_message(message_key(record.message_id)))
                keys.append(self.keys.audit_by_rcpt(bucket, record.recipient_key))
                untracked = "1" if has_untracked(record) else "0"
                args += [encode(record), encode_tally(tally(record)), untracked]
            commands.append(replicated.script(WRITE_SCRIPT, keys, args))
        written, confirmed = await bounded(
            replicated.execute(self.client, commands, self.durability),
            self.timeout + self.durability.timeout_ms / 1000,
        )
        return sum(int(w) for w in written), confirmed

    async def write(self, records: Sequence[DecisionRecord]) -> None:
        """Store the records, or journal them (Rule 2). Never raises."""
        if not records:
            return
        if time.monotonic() >= self._skip_until:
            try:
                _written, confirmed = await self._store(records)
                if confirmed:
                    return
                log.warning(
                    "[%s] no replica confirmed %d audit record(s): journalled for a replay",
                    records[0].relay_id,
                    len(records),
                )
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
                        written, _confirmed = await self._store(records[start : start + BATCH])
                        stored += written
                    except Exception as exc:
                        raise StoreUnavailable(f"audit journal replay stopped: {exc}") from exc
                self.journal.done(path)
        self._skip_until = 0.0
        return stored

    # -----------------------------------------------------------------------------------------
    # Retention

    async def trim(self, now: datetime) -> int:
        """Remove records stored before ``now - retention_days``, their index entries and their
        counts (``audit_trim``)."""
        cutoff = to_ms(now - timedelta(days=self.retention_days))
        return await trim(self.client, self.keys, self.timeout, cutoff)

    # -----------------------------------------------------------------------------------------
    # Queries

    async def by_message(self, message_id: str) -> list[DecisionRecord]:
        """Every record of one message, in the order they were stored."""
        wanted = normalise_message_id(message_id)
        mkey = message_key(message_id)
        bucket = self.keys.audit_bucket(mkey)
        sids = await self._call(self.client.zrange(self.keys.audit_by_message(mkey), 0, -1))
        ids = [(bucket, s) for s in stream_order(s.decode() if isinstance(s, bytes) else str(s)
                                                 for s in sids)]  # fmt: skip
        found = await audit_scan.fetch(self.client, self._streams(), ids, self.timeout)
        records = [decode(payload) for _bucket, _sid, payload in found]
        return [r for r in records if normalise_message_id(r.message_id) == wanted]

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
        if limit <= 0:
            return []
        if rcpt is None:
            low = "-" if since is None else f"{to_ms(since)}-0"
            high = "+" if until is None else f"({to_ms(until)}-0"
            found: list[DecisionRecord] = []
            page = max(4, min(MERGE_PAGE, limit // len(self._streams()) + 4))
            async for _b, _sid, record in audit_scan.merged_range(
                self.client, self._streams(), low, high, page=page, timeout=self.timeout
            ):
                found.append(record)
                if len(found) >= limit:
                    break
            return found
        rkey = self._rkey(rcpt)
        indexes = [self.keys.audit_by_rcpt(b, rkey) for b in self.keys.audit_buckets()]
        ids = await audit_scan.recipient_ids(
            self.client,
            indexes,
            "-inf" if since is None else str(to_ms(since)),
            "+inf" if until is None else f"({to_ms(until)}",
            limit,
            self.timeout,
        )
        entries = await audit_scan.fetch(self.client, self._streams(), ids, self.timeout)
        decoded = [(bucket, sid, decode(payload)) for bucket, sid, payload in entries]
        records = audit_scan.sort_records(decoded)
        return [r for r in records if r.recipient_key == rkey][:limit]

    async def export(
        self, since: datetime, until: datetime, fmt: str, out: IO[str], progress: bool
    ) -> int:
        """Write the records of ``[since, until)`` to ``out``; the number of records.

        Same range, same bytes (Rule 4): merged stream order (``audit_scan`` Rule 1),
        canonical JSON, fixed CSV columns.
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
            async for _bucket, _sid, record in audit_scan.merged_range(
                self.client, self._streams(), low, high, page=MERGE_PAGE, timeout=self.timeout
            ):
                if writer is None:
                    out.write(canonical_json(record.to_json()) + "\n")
                else:
                    writer.writerows(csv_rows(record))
                count += 1
                if count % MERGE_PAGE == 0:
                    bar.update(MERGE_PAGE)
            bar.update(count - bar.n)
        return count
