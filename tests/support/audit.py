"""Shared makers for the audit tests: decision records and an audit log on a real Valkey."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from relay.core.recipients import recipient_key
from relay.store.audit import AuditLog
from relay.store.audit_record import DecisionRecord, TrackerRecord, record_id
from relay.store.audit_scan import order
from relay.store.fanout import scan_keys
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys

ADDRESS_KEY = b"test-address-key"
TEST_KEYS = Keys("t:")  # the prefix of new_log
T0 = datetime(2026, 5, 4, 9, 30, 0, 123456, tzinfo=UTC)


def tracker(n: int, action: str = "neutralise", basis: str = "none") -> TrackerRecord:
    return TrackerRecord(
        url=f"https://t.example.net/open/{n}.gif?u=abc&m={n}",
        element="img",
        rule="sendgrid-open",
        vendor="SendGrid",
        purpose="campaign_performance",
        basis=basis,
        action=action,
        policy_rule="no-consent",
        consent_event_ids=("ev-1",) if basis == "consent" else (),
    )


def make_record(
    n: int,
    *,
    message_id: str = "<m1@example.org>",
    rcpt: str = "alice@example.org",
    trackers: int = 2,
    relay_id: str = "r1",
) -> DecisionRecord:
    received = T0 + timedelta(seconds=n)
    made = tuple(
        tracker(i, "gateway", "consent") if i == 0 else tracker(i) for i in range(trackers)
    )
    return DecisionRecord(
        record_id=record_id(relay_id, received, message_id, n, rcpt),
        message_id=message_id,
        relay_id=relay_id,
        mail_from="news@shop.example",
        header_from="Shop <news@shop.example>",
        rcpt=rcpt,
        recipient_key=recipient_key(rcpt, ADDRESS_KEY),
        category="newsletter",
        category_reason="header:list-id",
        pack="fr-cnil-2026",
        trackers=made,
        consent_event_ids=("ev-1",) if trackers else (),
        footer_injected=trackers > 0,
        upstream_reply="250 2.0.0 ok, queued as ABC",
        relay_version="0.1.0",
        rules_digest="sha256:0123abcd",
        received_at=received,
        decided_at=received + timedelta(milliseconds=7),
    )


def message(index: int, rcpts: int = 2) -> list[DecisionRecord]:
    """The records of one message sent to ``rcpts`` recipients."""
    return [
        make_record(
            index * 10 + j,
            message_id=f"<msg{index}.x@shop.example>",
            rcpt=f"user{j}@example.org",
            relay_id=f"relay{index}",
        )
        for j in range(rcpts)
    ]


def new_log(client: AsyncRedis, journal: Path, *, timeout: float = 2.0) -> AuditLog:
    return AuditLog(
        client,
        Keys("t:"),
        journal,
        timeout=timeout,
        retention_days=30,
        address_key=ADDRESS_KEY,
    )


async def stream_times(client: AsyncRedis, keys: Keys = TEST_KEYS) -> list[int]:
    """The millisecond part of every stream id of every bucket, in the log's order."""
    found: list[tuple[int, int, int]] = []
    for bucket in keys.audit_buckets():
        raw: Any = await client.xrange(keys.audit_stream(bucket))
        found.extend(order(bucket, bytes(sid).decode()) for sid, _fields in raw)
    return [ms for ms, _seq, _bucket in sorted(found)]


async def log_length(client: AsyncRedis, keys: Keys = TEST_KEYS) -> int:
    """Entries in the whole log (every bucket's stream)."""
    pipe = client.pipeline(transaction=False)
    for bucket in keys.audit_buckets():
        pipe.xlen(keys.audit_stream(bucket))
    return sum(int(n) for n in await pipe.execute())


async def rcpt_index_size(client: AsyncRedis, rkey: str, keys: Keys = TEST_KEYS) -> int:
    """Members of the recipient's index, over every bucket."""
    pipe = client.pipeline(transaction=False)
    for bucket in keys.audit_buckets():
        pipe.zcard(keys.audit_by_rcpt(bucket, rkey))
    return sum(int(n) for n in await pipe.execute())


async def key_names(client: AsyncRedis, pattern: str = "t:*") -> list[str]:
    """Every key matching ``pattern``, of every master on a cluster."""
    return sorted(await scan_keys(client, pattern))
