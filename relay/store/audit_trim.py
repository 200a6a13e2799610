"""Retention of the decision log: what is older than ``[audit] retention_days`` leaves the
streams, both indexes and the per-day counts together (``AuditLog`` Rule 5).

Stage: audit (async edge), run hourly by ``relay serve``.
Input: the log's client, keys and timeout, and the cut-off time (unix ms).
Output: the number of records removed.

Rule 1: bucket by bucket, batch by batch: one transaction per batch, over keys of that bucket
        only (one hash slot on a cluster): the entries' ids leave the message and recipient
        indexes, their tallies leave the day's counts (``audit_counts`` Rule 1) and the
        "tracked without consent" index, and the stream is trimmed up to the last of them.
Rule 2: the count fields of days wholly before the cut-off are deleted afterwards: every
        record of those days was subtracted as it was trimmed, so only zeros remain.
"""

from __future__ import annotations

import logging

from relay.store.audit_codec import decode
from relay.store.audit_counts import DAY_MS, count_keys, tally
from relay.store.audit_record import message_key
from relay.store.audit_scan import entries_of
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys

log = logging.getLogger("relay.store.audit")

BATCH = 500


def _next_id(sid: str) -> str:
    ms, _, seq = sid.partition("-")
    return f"{ms}-{int(seq) + 1}"


async def trim(client: AsyncRedis, keys: Keys, timeout: float, cutoff_ms: int) -> int:
    removed = 0
    for bucket in keys.audit_buckets():
        removed += await _trim_bucket(client, keys, timeout, bucket, cutoff_ms)
    await _drop_empty_days(client, keys, timeout, cutoff_ms // DAY_MS)
    return removed


async def _trim_bucket(
    client: AsyncRedis, keys: Keys, timeout: float, bucket: int, cutoff_ms: int
) -> int:
    stream = keys.audit_stream(bucket)
    ck = count_keys(keys)[bucket]
    removed = 0
    while True:
        raw = await bounded(client.xrange(stream, "-", f"({cutoff_ms}-0", count=BATCH), timeout)
        entries = entries_of(raw)
        if not entries:
            return removed
        pipe = client.pipeline(transaction=True)  # Rule 1: one slot
        for sid, payload in entries:
            try:
                record = decode(payload)
            except (ValueError, TypeError):
                log.error("audit entry %s is not a record; trimmed without index cleanup", sid)
                continue
            pipe.zrem(keys.audit_by_message(message_key(record.message_id)), sid)
            pipe.hdel(keys.audit_ids(bucket), record.record_id)
            pipe.zrem(keys.audit_by_rcpt(bucket, record.recipient_key), sid)
            day = int(sid.partition("-")[0]) // DAY_MS
            for name, n in tally(record).items():
                pipe.hincrby(ck.counts, f"{day}|{name}", -n)
            pipe.zrem(ck.without_consent, sid)
        pipe.xtrim(stream, minid=_next_id(entries[-1][0]), approximate=False)
        await bounded(pipe.execute(), timeout)
        removed += len(entries)


async def _drop_empty_days(client: AsyncRedis, keys: Keys, timeout: float, first_kept: int) -> None:
    """Rule 2."""
    for ck in count_keys(keys):
        raw_days = await bounded(client.zrangebyscore(ck.days, "-inf", first_kept - 1), timeout)
        if not raw_days:
            continue
        dims = await bounded(client.smembers(ck.dims), timeout)
        names = [d.decode() if isinstance(d, bytes) else str(d) for d in dims]
        for raw in raw_days:
            day = raw.decode() if isinstance(raw, bytes) else str(raw)
            pipe = client.pipeline(transaction=True)
            if names:
                pipe.hdel(ck.counts, *[f"{day}|{name}" for name in names])
            pipe.zrem(ck.days, day)
            await bounded(pipe.execute(), timeout)
