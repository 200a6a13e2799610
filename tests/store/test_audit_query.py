"""The auditors' queries on a real Valkey: filters, bounded pages whose cursors visit every match
exactly once, the "tracked without consent" index in time order (audit_query Rules 1-3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.store.audit import AuditLog, message_key
from relay.store.audit_query import AuditReader, Filters
from relay.store.audit_record import DecisionRecord
from tests.support.audit import make_record, tracker
from tests.support.redis import async_client


@pytest.fixture
async def reader(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[AuditLog, AuditReader]]:
    from tests.support.audit import new_log

    conn = async_client(redis_url, 2.0)
    log = new_log(conn, tmp_path / "journal")
    yield log, AuditReader(log)
    await conn.aclose()


def varied(n: int) -> DecisionRecord:
    """Record n: every third kept on the legacy basis, senders on two domains."""
    record = make_record(n, message_id=f"<q{n}@x>", rcpt=f"u{n}@example.org")
    sender = "News <news@mail.shop.example>" if n % 2 else "Other <a@other.example>"
    record = replace(
        record, header_from=sender, category="marketing" if n % 5 == 0 else "newsletter"
    )
    if n % 3 == 0:
        kept = replace(tracker(7, "keep", "legacy"), rule="legacy-rule")
        record = replace(record, trackers=(*record.trackers, kept))
    return record


WIDE = (datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1))


async def _all_pages(
    reader: AuditReader, f: Filters, limit: int, budget: int, nc: bool
) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _page in range(200):
        if nc:
            page = await reader.without_consent(*WIDE, f, cursor, limit, budget)
        else:
            page = await reader.records(*WIDE, f, cursor, limit, budget)
        assert len(page.records) <= limit and page.scanned <= budget
        seen += [r.record_id for r in page.records]
        if page.cursor is None:
            return seen
        cursor = page.cursor
    raise AssertionError("paging did not end")


async def test_pages_visit_every_match_once(reader: tuple[AuditLog, AuditReader]) -> None:
    log, query = reader
    records = [varied(n) for n in range(40)]
    # Batches of several records land in one millisecond: equal scores in the index.
    for start in range(0, 40, 8):
        await log.write(records[start : start + 8])
    # The log's order (stored time; records of one millisecond in different buckets, maybe on
    # different masters, in the merge's fixed order): paging must give exactly it.
    logged = [r.record_id for r in await log.search(None, None, None, 1000)]
    assert sorted(logged) == sorted(r.record_id for r in records)
    everything = logged
    order = {rid: i for i, rid in enumerate(logged)}
    assert await _all_pages(query, Filters(), 7, 10, nc=False) == everything
    legacy = [r.record_id for r in records if any(t.basis == "legacy" for t in r.trackers)]
    legacy.sort(key=order.__getitem__)
    assert await _all_pages(query, Filters(basis="legacy"), 3, 5, nc=False) == legacy
    # The index is in time order to the millisecond (records stored in one millisecond come in
    # the order of their stream ids as text): each once, none missed.
    from_index = await _all_pages(query, Filters(), 2, 3, nc=True)
    assert sorted(from_index) == sorted(legacy) and len(from_index) == len(legacy)
    assert await _all_pages(query, Filters(without_consent=True), 50, 5000, nc=False) == legacy
    # The sender domain matches its subdomains; other filters combine.
    shop = sorted((r.record_id for r in records if "shop" in r.header_from), key=order.__getitem__)
    assert await _all_pages(query, Filters(sender_domain="shop.example"), 4, 9, nc=False) == shop
    marketing_legacy = sorted(
        (
            r.record_id
            for r in records
            if r.category == "marketing" and any(t.basis == "legacy" for t in r.trackers)
        ),
        key=order.__getitem__,
    )
    both = Filters(category="marketing", rule="legacy-rule")
    assert await _all_pages(query, both, 50, 5000, nc=False) == marketing_legacy
    assert await _all_pages(query, Filters(controller="other"), 50, 5000, nc=False) == []
    assert await _all_pages(query, Filters(controller=""), 5, 50, nc=True) == from_index


async def test_a_rare_match_costs_bounded_pages(reader: tuple[AuditLog, AuditReader]) -> None:
    log, query = reader
    await log.write([varied(n) for n in range(1, 60) if n % 3])
    page = await query.records(*WIDE, Filters(basis="legacy"), None, 10, budget=15)
    # Nothing matches, but the page stops at its budget and offers to go on.
    assert page.records == [] and page.scanned == 15 and page.cursor is not None
    with pytest.raises(ValueError, match="cursor"):
        await query.without_consent(*WIDE, Filters(), "not-a-cursor", 10)


async def test_message_and_recipient_lookups(reader: tuple[AuditLog, AuditReader]) -> None:
    log, query = reader
    records = [varied(n) for n in range(3)]
    await log.write(records)
    assert await query.message(message_key("<q1@x>")) == [records[1]]
    assert await query.message("zz" * 8) == [] and await query.message("abc") == []
    assert await query.recipient(records[2].recipient_key, None, None, 10) == [records[2]]
    assert await query.recipient("not-a-key", None, None, 10) == []
