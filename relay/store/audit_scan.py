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
from collections.abc import AsyncIterator, Sequence

from relay.store.audit_codec import decode
from relay.store.audit_record import DecisionRecord
from relay.store.redis_conn import AsyncRedis, bounded

Entry = tuple[int, str, DecisionRecord]  # bucket, stream id, record


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


async def merged_range(
    client: AsyncRedis,
    streams: Sequence[str],
    low: str,
    high: str,
    *,
    page: int,
    timeout: float,
) -> AsyncIterator[Entry]:
    """Records of every stream between ``low`` and ``high`` (XRANGE bounds), in global order.

    A stored entry that is not a record raises ValueError (``audit_codec.decode``)."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xrange(stream, low, high, count=page)
    first = await bounded(pipe.execute(), timeout)
    buffers = [deque((sid, decode(p)) for sid, p in entries_of(raw)) for raw in first]
    more = [len(buffer) == page for buffer in buffers]
    heap: list[tuple[tuple[int, str, str, int], int]] = []
    for bucket, buffer in enumerate(buffers):
        if buffer:
            heap.append((_merge_key(bucket, *buffer[0]), bucket))
    heapq.heapify(heap)
    while heap:
        _key, bucket = heapq.heappop(heap)
        buffer = buffers[bucket]
        sid, record = buffer.popleft()
        yield bucket, sid, record
        if not buffer and more[bucket]:
            raw = await bounded(
                client.xrange(streams[bucket], "(" + sid, high, count=page), timeout
            )
            buffer.extend((s, decode(p)) for s, p in entries_of(raw))
            more[bucket] = len(buffer) == page
        if buffer:
            heapq.heappush(heap, (_merge_key(bucket, *buffer[0]), bucket))


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
