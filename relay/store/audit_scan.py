"""Reading the audit buckets as one log: time ranges merged across the buckets' streams, and a
recipient's records gathered from every bucket.

Stage: async edge helper of ``audit``.
Input: a client, the bucket streams (``Keys.audit_stream``) or the recipient's index in each
bucket (``Keys.audit_by_rcpt``), a half-open range of stream ids or times.
Output: (bucket, stream id, record) in one global order, oldest first.

Rule 1: the merge is ordered by the millisecond of the stream id (the time the record was
        stored); records of different buckets stored in the same millisecond are ordered by
        the time they were decided, then record id, then bucket; within a bucket the stream's
        own order is kept. The same stored data always gives the same order, which keeps
        exports reproducible.
Rule 2: memory is bounded: each bucket contributes at most one page at a time (``page``
        entries); the next page of a bucket is read only when its last entry was yielded.
Rule 3: every read names its key, one bucket at a time or one pipeline over all buckets; on a
        cluster each goes to the master holding that bucket now, following MOVED/ASK while a
        slot migrates, so a migration neither hides nor repeats a record.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from relay.store.audit_codec import decode
from relay.store.audit_record import DecisionRecord
from relay.store.redis_conn import AsyncRedis, bounded

Entry = tuple[int, str, DecisionRecord]  # bucket, stream id, record


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_order(sids: Iterable[str]) -> list[str]:
    """Stream ids in the order they were stored (a sorted set of equal scores orders its
    members as text, which puts "5-10" before "5-9")."""
    return sorted(sids, key=lambda sid: tuple(int(part) for part in sid.split("-", 1)))


def entries_of(raw: object) -> list[tuple[str, bytes]]:
    """XRANGE's answer as (stream id, stored record) pairs (the stubs type it loosely)."""
    pairs: list[tuple[str, bytes]] = []
    for sid, fields in raw or []:  # type: ignore[attr-defined]
        payload = fields.get(b"r", b"") if isinstance(fields, dict) else b""
        pairs.append((_text(sid), payload if isinstance(payload, bytes) else b""))
    return pairs


def order(bucket: int, sid: str) -> tuple[int, int, int]:
    """Stream id order, ties between buckets on the bucket number (index reads)."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0), bucket


def _merge_key(bucket: int, sid: str, record: DecisionRecord) -> tuple[int, str, str, int]:
    """Rule 1."""
    return int(sid.partition("-")[0]), record.decided_at.isoformat(), record.record_id, bucket


# (bucket, stream id, record id) -> leave this entry out (``Resume.skips``).
Skip = Callable[[int, str, str], bool]
FIRST_PAGE = 8  # entries a bucket's first read asks for; each further read asks for twice more


def _record_id(payload: bytes) -> str:
    """The record id in front of a stored record (``audit_codec`` Rule 1), without decoding."""
    return payload.partition(b":")[0].decode("ascii", "replace")


def _fill(
    bucket: int, raw: object, asked: int, skip: Skip | None
) -> tuple[list[tuple[str, bytes]], str | None, bool]:
    """A page of one stream: (its entries not skipped, its last stream id, more may follow)."""
    pairs = entries_of(raw)
    kept = pairs if skip is None else [
        (sid, p) for sid, p in pairs if not skip(bucket, sid, _record_id(p))
    ]  # fmt: skip
    return kept, (pairs[-1][0] if pairs else None), len(pairs) == asked


async def merged_range(
    client: AsyncRedis,
    streams: Sequence[str],
    low: str,
    high: str,
    *,
    page: int,
    timeout: float,
    skip: Skip | None = None,
) -> AsyncIterator[Entry]:
    """Records of every stream between ``low`` and ``high`` (XRANGE bounds), in global order
    (Rule 1); ``skip`` leaves out entries (a cursor's already-read ones, ``Resume``).

    Each bucket is read in pages growing from ``FIRST_PAGE`` to ``page`` entries, and a record
    is decoded only when it comes to the head of its bucket: a request that stops early (a
    page of results found) has read and decoded little. A stored entry that is not a record
    raises ValueError (``audit_codec.decode``)."""
    asked = [min(page, FIRST_PAGE)] * len(streams)
    pipe = client.pipeline(transaction=False)
    for bucket, stream in enumerate(streams):
        pipe.xrange(stream, low, high, count=asked[bucket])
    first = await bounded(pipe.execute(), timeout)
    buffers: list[deque[tuple[str, bytes]]] = []
    last: list[str | None] = []
    more: list[bool] = []
    for bucket, raw in enumerate(first):
        kept, end, further = _fill(bucket, raw, asked[bucket], skip)
        buffers.append(deque(kept))
        last.append(end)
        more.append(further)
    heads: dict[int, DecisionRecord] = {}
    heap: list[tuple[tuple[int, str, str, int], int]] = []

    async def refill(bucket: int) -> None:
        # Pages whose every entry is skipped are read on: a bucket stops only at its end.
        while not buffers[bucket] and more[bucket] and last[bucket] is not None:
            asked[bucket] = min(page, asked[bucket] * 2)
            raw = await bounded(
                client.xrange(streams[bucket], "(" + str(last[bucket]), high, count=asked[bucket]),
                timeout,
            )
            kept, end, further = _fill(bucket, raw, asked[bucket], skip)
            buffers[bucket].extend(kept)
            last[bucket], more[bucket] = end or last[bucket], further
        if buffers[bucket]:
            sid, payload = buffers[bucket][0]
            heads[bucket] = decode(payload)
            heapq.heappush(heap, (_merge_key(bucket, sid, heads[bucket]), bucket))

    for bucket in range(len(streams)):
        await refill(bucket)
    while heap:
        _key, bucket = heapq.heappop(heap)
        sid, _payload = buffers[bucket].popleft()
        yield bucket, sid, heads.pop(bucket)
        await refill(bucket)


@dataclass(frozen=True)
class Resume:
    """Where a merged read stopped: the millisecond of the last entry read, and the ids of the
    entries of that millisecond already read (entries of a millisecond come from several
    buckets; the merge's order among them is fixed, so skipping those read goes on exactly
    where it stopped). Text form, digits and dashes only (it travels in URLs): ``<ms>`` then
    ``-<n>`` for each read id, ``n`` its first 8 hex digits as a decimal number."""

    ms: int
    read: frozenset[str] = frozenset()

    def text(self) -> str:
        return "-".join([str(self.ms), *(str(int(r, 16)) for r in sorted(self.read))])

    @classmethod
    def parse(cls, text: str) -> Resume:
        parts = text.split("-")
        if not all(p.isdigit() and len(p) <= 16 for p in parts):
            raise ValueError(f"cursor: not a cursor of this list: {text!r}")
        read = frozenset(f"{int(p):08x}" for p in parts[1:])
        if any(len(r) != 8 for r in read):
            raise ValueError(f"cursor: not a cursor of this list: {text!r}")
        return cls(int(parts[0]), read)

    def low(self) -> str:
        return f"{self.ms}-0"

    def skips(self, _bucket: int, sid: str, record_id: str) -> bool:
        return int(sid.partition("-")[0]) == self.ms and record_id[:8] in self.read

    def after(self, sid: str, record: DecisionRecord) -> Resume:
        """This cursor moved past one more entry read."""
        ms = int(sid.partition("-")[0])
        read = self.read if ms == self.ms else frozenset()
        return Resume(ms, read | {record.record_id[:8]})


IndexEntry = tuple[int, str, int]  # bucket, member (a stream id), score (ms)


async def merged_index(
    client: AsyncRedis,
    indexes: Sequence[str],
    low: int,
    high: str,
    *,
    page: int,
    timeout: float,
    after: IndexEntry | None = None,
) -> AsyncIterator[IndexEntry]:
    """Members of every bucket's sorted set scored from ``low`` to ``high`` (ZRANGEBYSCORE
    bounds), ordered by (score, bucket, member): within a bucket that is the set's own order,
    so ``after`` (the last entry read) resumes exactly there."""
    start = low if after is None else after[2]
    state: list[tuple[int, int]] = [(start, 0)] * len(indexes)  # score, members read at it
    buffers: list[deque[tuple[str, int]]] = [deque() for _ in indexes]
    more = [True] * len(indexes)
    asked = [min(page, FIRST_PAGE) // 2] * len(indexes)  # doubled before each read
    heap: list[tuple[tuple[int, int, str], int]] = []

    def late(bucket: int, member: str, score: int) -> bool:
        return after is None or (score, bucket, member) > (after[2], after[0], after[1])

    def ask(pipe: Any, bucket: int) -> None:
        score, offset = state[bucket]
        asked[bucket] = max(1, min(page, asked[bucket] * 2))
        pipe.zrangebyscore(
            indexes[bucket], score, high, start=offset, num=asked[bucket], withscores=True
        )

    def take(bucket: int, raw: Any) -> None:
        found = [(_text(m), int(s)) for m, s in raw]
        more[bucket] = len(found) == asked[bucket]
        score, offset = state[bucket]
        for member, member_score in found:
            score, offset = (score, offset + 1) if member_score == score else (member_score, 1)
            if late(bucket, member, member_score):
                buffers[bucket].append((member, member_score))
        state[bucket] = (score, offset)

    def push(bucket: int) -> None:
        if buffers[bucket]:
            member, score = buffers[bucket][0]
            heapq.heappush(heap, ((score, bucket, member), bucket))

    async def refill(bucket: int) -> None:
        while not buffers[bucket] and more[bucket]:
            pipe = client.pipeline(transaction=False)
            ask(pipe, bucket)
            take(bucket, (await bounded(pipe.execute(), timeout))[0])
        push(bucket)

    first = client.pipeline(transaction=False)  # every bucket's first page in one round trip
    for bucket in range(len(indexes)):
        ask(first, bucket)
    for bucket, raw in enumerate(await bounded(first.execute(), timeout)):
        take(bucket, raw)
    for bucket in range(len(indexes)):
        await refill(bucket)
    while heap:
        _key, bucket = heapq.heappop(heap)
        member, score = buffers[bucket].popleft()
        yield bucket, member, score
        await refill(bucket)


async def recipient_ids(
    client: AsyncRedis,
    indexes: Sequence[str],
    low: str,
    high: str,
    limit: int,
    timeout: float,
) -> list[tuple[int, str]]:
    """(bucket, stream id) of the first ``limit`` index members scored in [low, high] over
    every bucket's recipient index, by stream id; members stored in the same millisecond as
    the last one kept are kept too (``sort_records`` orders them and cuts to ``limit``)."""
    pipe = client.pipeline(transaction=False)
    for index in indexes:
        pipe.zrangebyscore(index, low, high, 0, limit)
    replies = await bounded(pipe.execute(), timeout)
    found = [(bucket, _text(sid)) for bucket, sids in enumerate(replies) for sid in sids]
    found.sort(key=lambda item: order(*item))
    if len(found) <= limit:
        return found
    last_ms = order(*found[limit - 1])[0]
    return [item for item in found if order(*item)[0] <= last_ms]


def sort_records(entries: Sequence[tuple[int, str, DecisionRecord]]) -> list[DecisionRecord]:
    """Records of several buckets in the merge's order (Rule 1)."""
    return [record for *_rest, record in sorted(entries, key=lambda e: _merge_key(*e))]


async def fetch(
    client: AsyncRedis, streams: Sequence[str], ids: Sequence[tuple[int, str]], timeout: float
) -> list[tuple[int, str, bytes]]:
    """The stored records behind (bucket, stream id) pairs, in the order given; an id that
    retention removed meanwhile is skipped."""
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for bucket, sid in ids:
        pipe.xrange(streams[bucket], sid, sid)
    found: list[tuple[int, str, bytes]] = []
    for (bucket, _sid), raw in zip(ids, await bounded(pipe.execute(), timeout), strict=True):
        found.extend((bucket, sid, payload) for sid, payload in entries_of(raw))
    return found
