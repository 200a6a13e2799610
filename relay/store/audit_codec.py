"""Encodings of a decision record: the compact form stored in Redis, and the CSV export rows.

Stage: audit (pure helper). Input: ``DecisionRecord``. Output: bytes for a stream entry, rows of
``CSV_COLUMNS``; and back.

Rule 1: the stored form is ``<record id in hex>:<format version><raw DEFLATE of a positional
        JSON array>``. Positions instead of field names, and DEFLATE with a preset dictionary of
        the words every record repeats (purposes, actions, bases, categories, JSON punctuation),
        make a record about 2.4 times smaller than its JSON (``bench/audit_bench.py``), and
        Redis keeps every record in memory. The plain hex record id in front lets the write
        script recognise a stored record without inflating it.
Rule 2: a format version names its field order and its dictionary for ever: never edit
        ``_DICTIONARIES[b"2"]``; add a version instead. Decoding refuses a version it does not
        know rather than guessing.
Rule 3: CSV columns are fixed and appended to only: one row per (record, tracker), and one row
        with empty tracker columns for a record without tracker.
Rule 4: format "3" is format "2" (same dictionary) with the controller as its last scalar;
        records stored as "2" read back with no controller.
Rule 5: the compressor's memory level is 4, not zlib's 9: level 9 makes each compressor
        allocate and clear about 300 KB of hash tables, 69 us per record against 5.5 us, for a
        record of a few hundred bytes that compresses to the same size either way. The memory
        level is the compressor's alone: the stream and its reading do not change.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta

from relay.store.audit_record import (
    TRACKER_FIELDS,
    DecisionRecord,
    TrackerRecord,
    iso,
    make_tracker,
)

FORMAT = b"3"

# Rule 2: frozen. DEFLATE finds the words nearest the end of the dictionary most cheaply, so the
# most frequent come last.
_DICTIONARIES: dict[bytes, bytes] = {
    b"2": "\x1f".join(
        [
            "public_service", "consent_request", "authentication", "cross_context_profiling",
            "fraud_detection", "authentication_security", "img_srcset", "source_srcset",
            "background", "style_attr", "style_block", "amp_img", "input_image", "vml", "other",
            "strip_params", "remove", "keep", "legacy", "exempt", "transactional", "marketing",
            "newsletter", "header:list-id", "rule:", "default", "signed-unmodified",
            "550 5.1.1 ", "451 4.3.0 ", "@gmail.com", "@outlook.com", "@example.org",
            "<", ">", "http://", ".gif", ".png", "open", "track", "pixel", "?u=", "&m=",
            "fr-cnil-2026", "strict", "sha256:", "250 2.0.0 Ok: queued as ", "250 2.0.0 ok",
            "minimise", "deliverability", "gateway", "consent", "neutralise", "none",
            "campaign_performance", "https://", '"img"', '",[]],["', '"],["', '",["', '","',
        ]
    ).encode(),
}  # fmt: skip
_DICTIONARIES[b"3"] = _DICTIONARIES[b"2"]  # Rule 4: same words, one more field

_SCALARS_V2 = (
    "message_id",
    "relay_id",
    "mail_from",
    "header_from",
    "rcpt",
    "recipient_key",
    "category",
    "category_reason",
    "pack",
    "upstream_reply",
    "relay_version",
    "rules_digest",
)
_SCALARS = (*_SCALARS_V2, "controller")
_SCALARS_BY_FORMAT = {b"2": _SCALARS_V2, b"3": _SCALARS}

# Fixed CSV columns (Rule 3). Changing this list changes every export: append only.
CSV_COLUMNS: tuple[str, ...] = (
    "record_id",
    "message_id",
    "relay_id",
    "received_at",
    "decided_at",
    "mail_from",
    "header_from",
    "rcpt",
    "recipient_key",
    "category",
    "category_reason",
    "pack",
    "rules_digest",
    "relay_version",
    "footer_injected",
    "upstream_reply",
    "consent_event_ids",
    "tracker_index",
    "tracker_url",
    "tracker_element",
    "tracker_rule",
    "tracker_vendor",
    "tracker_purpose",
    "tracker_basis",
    "tracker_action",
    "tracker_policy_rule",
    "tracker_consent_event_ids",
    "controller",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MEMORY_LEVEL = 4  # Rule 5


def _micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: object) -> datetime:
    if not isinstance(value, int):
        raise ValueError(f"stored timestamp must be an integer, not {value!r}")
    return _EPOCH + timedelta(microseconds=value)


def _tracker_values(tracker: TrackerRecord) -> list[str]:
    return [getattr(tracker, name) for name in TRACKER_FIELDS]


def encode(record: DecisionRecord) -> bytes:
    """The stored form (Rule 1)."""
    received = _micros(record.received_at)
    row: list[object] = [getattr(record, name) for name in _SCALARS]
    row += [
        1 if record.footer_injected else 0,
        received,
        _micros(record.decided_at) - received,  # a small number: decided shortly after
        list(record.consent_event_ids),
        [[*_tracker_values(t), list(t.consent_event_ids)] for t in record.trackers],
    ]
    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()
    packer = zlib.compressobj(
        6, zlib.DEFLATED, -15, _MEMORY_LEVEL, zlib.Z_DEFAULT_STRATEGY, _DICTIONARIES[FORMAT]
    )
    return record.record_id.encode("ascii") + b":" + FORMAT + packer.compress(text) + packer.flush()


def decode(stored: bytes) -> DecisionRecord:
    """The inverse of ``encode``; anything else raises ValueError."""
    rid, sep, rest = bytes(stored).partition(b":")
    dictionary = _DICTIONARIES.get(rest[:1])
    if not sep or dictionary is None or not rid or not rid.isalnum():
        raise ValueError("not a decision record of a known storage format")
    try:
        unpacker = zlib.decompressobj(-15, dictionary)
        row = json.loads(unpacker.decompress(rest[1:]) + unpacker.flush())
    except (zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged decision record {rid!r}: {exc}") from None
    names = _SCALARS_BY_FORMAT[rest[:1]]
    if not isinstance(row, list) or len(row) != len(names) + 5:
        raise ValueError(f"decision record {rid!r} with the wrong number of fields")
    scalars = row[: len(names)]
    if not all(isinstance(v, str) for v in scalars):
        raise ValueError(f"decision record {rid!r} with a wrong field")
    footer, received, decided, event_ids, trackers = row[len(names) :]
    return DecisionRecord(
        record_id=rid.decode("ascii"),
        trackers=tuple(make_tracker(t[:-1], tuple(t[-1])) for t in trackers),
        consent_event_ids=tuple(event_ids),
        footer_injected=bool(footer),
        received_at=_from_micros(received),
        decided_at=_from_micros(received + decided),
        **dict(zip(names, scalars, strict=True)),
    )


def csv_rows(record: DecisionRecord) -> list[list[str]]:
    """The record as rows of ``CSV_COLUMNS`` (one per tracker, at least one)."""
    head = [
        record.record_id,
        record.message_id,
        record.relay_id,
        iso(record.received_at),
        iso(record.decided_at),
        record.mail_from,
        record.header_from,
        record.rcpt,
        record.recipient_key,
        record.category,
        record.category_reason,
        record.pack,
        record.rules_digest,
        record.relay_version,
        "true" if record.footer_injected else "false",
        record.upstream_reply,
        " ".join(record.consent_event_ids),
    ]
    if not record.trackers:
        return [[*head, *[""] * (len(CSV_COLUMNS) - len(head) - 1), record.controller]]
    return [
        [*head, str(number), *_tracker_values(t), " ".join(t.consent_event_ids), record.controller]
        for number, t in enumerate(record.trackers)
    ]
