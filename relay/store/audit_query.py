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
        the millisecond (within one, in the order of the stream ids as text).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

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


def _pairs(raw: object) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for sid, fields in raw or []:  # type: ignore[attr-defined]
        payload = fields.get(b"r", b"") if isinstance(fields, dict) else b""
        out.append((_text(sid), payload if isinstance(payload, bytes) else b""))
    return out


class AuditReader:
    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.client = log.client
        self.keys = log.keys

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, self.log.timeout)

    async def counts(self, first_day: int, last_day: int, controller: str | None) -> Counts:
        return await read_counts(
            self.client,
            count_keys(self.keys),
            first_day,
            last_day,
            controller,
            timeout=self.log.timeout,
        )

    async def _by_sids(self, sids: Sequence[str]) -> list[DecisionRecord]:
        if not sids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for sid in sids:
            pipe.xrange(self.keys.audit_stream(), sid, sid)
        found: list[DecisionRecord] = []
        for raw in await self._call(pipe.execute()):
            # An index may briefly name an entry that retention just removed: skip it.
            found.extend(decode(payload) for _sid, payload in _pairs(raw))
        return found

    async def message(self, mkey: str) -> list[DecisionRecord]:
        """Every record under one message index (a 64-bit hash of the Message-ID)."""
        if len(mkey) != 16 or not set(mkey) <= HEX:
            return []
        sids = await self._call(self.client.lrange(self.keys.audit_by_message(mkey), 0, -1))
        return await self._by_sids([_text(s) for s in sids])

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
        """Matching records of ``[since, until)`` in stream order (Rule 1)."""
        low = f"({cursor}" if cursor else f"{to_ms(since)}-0"
        high = f"({to_ms(until)}-0"
        found: list[DecisionRecord] = []
        scanned = 0
        last = ""
        while scanned < budget and len(found) < limit:
            count = min(BATCH, budget - scanned)
            raw = await self._call(
                self.client.xrange(self.keys.audit_stream(), low, high, count=count)
            )
            entries = _pairs(raw)
            if not entries:
                return Page(found, None, scanned)
            for sid, payload in entries:
                scanned += 1
                last = sid
                record = decode(payload)
                if filters.matches(record):
                    found.append(record)
                    if len(found) >= limit:
                        break
            low = f"({last}"
        return Page(found, last or None, scanned)

    async def without_consent(
        self,
        since: datetime,
        until: datetime,
        filters: Filters,
        cursor: str | None = None,
        limit: int = 50,
        budget: int = 2000,
    ) -> Page:
        """Records holding a tracker tracked without consent, in time order, from the index
        (``cursor`` is ``<score>:<members of that score already read>``)."""
        index = count_keys(self.keys)[0].without_consent
        score, offset = to_ms(since), 0
        if cursor:
            head, _, tail = cursor.partition(":")
            if not head.isdigit() or not tail.isdigit():
                raise ValueError(f"cursor: not a cursor of this list: {cursor!r}")
            score, offset = int(head), int(tail)
        high = f"({to_ms(until)}"
        found: list[DecisionRecord] = []
        scanned = 0
        while scanned < budget and len(found) < limit:
            count = min(BATCH, budget - scanned, limit - len(found))
            raw: Any = await self._call(
                self.client.zrangebyscore(
                    index, score, high, start=offset, num=count, withscores=True
                )
            )
            members = [(_text(m), int(s)) for m, s in raw]
            if not members:
                return Page(found, None, scanned)
            for record in await self._by_sids([m for m, _s in members]):
                if filters.matches(record):
                    found.append(record)
            scanned += len(members)
            for _member, member_score in members:
                if member_score == score:
                    offset += 1
                else:
                    score, offset = member_score, 1
        return Page(found, f"{score}:{offset}", scanned)


__all__ = ["AuditReader", "Filters", "Page"]
