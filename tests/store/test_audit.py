"""Decision records and the audit log on a real Valkey: write, show, search, export, retention."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from relay.core.filtering import FilterResult
from relay.model import (
    Action,
    Basis,
    Candidate,
    Category,
    Decision,
    ElementKind,
    Envelope,
    Purpose,
    RecipientPlan,
    Span,
)
from relay.store.audit import AuditLog, message_key
from relay.store.audit_codec import CSV_COLUMNS, FORMAT, decode, encode
from relay.store.audit_record import build_records, record_from_json
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from tests.support.audit import (
    T0,
    key_names,
    log_length,
    make_record,
    message,
    new_log,
    rcpt_index_size,
    stream_times,
)
from tests.support.redis import async_client, sync_client


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    conn = async_client(redis_url, 2.0)
    yield conn
    await conn.aclose()


@pytest.fixture
def audit(client: AsyncRedis, tmp_path: Path) -> AuditLog:
    return new_log(client, tmp_path / "journal" / "audit.jsonl")


# ---------------------------------------------------------------------------------------------
# Building and encoding records (pure)


def _candidate(n: int, purpose: Purpose) -> Candidate:
    return Candidate(
        id=n,
        part_index=1,
        url=f"https://px.example.net/o/{n}.gif",
        element=ElementKind.IMG,
        element_text="<img ...>",
        rule=f"rule-{n}",
        vendor="Vendor",
        purpose=purpose,
        no_consent_action=Action.NEUTRALISE,
        identifying_params=(),
        url_span=Span(0, 1),
        removal_span=Span(0, 1),
    )


def _plans() -> tuple[RecipientPlan, ...]:
    granted = Decision(0, Action.GATEWAY, Basis.CONSENT, "consent-gateway", ("ev-a", "ev-b"))
    refused = Decision(1, Action.NEUTRALISE, Basis.NONE, "no-consent")
    minimised = Decision(1, Action.MINIMISE, Basis.EXEMPT, "deliverability", ("ev-b",))
    return (
        RecipientPlan("a@example.org", "k" * 32, (granted, refused), True, True),
        RecipientPlan("b@example.org", "j" * 32, (minimised,), False, True),
    )


def _result(packs: dict[str, str] | None = None, digest: str = "sha256:abc") -> FilterResult:
    return FilterResult(
        message_id="<m@shop.example>",
        from_header="Shop <news@shop.example>",
        category=Category.NEWSLETTER,
        category_reason="header:list-id",
        candidates=(
            _candidate(0, Purpose.CAMPAIGN_PERFORMANCE),
            _candidate(1, Purpose.DELIVERABILITY),
        ),
        links=(),
        plans=_plans(),
        packs=packs or {"a@example.org": "fr-cnil-2026", "b@example.org": "fr-cnil-2026"},
        groups=(),
        reask_blocked={},
        defects=(),
        locked=False,
        rules_digest=digest,
    )


ENVELOPE = Envelope("bounce@shop.example", ("a@example.org", "b@example.org"))
REPLIES = {"a@example.org": "250 2.0.0 ok", "b@example.org": "550 5.1.1 no such user"}


def test_build_records_from_a_filter_result() -> None:
    records = build_records(_result(), ENVELOPE, REPLIES, relay_id="rid1", received_at=T0)
    a, b = records
    assert (a.rcpt, a.recipient_key, a.upstream_reply) == (
        "a@example.org",
        "k" * 32,
        "250 2.0.0 ok",
    )
    assert b.upstream_reply.startswith("550")
    assert a.header_from == "Shop <news@shop.example>" and a.mail_from == "bounce@shop.example"
    assert [(t.action, t.basis, t.purpose) for t in a.trackers] == [
        ("gateway", "consent", "campaign_performance"),
        ("neutralise", "none", "deliverability"),
    ]
    assert a.consent_event_ids == ("ev-a", "ev-b") and b.consent_event_ids == ("ev-b",)
    assert a.footer_injected and not b.footer_injected
    assert (a.pack, a.rules_digest, a.decided_at) == ("fr-cnil-2026", "sha256:abc", T0)
    assert a.record_id != b.record_id and len(a.record_id) == 32
    # Pure: the same input gives the same records, ids included.
    again = build_records(_result(), ENVELOPE, REPLIES, relay_id="rid1", received_at=T0)
    assert again == records


def test_build_records_takes_pack_per_recipient_and_decision_time() -> None:
    result = _result({"a@example.org": "strict", "b@example.org": "fr-cnil-2026"}, "sha256:def")
    later = T0 + timedelta(seconds=1)
    a, b = build_records(result, ENVELOPE, REPLIES, relay_id="r", received_at=T0, decided_at=later)
    assert (a.pack, b.pack) == ("strict", "fr-cnil-2026")
    assert (a.category, a.rules_digest, a.decided_at) == ("newsletter", "sha256:def", later)


def test_json_shape_and_round_trips() -> None:
    record = make_record(3)
    data = record.to_json()
    # SPEC section 3: the shape of `relay check --json` per recipient.
    for name in ("message_id", "rcpt", "category", "category_reason", "footer_injected"):
        assert name in data
    trackers = data["trackers"]
    assert isinstance(trackers, list)
    assert {"url", "element", "rule", "purpose", "basis", "action"} <= set(trackers[0])
    assert data["decided_at"] == "2026-05-04T09:30:03.130456Z"
    assert record_from_json(json.loads(json.dumps(data))) == record
    assert decode(encode(record)) == record
    assert decode(encode(make_record(4, trackers=0))) == make_record(4, trackers=0)
    # The stored form is much smaller than the auditors' JSON (positions, preset dictionary).
    assert len(encode(record)) < len(json.dumps(data)) * 0.5
    assert encode(record).startswith(record.record_id.encode() + b":")


def test_bad_records_are_refused() -> None:
    data = make_record(1).to_json()
    with pytest.raises(ValueError):
        record_from_json({**data, "footer_injected": "yes"})
    with pytest.raises(ValueError):
        record_from_json({**data, "trackers": [{"url": 3}]})
    stored = encode(make_record(1))
    for damaged in (b"[1,2]", stored.replace(b":" + FORMAT, b":9", 1), stored[:-5], b"abc:2xyz"):
        with pytest.raises(ValueError):
            decode(damaged)


# ---------------------------------------------------------------------------------------------
# Store and queries


async def test_write_show_search_round_trip(audit: AuditLog) -> None:
    first, second = message(1), message(2, rcpts=3)
    await audit.write(first)
    await audit.write(second)
    assert await audit.by_message("<msg1.x@shop.example>") == first
    # The id is found with or without angle brackets and surrounding blanks.
    assert await audit.by_message(" msg2.x@shop.example ") == second
    assert await audit.by_message("<unknown@x>") == []
    # user0 and user1 received both messages; user2 only the second.
    by_address = await audit.search("user1@example.org", None, None, 100)
    assert by_address == [first[1], second[1]]
    by_key = await audit.search(second[2].recipient_key, None, None, 100)
    assert by_key == [second[2]]
    assert await audit.search("USER1@Example.org", None, None, 1) == [first[1]]
    everything = await audit.search(None, None, None, 100)
    assert everything == first + second
    assert not audit.journal.path.exists()  # nothing went to the journal


async def test_search_by_time_is_half_open(audit: AuditLog, client: aioredis.Redis) -> None:
    await audit.write(message(1))
    await asyncio.sleep(0.01)
    await audit.write(message(2))
    boundary = datetime.fromtimestamp((await stream_times(client))[2] / 1000, UTC)
    before = await audit.search(None, None, boundary, 100)
    after = await audit.search(None, boundary, None, 100)
    assert before == message(1) and after == message(2)
    assert await audit.search("user0@example.org", boundary, None, 100) == [message(2)[0]]
    assert await audit.search("user0@example.org", None, boundary, 100) == [message(1)[0]]


async def test_writing_the_same_records_twice_stores_them_once(
    audit: AuditLog, client: aioredis.Redis
) -> None:
    records = message(1, rcpts=3)
    await audit.write(records)
    await audit.write(records)
    await audit.write(records[1:] + message(2))
    assert await log_length(client) == 5
    assert await audit.by_message("<msg1.x@shop.example>") == records


async def test_keys_carry_no_address(audit: AuditLog, client: aioredis.Redis) -> None:
    await audit.write(message(1))
    keys = await key_names(client)
    assert all("@" not in k for k in keys)
    assert Keys("t:").audit_by_message(message_key("<msg1.x@shop.example>")) in keys


async def _export(audit: AuditLog, fmt: str, since: datetime, until: datetime) -> str:
    out = io.StringIO(newline="")
    count = await audit.export(since, until, fmt, out, progress=False)
    assert count >= 0
    return out.getvalue()


async def test_export_jsonl_round_trip_and_reproducible(audit: AuditLog) -> None:
    written = [r for i in range(1, 4) for r in message(i)]
    for i in range(1, 4):  # one message after the other: the log's order is the time stored
        await audit.write(message(i))
    since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    # More records than one XRANGE page: paging must neither skip nor repeat.
    import relay.store.audit

    old_page, relay.store.audit.MERGE_PAGE = relay.store.audit.MERGE_PAGE, 1
    try:
        text = await _export(audit, "jsonl", since, until)
    finally:
        relay.store.audit.MERGE_PAGE = old_page
    lines = text.splitlines()
    assert [record_from_json(json.loads(line)) for line in lines] == written
    for line in lines:
        canonical = json.dumps(
            json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        assert line == canonical
    assert await _export(audit, "jsonl", since, until) == text
    # A range before the records: empty.
    assert await _export(audit, "jsonl", since - timedelta(days=1), since) == ""


async def test_export_csv_fixed_columns_and_reproducible(audit: AuditLog) -> None:
    records = [*message(1), make_record(99, message_id="<m9@x>", rcpt="z@x.org", trackers=0)]
    await audit.write(records)
    since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    text = await _export(audit, "csv", since, until)
    assert text == await _export(audit, "csv", since, until)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    # Two trackers for each of the two recipients of message 1, one row for the tracker-less.
    assert len(rows) == 1 + 2 + 2 + 1
    by_name = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    # A record's rows are consecutive, its trackers in order; records of different messages
    # are ordered by the time they were stored (their buckets may be on different masters).
    first = [r for r in by_name if r["rcpt"] == "user0@example.org"]
    assert by_name.index(first[1]) == by_name.index(first[0]) + 1
    assert first[0]["tracker_action"] == "gateway" and first[0]["tracker_basis"] == "consent"
    assert first[1]["tracker_action"] == "neutralise" and first[1]["tracker_basis"] == "none"
    (bare,) = [r for r in by_name if r["rcpt"] == "z@x.org"]
    assert bare["tracker_url"] == ""
    with pytest.raises(Exception, match="format"):
        await _export(audit, "xml", since, until)


async def test_retention_trims_records_and_indexes(audit: AuditLog, client: aioredis.Redis) -> None:
    await audit.write(message(1))
    await asyncio.sleep(0.01)
    await audit.write(message(2))
    cut_ms = (await stream_times(client))[2]
    now = datetime.fromtimestamp(cut_ms / 1000, UTC) + timedelta(days=audit.retention_days)
    assert await audit.trim(now) == 2
    assert await log_length(client) == 2
    assert await audit.by_message("<msg1.x@shop.example>") == []
    assert await audit.by_message("<msg2.x@shop.example>") == message(2)
    assert await audit.search("user0@example.org", None, None, 10) == [message(2)[0]]
    # The index entries are gone, not only unreachable.
    assert not await client.exists(
        Keys("t:").audit_by_message(message_key("<msg1.x@shop.example>"))
    )
    assert await rcpt_index_size(client, message(1)[0].recipient_key) == 1
    assert await audit.trim(now) == 0
    assert await audit.trim(now + timedelta(days=1)) == 2
    # What remains: the empty streams and the lists of dimensions ever counted, per bucket.
    keys = Keys("t:")
    allowed = {keys.audit_stream(b) for b in keys.audit_buckets()}
    allowed |= {keys.audit_count_dims(b) for b in keys.audit_buckets()}
    assert set(await key_names(client)) <= allowed
    assert await log_length(client) == 0


async def test_prefix_isolates_logs(client: aioredis.Redis, tmp_path: Path) -> None:
    one = AuditLog(client, Keys("a:"), tmp_path / "j1", timeout=2.0, retention_days=1)
    two = AuditLog(client, Keys("b:"), tmp_path / "j2", timeout=2.0, retention_days=1)
    await one.write(message(1))
    assert await two.by_message("<msg1.x@shop.example>") == []
    with pytest.raises(Exception, match="address_key"):
        await two.search("user0@example.org", None, None, 1)


async def test_a_write_costs_the_same_when_many_messages_share_one_message_id(
    audit: AuditLog, client: AsyncRedis, redis_url: str
) -> None:
    """Messages without a Message-ID (or with a constant one) share one message index. The
    write used to re-read that whole index and every entry in it, so each record cost more
    than the last; now a write reads nothing that grows with the log (audit_script Rule 2)."""
    stats = sync_client(redis_url)
    nodes: dict[str, str] = {}
    if isinstance(stats, RedisCluster):  # statistics are per node: ask them all
        nodes = {"target_nodes": RedisCluster.ALL_NODES}
    stats.config_resetstat(**nodes)
    for n in range(150):
        await audit.write([make_record(n, message_id="", rcpt=f"r{n}@example.org")])
    calls = json.dumps(stats.info("commandstats", **nodes))
    stats.close()
    assert "cmdstat_xrange" not in calls and "cmdstat_lrange" not in calls
    assert "cmdstat_evalsha" in calls or "cmdstat_eval" in calls  # the stats were read
    # ... and the records are all there, in the order they were stored, each once.
    again = make_record(7, message_id="", rcpt="r7@example.org")
    await audit.write([again])  # a retried write of one of them
    found = await audit.by_message("")
    assert [r.rcpt for r in found] == [f"r{n}@example.org" for n in range(150)]
