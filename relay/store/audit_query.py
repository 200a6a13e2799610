"""The auditors' queries over the decision log: filtered pages, the "tracked without consent"
list, one message, one recipient, the per-day counts.

Stage: audit (async edge), read-only. Input: an ``AuditLog`` (its client, keys and timeout),
time ranges, ``Filters`` and a cursor from the previous page. Output: ``Page``s of records.

Rule 1: every call does bounded work: a page reads at most ``budget`` stream entries (or index
        members) and stops there with a cursor, even when few of them match, so a rare filter
        over a long range costs several quick pages, never one request that stalls the relay.
Rule 2: read only; nothing here writes to Redis.
Rule 3: ranges are half-open ``[since, until)`` over the stored time, like ``AuditLog``; the
        "tracked without consent" list reads its own index (``audit_counts``), in time order to
        the millisecond (within one, by bucket, then in the order of the stream ids as text).
Rule 4: the log is cut into buckets (``AuditLog``); a page reads every bucket merged into one
        order (``audit_scan``), and its cursor says where that merge stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from relay.store import audit_scan
from relay.store.audit import AuditLog, to_ms
from relay.store.audit_codec import decode
from relay.store.audit_counts import (
    Counts,
    controller_of,
    count_keys,
    read_counts,
    sender_domain,
)
from relay.store.audit_legend import tracked_without_consent
from relay.store.audit_record import DecisionRecord, TrackerRecord
from relay.store.audit_scan import stream_order
from relay.store.redis_conn import bounded

T = TypeVar("T")
BATCH = 500
HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Filters:
    """What an auditor narrows a list to; empty strings and None mean "any"."""

    controller: str | None = None  # "" = the implicit single controller
    sender_domain: str = ""  # the From domain, subdomains included
    category: str = ""
    purpose: str = ""
    action: str = ""
    basis: str = ""
    rule: str = ""
    without_consent: bool = False

    @property
    def on_trackers(self) -> bool:
        return bool(self.purpose or self.action or self.basis or self.rule or self.without_consent)

    def tracker_matches(self, t: TrackerRecord) -> bool:
        return (
            (not self.purpose or t.purpose == self.purpose)
            and (not self.action or t.action == self.action)
            and (not self.basis or t.basis == self.basis)
            and (not self.rule or t.rule == self.rule)
            and (not self.without_consent or tracked_without_consent(t))
        )

    def matches(self, record: DecisionRecord) -> bool:
        if self.controller is not None and controller_of(record) != self.controller:
            return False
        if self.category and record.category != self.category:
            return False
        if self.sender_domain:
            domain = sender_domain(record.header_from, record.mail_from)
            wanted = self.sender_domain.lower().strip(".")
            if domain != wanted and not domain.endswith("." + wanted):
                return False
        return not self.on_trackers or any(self.tracker_matches(t) for t in record.trackers)


@dataclass(frozen=True)
class Page:
    """One page of matches, with where to go on (``cursor`` None: the range is exhausted)."""

    records: list[DecisionRecord] = field(default_factory=list)
    cursor: str | None = None
    scanned: int = 0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _index_cursor(cursor: str) -> audit_scan.IndexEntry:
    """``<score>:<bucket>:<member>``, the last index entry a page of ``without_consent`` read."""
    score, _, rest = cursor.partition(":")
    bucket, _, member = rest.partition(":")
    if not score.isdigit() or not bucket.isdigit() or not member:
        raise ValueError(f"cursor: not a cursor of this list: {cursor!r}")
    return (int(bucket), member, int(score))


class AuditReader:
    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.client = log.client
        self.keys = log.keys

    async def counts(self, first_day: int, last_day: int, controller: str | None) -> Counts:
        return await read_counts(
            self.client,
            count_keys(self.keys),
            first_day,
            last_day,
            controller,
            timeout=self.log.timeout,
        )

    def _per_bucket(self, budget: int) -> int:
        """Entries read per bucket and request: a budget's share of each bucket, and a little
        more (records are spread over the buckets evenly), so a page reads about ``budget``."""
        return max(8, min(BATCH, budget // len(self.keys.audit_buckets()) + 8))

    def _streams(self) -> list[str]:
        return self.keys.audit_streams()

    async def _by_ids(self, ids: Sequence[tuple[int, str]]) -> list[DecisionRecord]:
        found = await audit_scan.fetch(self.client, self._streams(), ids, self.log.timeout)
        return [decode(payload) for _bucket, _sid, payload in found]

    async def message(self, mkey: str) -> list[DecisionRecord]:
        """Every record under one message index (a 64-bit hash of the Message-ID)."""
        if len(mkey) != 16 or not set(mkey) <= HEX:
            return []
        bucket = self.keys.audit_bucket(mkey)
        sids = await bounded(
            self.client.zrange(self.keys.audit_by_message(mkey), 0, -1), self.log.timeout
        )
        return await self._by_ids([(bucket, s) for s in stream_order(_text(s) for s in sids)])

    async def recipient(
        self, rkey: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[DecisionRecord]:
        if len(rkey) != 32 or not set(rkey) <= HEX:
            return []
        return await self.log.search(rkey, since, until, limit)

    async def records(
        self,
        since: datetime,
        until: datetime,
        filters: Filters,
        cursor: str | None = None,
        limit: int = 50,
        budget: int = 5000,
    ) -> Page:
        """Matching records of ``[since, until)`` in the log's order (Rules 1 and 4)."""
        resume = audit_scan.Resume.parse(cursor) if cursor else None
        low = resume.low() if resume else f"{to_ms(since)}-0"
        entries = audit_scan.merged_range(
            self.client,
            self._streams(),
            low,
            f"({to_ms(until)}-0",
            page=self._per_bucket(budget),
            timeout=self.log.timeout,
            skip=resume.skips if resume else None,
        )
        found: list[DecisionRecord] = []
        position = resume
        scanned = 0
        async for _bucket, sid, record in entries:
            scanned += 1
            position = (position or audit_scan.Resume(0)).after(sid, record)
            if filters.matches(record):
                found.append(record)
            if scanned >= budget or len(found) >= limit:
                return Page(found, position.text(), scanned)
        return Page(found, None, scanned)

    async def without_consent(
        self,
        since: datetime,
        until: datetime,
        filters: Filters,
        cursor: str | None = None,
        limit: int = 50,
        budget: int = 2000,
    ) -> Page:
        """Records holding a tracker tracked without consent, in time order, from the buckets'
        indexes (``cursor`` is ``<score>:<bucket>:<member>``, the last index entry read)."""
        after = last = _index_cursor(cursor) if cursor else None
        entries = audit_scan.merged_index(
            self.client,
            [ck.without_consent for ck in count_keys(self.keys)],
            to_ms(since),
            f"({to_ms(until)}",
            page=self._per_bucket(budget),
            timeout=self.log.timeout,
            after=after,
        )
        found: list[DecisionRecord] = []
        batch: list[tuple[int, str]] = []
        scanned = 0
        async for entry in entries:
            batch.append((entry[0], entry[1]))
            last = entry
            scanned += 1
            # Fetched in batches no larger than the matches still wanted: never over ``limit``.
            if len(batch) >= min(BATCH, limit - len(found)) or scanned >= budget:
                found += [r for r in await self._by_ids(batch) if filters.matches(r)]
                batch.clear()
                if scanned >= budget or len(found) >= limit:
                    assert last is not None
                    return Page(found, f"{last[2]}:{last[0]}:{last[1]}", scanned)
        found += [r for r in await self._by_ids(batch) if filters.matches(r)]
        return Page(found, None, scanned)


__all__ = ["AuditReader", "Filters", "Page"]
