"""Decision records name the controller; records stored before that field read back."""

from __future__ import annotations

import dataclasses
import json
import zlib

from relay.core.controllers import Controller
from relay.store import audit_codec
from relay.store.audit_codec import CSV_COLUMNS, csv_rows, decode, encode
from relay.store.audit_record import build_records, record_from_json
from tests.store.test_audit import ENVELOPE, REPLIES, _result
from tests.support.audit import T0


def test_records_carry_the_controller_in_json_storage_and_csv() -> None:
    result = dataclasses.replace(_result(), controller=Controller("shop", "Shop SAS"))
    record = build_records(result, ENVELOPE, REPLIES, relay_id="r1", received_at=T0)[0]
    assert record.to_json()["controller"] == "shop"
    assert record_from_json(json.loads(json.dumps(record.to_json()))) == record
    assert decode(encode(record)) == record
    assert CSV_COLUMNS[-1] == "controller"
    assert all(row[-1] == "shop" and len(row) == len(CSV_COLUMNS) for row in csv_rows(record))
    none = build_records(_result(), ENVELOPE, REPLIES, relay_id="r1", received_at=T0)[0]
    assert none.controller == "" and decode(encode(none)).controller == ""


def test_a_record_stored_in_format_2_reads_back_without_controller() -> None:
    record = build_records(_result(), ENVELOPE, REPLIES, relay_id="r1", received_at=T0)[1]
    record = dataclasses.replace(record, controller="shop")
    # The bytes format 2 wrote: the same positional row without the controller.
    received = audit_codec._micros(record.received_at)
    row: list[object] = [getattr(record, n) for n in audit_codec._SCALARS_V2]
    trackers = [
        [*audit_codec._tracker_values(t), list(t.consent_event_ids)] for t in record.trackers
    ]
    row += [int(record.footer_injected), received, 0, list(record.consent_event_ids), trackers]
    packer = zlib.compressobj(
        6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, audit_codec._DICTIONARIES[b"2"]
    )
    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()
    stored = record.record_id.encode() + b":2" + packer.compress(text) + packer.flush()
    old = decode(stored)
    assert old.controller == "" and old.rcpt == record.rcpt and old.trackers == record.trackers
    # And the JSON of an old export (no "controller" key) reads back too.
    data = record.to_json()
    del data["controller"]
    assert record_from_json(data).controller == ""
