"""Pure parts of the consent store: API payload validation, canonical records, the chain check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.core.recipients import recipient_key
from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import ConsentSettings
from relay.store.consent_proof import (
    chain_record,
    fingerprint,
    parse_time,
    record_hash,
    validate_api_payload,
)
from relay.store.consent_state import derive, replay
from relay.store.consent_verify import check_chain

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "address": " <Bob@Example.org> ",
    "event": "granted",
    "purposes": ["campaign_performance", "fraud_detection", "campaign_performance"],
    "occurred_at": "2026-06-01T13:59:00+02:00",
    "actor": "recipient",
    "method": "checkbox",
    "source": {"form_id": "signup", "form_version": "7", "page": "https://shop.example/join"},
    "notice": {"id": "tracking", "version": "4", "language": "fr", "hash": "sha256:ab12"},
    "evidence": {"ip": "2001:db8::1", "user_agent": "Firefox/140", "token_id": ""},
}


def test_api_payload_accepted_and_normalised() -> None:
    event = validate_api_payload(GOOD, NOW)
    assert event.address == "bob@example.org"
    assert event.event is EventType.GRANTED
    assert event.purposes == (Purpose.CAMPAIGN_PERFORMANCE, Purpose.FRAUD_DETECTION)
    assert event.occurred_at == datetime(2026, 6, 1, 11, 59, tzinfo=UTC)
    assert event.evidence == {"ip": "2001:db8::1", "user_agent": "Firefox/140"}
    minimal = validate_api_payload(
        {"address": "c@example.org", "event": "refused", "purposes": ["deliverability"]}, NOW
    )
    assert minimal.occurred_at == NOW and minimal.actor == "api" and minimal.method == "api"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"address": None}, "address: missing"),
        ({"address": 42}, "address: must be a string, not int"),
        ({"address": "bob"}, "address: not an email address"),
        ({"event": "consented"}, "event: unknown event 'consented'"),
        ({"purposes": "campaign_performance"}, "purposes: must be a list of purpose ids"),
        ({"purposes": ["campaign_performance", "ads"]}, "purposes[1]: unknown purpose 'ads'"),
        ({"purposes": []}, "purposes: a 'granted' event needs at least one purpose"),
        ({"occurred_at": "2026-06-01T10:00:00"}, "occurred_at: needs a time zone"),
        ({"occurred_at": "June 1st"}, "occurred_at: not an ISO-8601 time"),
        ({"occurred_at": 1780000000}, "occurred_at: must be an ISO-8601 string"),
        ({"occurred_at": "2026-06-02T12:00:00Z"}, "occurred_at: 2026-06-02T12:00:00.000000Z is"),
        ({"actor": "admin"}, "actor: must be one of recipient, api, not 'admin'"),
        ({"method": "pigeon"}, "method: 'pigeon' is not one of"),
        ({"source": ["signup"]}, "source: must be an object of strings"),
        ({"source": {"form_id": 7}}, "source.form_id: must be a string, not int"),
        ({"source": {"Form Id": "x"}}, "source: bad key 'Form Id'"),
        ({"notice": {"wording": "..."}}, "notice: unknown key 'wording'"),
        ({"evidence": {"ip": "localhost"}}, "evidence.ip: not an IP address: 'localhost'"),
        ({"evidence": {"user_agent": "x" * 2001}}, "evidence.user_agent: longer than 2000"),
        ({"evidence": {"user_agent": "a\x00b"}}, "evidence.user_agent: contains a control"),
        ({"colour": "red"}, "colour: unknown field"),
    ],
)
def test_api_payload_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    payload = {**GOOD, **change}
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(ValueError) as caught:
        validate_api_payload(payload, NOW)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("event", ["granted", "informed"])
@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("method",), "method"),
        (("source",), "source"),
        (("notice",), "notice.version"),
        (("method", "source", "notice"), "method, source, notice.version"),
    ],
)
def test_api_proof_before_reliance_names_every_missing_field(
    event: str, drop: tuple[str, ...], named: str
) -> None:
    # Recommendation section 6: proof of each consent "as well as the conditions under which
    # that consent was obtained". The API's own default method ("api") is not proof.
    payload = {k: v for k, v in {**GOOD, "event": event}.items() if k not in drop}
    with pytest.raises(ValueError) as caught:
        validate_api_payload(payload, NOW)
    message = str(caught.value)
    article = "an" if event == "informed" else "a"
    first = named.split(", ", maxsplit=1)[0]
    assert message.startswith(f"{first}: missing: {article} {event!r} event needs")
    assert message.endswith(f"give {named}")


def test_api_proof_a_source_of_bookkeeping_only_is_no_source() -> None:
    payload = {**GOOD, "source": {"import_file": "x.csv", "import_line": "2"}}
    with pytest.raises(ValueError, match=r"^source: missing"):
        validate_api_payload(payload, NOW)
    blank = {**GOOD, "notice": {"id": "tracking", "version": " "}}
    with pytest.raises(ValueError, match=r"^notice\.version: missing"):
        validate_api_payload(blank, NOW)


def test_api_payload_not_an_object() -> None:
    with pytest.raises(ValueError, match="body: must be a JSON object"):
        validate_api_payload(["granted"], NOW)


def _event(kind: EventType, at: datetime, eid: str, *purposes: Purpose) -> ConsentEvent:
    return ConsentEvent(
        event=kind,
        purposes=purposes,
        address="a@example.org",
        occurred_at=at,
        actor="admin",
        method="admin",
        recorded_at=NOW,
        id=eid,
        notice={"version": "1"},
    )


def test_chain_records_and_check() -> None:
    key = b"k"
    rkey = recipient_key("a@example.org", key)
    events = [
        _event(EventType.GRANTED, NOW - timedelta(days=3), "e1", Purpose.FRAUD_DETECTION),
        _event(EventType.REFUSED, NOW - timedelta(days=5), "e2", Purpose.FRAUD_DETECTION),
    ]
    prev, raw = "", []
    for event in events:
        record, prev = chain_record(event, prev)
        assert record_hash(record) == record["hash"] == prev
        raw.append(json.dumps(record).encode())
    state = {**replay(events), "head": prev, "count": "2"}
    assert check_chain(rkey, raw, state, key).ok
    # The later-recorded refusal is older: the grant stays the decisive event.
    derived = derive(rkey, state, NOW, ConsentSettings())
    assert derived.purposes[Purpose.FRAUD_DETECTION].event_id == "e1"
    # Swapping two records breaks the chain at both.
    report = check_chain(rkey, raw[::-1], state, key)
    assert [p.index for p in report.problems if "chain broken" in p.reason] == [0, 1]
    # A record under the wrong recipient's list.
    assert "another recipient" in str(check_chain("0" * 32, raw, state, key).problems[0])
    assert "not a JSON record" in str(check_chain(rkey, [b"{oops"], state, key).problems[0])


def test_fingerprint_ignores_where_the_row_was() -> None:
    one = _event(EventType.COLLECTED, NOW, "e1")
    moved = ConsentEvent(**{**_asdict(one), "source": {"import_line": "9"}, "id": "e2"})
    other = ConsentEvent(**{**_asdict(one), "occurred_at": NOW - timedelta(seconds=1)})
    assert fingerprint(one, ("import_line",)) == fingerprint(moved, ("import_line",))
    assert fingerprint(one) != fingerprint(other)


def _asdict(event: ConsentEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in ConsentEvent.__slots__}


def test_parse_time() -> None:
    assert parse_time("2026-04-14T09:30:00z") == datetime(2026, 4, 14, 9, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="--at: not an ISO-8601"):
        parse_time("", "--at")
