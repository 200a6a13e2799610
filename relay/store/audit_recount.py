"""``relay audit recount``: the per-day counts and the "tracked without consent" index rebuilt
from the decision records themselves (issue 16: records stored before the counts existed, or
counts damaged by hand, are counted again).

Stage: audit (async edge), run from the CLI while the relay may be writing.
Input: the log's client and keys, a range of UTC day numbers. Output: the counts of those days
(``audit_counts`` layout) equal to the tally of the records stored on them, and a report.

Rule 1: bucket by bucket, day by day: the day's records are read in batches (``XRANGE``), their
        tallies summed in memory (one number per dimension: bounded whatever the day holds) and
        their "tracked without consent" stream ids staged in a sorted set of the bucket's slot.
Rule 2: safe while the relay writes: one Lua script per bucket and day (one slot, atomic with
        the write script and retention) first checks that the day's first and last stream ids
        are those the count was made of. Records are only ever appended to a stream (with the
        current time) and removed from its start (retention), so equal ends mean the same
        records. Then it sets the day's count fields, deletes those no record has, and makes
        the day's index entries those staged. When records were appended meanwhile, they are
        read and the script tried again; when retention cut the day, the day is counted anew.
        A write after the script adds its tally to the corrected counts, as always.
Rule 3: idempotent: the counts are a function of the stored records; a second run changes
        nothing (the report says how many fields and index entries were corrected). Each run
        stages under its own key (expiring after an hour if the run dies), so two runs at once
        are harmless.
Rule 4: fields of the range's days missing from the bucket's dimension set (a damaged set) are
        found with one ``HSCAN`` of the bucket's counts and added to it first, so the script
        sees and corrects them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from relay.errors import RelayError
from relay.store import replicated
from relay.store.audit_codec import decode
from relay.store.audit_counts import DAY_MS, CountKeys, count_keys, has_untracked, tally
from relay.store.audit_scan import entries_of
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys

log = logging.getLogger("relay.store.audit_recount")
T = TypeVar("T")

BATCH = 500  # entries per XRANGE, ids per ZADD: bounded work per Redis call
ATTEMPTS = 1000  # script tries per day before giving up on a log that never stops moving
STAGE_SECONDS = 3600

APPENDED, CUT = -1, -2

# KEYS: stream, counts, dims, days, without-consent index, stage. ARGV: day range as stream ids
# (low included, high with "(": excluded), the first and last stream ids counted ("" for none),
# the day number, the day's range in ms (low included, high excluded), then name/count pairs.
# Returns {fields changed, index entries changed}, or {-1, 0} (appended), {-2, 0} (cut).
COMMIT_SCRIPT = """
local stream, counts, dims, days = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local untracked, stage = KEYS[5], KEYS[6]
local low, high, first, last, day = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local low_ms, high_ms = ARGV[6], ARGV[7]
local head = redis.call('XRANGE', stream, low, high, 'COUNT', 1)
local tail = redis.call('XREVRANGE', stream, high, low, 'COUNT', 1)
if (head[1] and head[1][1] or '') ~= first then return {-2, 0} end
if (tail[1] and tail[1][1] or '') ~= last then return {-1, 0} end
local changed, moved = 0, 0
local fresh = {}
for i = 8, #ARGV - 1, 2 do
  local name, n = ARGV[i], ARGV[i + 1]
  fresh[name] = true
  if redis.call('HGET', counts, day .. '|' .. name) ~= n then
    redis.call('HSET', counts, day .. '|' .. name, n)
    changed = changed + 1
  end
  redis.call('SADD', dims, name)
end
for _, name in ipairs(redis.call('SMEMBERS', dims)) do
  if not fresh[name] then
    local old = redis.call('HGET', counts, day .. '|' .. name)
    if old then
      if tonumber(old) ~= 0 then changed = changed + 1 end
      redis.call('HDEL', counts, day .. '|' .. name)
    end
  end
end
if #ARGV >= 9 then redis.call('ZADD', days, day, day) else redis.call('ZREM', days, day) end
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', untracked, low_ms, '(' .. high_ms)) do
  if not redis.call('ZSCORE', stage, sid) then
    redis.call('ZREM', untracked, sid)
    moved = moved + 1
  end
end
local staged = redis.call('ZRANGE', stage, 0, -1, 'WITHSCORES')
for i = 1, #staged, 2 do
  moved = moved + redis.call('ZADD', untracked, 'CH', staged[i + 1], staged[i])
end
redis.call('DEL', stage)
return {changed, moved}
"""


@dataclass
class RecountReport:
    records: int = 0
    days: set[int] = field(default_factory=set)
    fields_changed: int = 0
    index_changed: int = 0
    unreadable: int = 0
    retries: int = 0


@dataclass
class _Day:
    """One bucket's day as counted so far (Rule 1)."""

    number: int
    first: str = ""
    last: str = ""
    sums: dict[str, int] = field(default_factory=dict)
    staged: list[tuple[str, int]] = field(default_factory=list)  # not yet in the stage key

    @property
    def low(self) -> str:
        return f"{self.number * DAY_MS}-0"

    @property
    def high(self) -> str:
        return f"({(self.number + 1) * DAY_MS}-0"


class _Bucket:
    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        bucket: int,
        timeout: float,
        report: RecountReport,
        on_progress: Callable[[int], None],
    ) -> None:
        self.client = client
        self.stream = keys.audit_stream(bucket)
        self.ck: CountKeys = count_keys(keys)[bucket]
        # Rule 3: the stage has the bucket's hash tag (same slot) and this run's own name.
        self.stage = f"{self.ck.without_consent}:recount:{uuid.uuid4().hex}"
        self.timeout = timeout
        self.report = report
        self.on_progress = on_progress

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await bounded(awaitable, self.timeout)

    async def run(self, first_day: int, last_day: int) -> None:
        await self._register_names(first_day, last_day)
        done: set[int] = set()
        low, high = f"{first_day * DAY_MS}-0", f"({(last_day + 1) * DAY_MS}-0"
        while True:
            raw = await self._call(self.client.xrange(self.stream, low, high, count=1))
            found = entries_of(raw)
            if not found:
                break
            number = int(found[0][0].partition("-")[0]) // DAY_MS
            await self._recount_day(number)
            done.add(number)
            low = f"{(number + 1) * DAY_MS}-0"
        # Days that have counts but no record (all trimmed, or counts written by hand).
        raw_days: Any = await self._call(
            self.client.zrangebyscore(self.ck.days, first_day, last_day)
        )
        for value in raw_days or []:
            number = int(value)
            if number not in done:
                await self._recount_day(number)

    async def _register_names(self, first_day: int, last_day: int) -> None:
        """Rule 4."""
        names: set[str] = set()
        async for raw in self.client.hscan_iter(self.ck.counts, count=BATCH):
            name = raw[0] if isinstance(raw, tuple) else raw
            text = name.decode() if isinstance(name, bytes) else str(name)
            day, _, dim = text.partition("|")
            if day.isdigit() and first_day <= int(day) <= last_day and dim:
                names.add(dim)
        if names:
            await self._call(self.client.sadd(self.ck.dims, *sorted(names)))

    async def _read(self, day: _Day) -> None:
        """Count the day's records after ``day.last`` (all of them when it is "")."""
        low = f"({day.last}" if day.last else day.low
        while True:
            raw = await self._call(self.client.xrange(self.stream, low, day.high, count=BATCH))
            entries = entries_of(raw)
            for sid, payload in entries:
                day.first = day.first or sid
                day.last = sid
                try:
                    record = decode(payload)
                except (ValueError, TypeError):
                    self.report.unreadable += 1
                    log.warning(
                        "audit entry %s of %s is not a record: not counted", sid, self.stream
                    )
                    continue
                for name, n in tally(record).items():
                    day.sums[name] = day.sums.get(name, 0) + n
                if has_untracked(record):
                    day.staged.append((sid, int(sid.partition("-")[0])))
            self.report.records += len(entries)
            self.on_progress(len(entries))
            await self._flush(day)
            if len(entries) < BATCH:
                return
            low = f"({entries[-1][0]}"

    async def _flush(self, day: _Day) -> None:
        while day.staged:
            batch, day.staged = day.staged[:BATCH], day.staged[BATCH:]
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(self.stage, {sid: ms for sid, ms in batch})
            pipe.expire(self.stage, STAGE_SECONDS)
            await self._call(pipe.execute())

    async def _recount_day(self, number: int) -> None:
        """Rule 2: count, then commit if the day is still what was counted."""
        day = _Day(number)
        await self._read(day)
        for _attempt in range(ATTEMPTS):
            pairs: list[str] = []
            for name, n in sorted(day.sums.items()):
                pairs += [name, str(n)]
            keys = [self.stream, self.ck.counts, self.ck.dims, self.ck.days]
            keys += [self.ck.without_consent, self.stage]
            args = [day.low, day.high, day.first, day.last, str(number)]
            args += [str(number * DAY_MS), str((number + 1) * DAY_MS), *pairs]
            command = replicated.script(COMMIT_SCRIPT, keys, args)
            replies, _ok = await self._call(
                replicated.execute(self.client, [command], replicated.Durability.off())
            )
            changed, moved = (int(v) for v in replies[0])
            if changed >= 0:
                self.report.fields_changed += changed
                self.report.index_changed += moved
                self.report.days.add(number)
                return
            self.report.retries += 1
            if changed == CUT:  # retention removed some of the day's records: count it anew
                await self._call(self.client.delete(self.stage))
                day = _Day(number)
            await self._read(day)
        raise RelayError(
            f"audit recount: day {number} of {self.stream} kept changing; try again later"
        )


async def recount(
    client: AsyncRedis,
    keys: Keys,
    first_day: int,
    last_day: int,
    *,
    timeout: float,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> RecountReport:
    """Recount the days ``first_day..last_day`` (UTC day numbers, inclusive) of every bucket."""
    if last_day < first_day:
        raise ValueError("the last day is before the first day")
    report = RecountReport()
    for bucket in keys.audit_buckets():
        await _Bucket(client, keys, bucket, timeout, report, on_progress).run(first_day, last_day)
    return report


async def first_day_stored(client: AsyncRedis, keys: Keys, timeout: float) -> int | None:
    """The day of the oldest record or count of any bucket (None: the log is empty)."""
    days: list[int] = []
    for bucket, ck in zip(keys.audit_buckets(), count_keys(keys), strict=True):
        raw = await bounded(client.xrange(keys.audit_stream(bucket), count=1), timeout)
        days += [int(sid.partition("-")[0]) // DAY_MS for sid, _payload in entries_of(raw)]
        counted: Any = await bounded(client.zrange(ck.days, 0, 0), timeout)
        days += [int(value) for value in counted or []]
    return min(days) if days else None


__all__ = ["COMMIT_SCRIPT", "RecountReport", "first_day_stored", "recount"]
