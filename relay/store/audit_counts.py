"""Per-day counts of the decision log, written with each record and read without a scan.

Stage: audit (async edge). Input: decision records (their tally is written by the audit log's
write script, in the same atomic step as the record); day ranges to read. Output: ``Counts``,
the numbers behind the auditors' first page and the HTML report.

Layout (all names from ``redis_keys``; one set of four keys per audit bucket, under the
bucket's hash tag, holding the counts of the bucket's records):
- ``audit:{b}:counts`` is a hash whose fields are ``<day>|<controller>|<dimension>`` and values the
  count, where ``<day>`` is the UTC day number (days since 1970-01-01) of the time the record
  was *stored* (the stream id), so a day's counts cover exactly the records a stream range over
  that day returns (``AuditLog`` Rule 4);
- ``audit:{b}:count-dims`` is the set of ``<controller>|<dimension>`` seen, so that a range is read
  with HMGET of known fields (never HSCAN);
- ``audit:{b}:count-days`` is a sorted set of the day numbers that have counts, for retention;
- ``audit:{b}:without-consent`` is a sorted set of the stream ids of records holding a tracker
  ``audit_legend.tracked_without_consent``, scored by their stream time.

Dimensions: ``n`` (records, i.e. recipient copies), ``t`` (trackers), ``nc`` (trackers tracked
without consent), ``ncr`` (records holding at least one), ``c:<category>`` (records),
``p:<purpose>``, ``a:<action>``, ``b:<basis>``, ``r:<rule>`` (trackers).

Rule 1: a record's tally is added by the same Lua script call that stores it, and only when it
        stores it (the script's duplicate check), so a retried write or a replayed journal never
        counts a record twice; retention subtracts each trimmed record's tally in the
        transaction that trims it. So the counts always equal a recount of the stored records.
Rule 2: controller ids, rule ids and every other value are percent-encoded into the field
        name (only ``A-Za-z0-9_.:-`` stay), so ``|``, ``=`` and spaces keep their meaning.
Rule 3 (Redis Cluster): the four keys live in the slot of the stream they count: each bucket
        has its own four under the bucket's tag, ``count_keys`` returns them all (in bucket
        order), ``read_counts`` sums over every set (one pipeline per set), and the write
        script only ever touches the set of the stream it writes to.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from typing import Protocol
from urllib.parse import quote, unquote

from relay.store.audit_legend import TrackerFacts, tracked_without_consent
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.time_limits import time_limit

DAY_MS = 86_400_000
EPOCH_DAY = date(1970, 1, 1)
HMGET_BATCH = 5000  # fields per HMGET: bounded work per Redis command

RECORDS = "n"
TRACKERS = "t"
WITHOUT_CONSENT = "nc"
WITHOUT_CONSENT_RECORDS = "ncr"
DIMENSIONS = {"category": "c", "purpose": "p", "action": "a", "basis": "b", "rule": "r"}


class CountedRecord(Protocol):
    """What a tally reads (``audit_record.DecisionRecord`` fits; ``controller`` is optional)."""

    @property
    def category(self) -> str: ...
    @property
    def trackers(self) -> Sequence[TrackerFacts]: ...


@dataclass(frozen=True, slots=True)
class CountKeys:
    counts: str
    dims: str
    days: str
    without_consent: str


@functools.cache
def count_keys(keys: Keys) -> list[CountKeys]:
    """Every set of count keys to read (Rule 3: one per audit bucket, in bucket order); the
    same list for the same ``Keys`` (built once: a write needs one of them)."""
    return [
        CountKeys(
            keys.audit_counts(bucket),
            keys.audit_count_dims(bucket),
            keys.audit_count_days(bucket),
            keys.audit_without_consent(bucket),
        )
        for bucket in keys.audit_buckets()
    ]


@functools.lru_cache(maxsize=4096)
def _q(value: str) -> str:
    """Rule 2 (cached: the same few hundred values repeat in every record)."""
    return quote(value, safe="_.:-")


def controller_of(record: object) -> str:
    """The record's controller id; "" for the implicit single controller (or older records)."""
    value = getattr(record, "controller", "")
    return value if isinstance(value, str) else ""


def sender_domain(header_from: str, mail_from: str = "") -> str:
    """The domain of the From header's address (the envelope sender's when it has none)."""
    for text in (header_from, mail_from):
        _name, address = parseaddr(text)
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if domain:
            return domain
    return ""


def day_number(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment.astimezone(UTC).date() - EPOCH_DAY).days


def day_of_number(number: int) -> date:
    return EPOCH_DAY + timedelta(days=number)


def has_untracked(record: CountedRecord) -> bool:
    return any(tracked_without_consent(t) for t in record.trackers)


def tally(record: CountedRecord) -> dict[str, int]:
    """The dimensions one record adds to its day (Rule 2 for the field names)."""
    ctl = _q(controller_of(record)) + "|"
    out: dict[str, int] = {ctl + RECORDS: 1, f"{ctl}c:{_q(record.category)}": 1}
    untracked = 0
    for t in record.trackers:
        for name in (
            TRACKERS,
            f"p:{_q(t.purpose)}",
            f"a:{_q(t.action)}",
            f"b:{_q(t.basis)}",
            f"r:{_q(t.rule)}",
        ):
            out[ctl + name] = out.get(ctl + name, 0) + 1
        untracked += tracked_without_consent(t)
    if untracked:
        out[ctl + WITHOUT_CONSENT] = untracked
        out[ctl + WITHOUT_CONSENT_RECORDS] = 1
    return out


def encode_tally(counts: Mapping[str, int]) -> str:
    """The write script's argument: ``field=n`` pairs separated by spaces."""
    return " ".join(f"{name}={n}" for name, n in sorted(counts.items()))


@dataclass(frozen=True)
class Counts:
    """Counts of the days ``first..last`` (inclusive), summed over the controllers asked for."""

    first_day: int
    last_day: int
    # day number -> dimension ("n", "c:marketing", ...) -> count
    by_day: Mapping[int, Mapping[str, int]]
    controllers: tuple[str, ...] = ()  # every controller seen (whatever was asked for)
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # dimension -> values

    @property
    def days(self) -> list[date]:
        return [day_of_number(d) for d in range(self.first_day, self.last_day + 1)]

    def day(self, number: int, name: str) -> int:
        return self.by_day.get(number, {}).get(name, 0)

    def total(self, name: str) -> int:
        return sum(day.get(name, 0) for day in self.by_day.values())

    def series(self, dimension: str) -> dict[str, list[int]]:
        """value -> counts per day, for one of ``DIMENSIONS`` (values in a stable order)."""
        code = DIMENSIONS[dimension]
        days = range(self.first_day, self.last_day + 1)
        return {v: [self.day(d, f"{code}:{v}") for d in days] for v in self.values.get(code, ())}


def _split_dim(member: str) -> tuple[str, str]:
    ctl, _, name = member.partition("|")
    return unquote(ctl), name


async def read_counts(
    client: AsyncRedis,
    key_sets: Sequence[CountKeys],
    first_day: int,
    last_day: int,
    controller: str | None = None,
    *,
    timeout: float = 2.0,
) -> Counts:
    """Sum the counts of ``first_day..last_day`` over every key set (Rule 3); ``controller``
    None means every controller, "" the implicit one."""
    if last_day < first_day:
        raise ValueError("the last day is before the first day")
    by_day: dict[int, dict[str, int]] = {}
    controllers: set[str] = set()
    values: dict[str, set[str]] = {}
    with time_limit(timeout):
        # Two pipelined rounds whatever the number of sets (one per audit bucket): the
        # dimensions of every set, then every set's fields of those days.
        pipe = client.pipeline(transaction=False)
        for ks in key_sets:
            pipe.smembers(ks.dims)
        wanted_by_set: list[list[tuple[str, str]]] = []
        for found in await pipe.execute():
            members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in found)
            wanted: list[tuple[str, str]] = []
            for member in members:
                ctl, name = _split_dim(member)
                controllers.add(ctl)
                if controller is not None and ctl != controller:
                    continue
                wanted.append((member, unquote(name)))
                code, sep, value = unquote(name).partition(":")
                if sep:
                    values.setdefault(code, set()).add(value)
            wanted_by_set.append(wanted)
        await _add_days(client, key_sets, wanted_by_set, first_day, last_day, by_day)
    ordered = {code: tuple(sorted(found)) for code, found in values.items()}
    return Counts(first_day, last_day, by_day, tuple(sorted(controllers)), ordered)


async def _add_days(
    client: AsyncRedis,
    key_sets: Sequence[CountKeys],
    wanted_by_set: Sequence[Sequence[tuple[str, str]]],
    first_day: int,
    last_day: int,
    by_day: dict[int, dict[str, int]],
) -> None:
    days = range(first_day, last_day + 1)
    pipe = client.pipeline(transaction=False)
    asked: list[list[tuple[int, str]]] = []
    for ks, wanted in zip(key_sets, wanted_by_set, strict=True):
        cells = [(d, member, name) for d in days for member, name in wanted]
        for start in range(0, len(cells), HMGET_BATCH):
            batch = cells[start : start + HMGET_BATCH]
            pipe.hmget(ks.counts, [f"{d}|{member}" for d, member, _name in batch])
            asked.append([(d, name) for d, _member, name in batch])
    if not asked:
        return
    for cells_asked, replies in zip(asked, await pipe.execute(), strict=True):
        for (d, name), raw in zip(cells_asked, replies, strict=True):
            if raw is None:
                continue
            n = int(raw)
            if n:
                day = by_day.setdefault(d, {})
                day[name] = day.get(name, 0) + n


__all__ = [
    "DAY_MS",
    "DIMENSIONS",
    "RECORDS",
    "TRACKERS",
    "WITHOUT_CONSENT",
    "WITHOUT_CONSENT_RECORDS",
    "CountKeys",
    "Counts",
    "controller_of",
    "count_keys",
    "day_number",
    "day_of_number",
    "encode_tally",
    "has_untracked",
    "read_counts",
    "sender_domain",
    "tally",
]
