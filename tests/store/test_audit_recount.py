"""``audit_recount`` on a real Valkey (or the test cluster, RELAY_TEST_REDIS=cluster): counts and
the "tracked without consent" index rebuilt from the records equal what the write script
wrote, for records stored before the counts existed, twice in a row, and while a relay writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.store.audit import AuditLog, message_key
from relay.store.audit_codec import decode, encode
from relay.store.audit_counts import DAY_MS, count_keys, day_number, read_counts
from relay.store.audit_legend import tracked_without_consent
from relay.store.audit_record import DecisionRecord
from relay.store.audit_recount import first_day_stored, recount
from relay.store.redis_conn import AsyncRedis
from tests.store.test_audit_counts import legacy
from tests.store.test_audit_counts import recount as tally_of_the_streams
from tests.support.audit import TEST_KEYS, message, new_log
from tests.support.redis import async_client, sync_client

pytestmark = pytest.mark.timeout(120)
KEYS = TEST_KEYS
TODAY = day_number(datetime.now(UTC))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    conn = async_client(redis_url, 5.0)
    yield conn
    await conn.aclose()


@pytest.fixture
def audit(client: AsyncRedis, tmp_path: Path) -> AuditLog:
    return new_log(client, tmp_path / "journal")


def records_of(index: int) -> list[DecisionRecord]:
    """A message to 2 recipients; every third one also kept a legacy tracker."""
    found = message(index)
    return [legacy(r) for r in found] if index % 3 == 0 else found


async def layout(client: AsyncRedis) -> list[dict[str, Any]]:
    """Everything the counts consist of, bucket by bucket (zero fields left out)."""
    out = []
    for ck in count_keys(KEYS):
        counts: Any = await client.hgetall(ck.counts)
        dims: Any = await client.smembers(ck.dims)
        days: Any = await client.zrange(ck.days, 0, -1)
        index: Any = await client.zrange(ck.without_consent, 0, -1, withscores=True)
        out.append(
            {
                "counts": {k.decode(): int(v) for k, v in counts.items() if int(v)},
                "dims": sorted(d.decode() for d in dims),
                "days": [d.decode() for d in days],
                "index": [(m.decode(), int(s)) for m, s in index],
            }
        )
    return out


async def expected_index(client: AsyncRedis) -> list[list[str]]:
    """What each bucket's index must hold: its records holding a tracker without consent."""
    out = []
    for bucket in KEYS.audit_buckets():
        raw: Any = await client.xrange(KEYS.audit_stream(bucket))
        out.append(
            [
                bytes(sid).decode()
                for sid, fields in raw
                if any(tracked_without_consent(t) for t in decode(fields[b"r"]).trackers)
            ]
        )
    return out


async def index_ids(client: AsyncRedis) -> list[list[str]]:
    """Each bucket's "tracked without consent" index, its stream ids in order."""
    return [[sid for sid, _score in b["index"]] for b in await layout(client)]


async def damage(client: AsyncRedis) -> None:
    """Counts deleted, wrong, invented, a dimension set lost, index entries lost and invented."""
    cks = count_keys(KEYS)
    used = [ck for ck in cks if await client.exists(ck.counts)]
    assert len(used) >= 4
    await client.delete(used[0].counts)
    fields: Any = await client.hkeys(used[1].counts)
    await client.hset(used[1].counts, fields[0].decode(), 999)
    name = fields[0].decode().partition("|")[2]
    await client.hset(used[2].counts, f"{TODAY - 1}|{name}", 7)  # a day without records
    await client.zadd(used[2].days, {str(TODAY - 1): TODAY - 1})
    await client.delete(used[3].dims)
    for ck in cks:
        members: Any = await client.zrange(ck.without_consent, 0, 0)
        if members:
            await client.zrem(ck.without_consent, members[0])
            break
    await client.zadd(used[0].without_consent, {f"{TODAY * DAY_MS + 5}-0": TODAY * DAY_MS + 5})


async def test_recount_gives_back_what_the_write_script_wrote(
    client: AsyncRedis, audit: AuditLog
) -> None:
    for index in range(30):
        await audit.write(records_of(index))
    written = await layout(client)
    assert sum(len(b["index"]) for b in written) == 20  # 10 legacy messages x 2 recipients
    await damage(client)
    assert await layout(client) != written
    start = await first_day_stored(client, KEYS, 5.0)
    assert start == TODAY - 1  # the invented day counts as stored
    report = await recount(client, KEYS, start, TODAY, timeout=5.0)
    assert await layout(client) == written
    assert report.records == 60 and report.fields_changed > 0 and report.index_changed == 2
    again = await recount(client, KEYS, start, TODAY, timeout=5.0)
    assert await layout(client) == written
    assert (again.records, again.fields_changed, again.index_changed) == (60, 0, 0)


async def test_records_stored_before_the_counts_existed_are_counted(client: AsyncRedis) -> None:
    """An older relay wrote the streams and indexes only: the first page showed nothing."""
    first = TODAY - 3
    stored: list[DecisionRecord] = []
    for index in range(12):
        for number, record in enumerate(records_of(index)):
            bucket = KEYS.audit_bucket(message_key(record.message_id))
            day = first + index // 4  # 4 messages a day, 8 records
            ms = day * DAY_MS + 1000 * index + number
            await client.xadd(KEYS.audit_stream(bucket), {"r": encode(record)}, id=f"{ms}-0")
            stored.append(record)
    before = await read_counts(client, count_keys(KEYS), first, TODAY - 1)
    assert before.total("n") == 0
    report = await recount(client, KEYS, first, TODAY - 1, timeout=5.0)
    assert report.records == 24 and report.days == {first, first + 1, first + 2}
    after = await read_counts(client, count_keys(KEYS), first, TODAY - 1)
    assert [after.day(d, "n") for d in range(first, TODAY)] == [8, 8, 8]
    untracked = sum(tracked_without_consent(t) for r in stored for t in r.trackers)
    assert after.total("nc") == untracked == 8 and after.total("ncr") == 8
    assert after.total("t") == sum(len(r.trackers) for r in stored)
    assert sum(len(ids) for ids in await expected_index(client)) == 8
    assert [b["index"] for b in await layout(client)] == [
        [(sid, int(sid.partition("-")[0])) for sid in ids] for ids in await expected_index(client)
    ]
    assert await stored_fields(client) == await tally_of_the_streams(client)


async def stored_fields(client: AsyncRedis) -> dict[str, int]:
    total: dict[str, int] = {}
    for bucket in await layout(client):
        for k, v in bucket["counts"].items():
            total[k] = total.get(k, 0) + v
    return total


async def test_recount_while_the_relay_writes_misses_and_doubles_nothing(
    client: AsyncRedis, audit: AuditLog
) -> None:
    for index in range(40):
        await audit.write(records_of(index))
    for ck in count_keys(KEYS):  # as if the counts had never been written
        await client.delete(ck.counts, ck.dims, ck.days, ck.without_consent)
    stop = asyncio.Event()
    written = [0]

    async def writer(offset: int) -> None:
        index = offset
        while not stop.is_set():
            batch = [replace(r, relay_id=f"w{index}") for r in records_of(index)]
            await audit.write(batch)
            written[0] += len(batch)
            index += 4

    writers = [asyncio.create_task(writer(1000 + k)) for k in range(4)]
    await asyncio.sleep(0.05)
    report = await recount(client, KEYS, TODAY, TODAY, timeout=5.0)
    stop.set()
    await asyncio.gather(*writers)
    assert written[0] > 0 and report.records >= 80
    assert await stored_fields(client) == await tally_of_the_streams(client)
    assert await index_ids(client) == await expected_index(client)
    again = await recount(client, KEYS, TODAY, TODAY, timeout=5.0)
    assert (again.fields_changed, again.index_changed) == (0, 0)


def _first_bucket_with_records(redis_url: str) -> tuple[Any, str, list[str]]:
    """A sync client, the stream the recount reads first, and its stream ids."""
    sync = sync_client(redis_url)
    for bucket in KEYS.audit_buckets():
        stream = KEYS.audit_stream(bucket)
        raw: Any = sync.xrange(stream)
        ids = [bytes(sid).decode() for sid, _fields in raw]
        if ids:
            return sync, stream, ids
    raise AssertionError("no record written")


async def test_a_day_cut_by_retention_while_it_is_counted_is_counted_anew(
    client: AsyncRedis, audit: AuditLog, redis_url: str
) -> None:
    """Rule 2: between the count of a day and its commit, the day's first record leaves the
    stream (as retention removes it); the script refuses the count and the day is recounted."""
    for index in range(20):
        await audit.write(records_of(index))
    sync, stream, ids = _first_bucket_with_records(redis_url)
    assert len(ids) >= 2

    def cut_once(_n: int) -> None:
        if sync.xlen(stream) == len(ids):
            sync.xtrim(stream, minid=ids[1], approximate=False)

    report = await recount(client, KEYS, TODAY, TODAY, timeout=5.0, on_progress=cut_once)
    sync.close()
    assert report.retries >= 1
    assert await stored_fields(client) == await tally_of_the_streams(client)
    assert await index_ids(client) == await expected_index(client)


async def test_a_record_appended_while_a_day_is_counted_is_counted(
    client: AsyncRedis, audit: AuditLog, redis_url: str
) -> None:
    """Rule 2: a record stored between the count of a day and its commit is read and counted
    before the commit (here stored without counts, as an older relay did)."""
    for index in range(20):
        await audit.write(records_of(index))
    sync, stream, ids = _first_bucket_with_records(redis_url)
    late = legacy(message(99)[0])

    def append_once(_n: int) -> None:
        if sync.xlen(stream) == len(ids):
            sync.xadd(stream, {"r": encode(late)})

    report = await recount(client, KEYS, TODAY, TODAY, timeout=5.0, on_progress=append_once)
    sync.close()
    assert report.retries >= 1 and report.records == 41
    assert await stored_fields(client) == await tally_of_the_streams(client)
    assert await index_ids(client) == await expected_index(client)
