"""The workspace's pure parts: withdrawal effects, charts beside their tables, parameters."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest

from relay.store.audit_counts import Counts
from relay.store.audit_record import DecisionRecord
from relay.web.audit import params
from relay.web.audit.charts import stacked_bars
from relay.web.audit.overview import sections
from relay.web.audit.timeline import ANY_PURPOSE, effects, entries
from tests.support.audit import T0, make_record, tracker


def event(kind: str, minutes: int, purposes: list[str], eid: str) -> dict[str, Any]:
    at = (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"event": kind, "purposes": purposes, "recorded_at": at, "occurred_at": at, "id": eid}


def decision(
    minutes: int, action: str, basis: str, purpose: str = "campaign_performance"
) -> DecisionRecord:
    t = replace(tracker(minutes, action, basis), purpose=purpose)
    record = make_record(minutes, trackers=0)
    at = T0 + timedelta(minutes=minutes)
    return replace(record, trackers=(t,), decided_at=at)


CP = ["campaign_performance"]


def test_a_withdrawal_held_until_the_next_grant() -> None:
    events = [
        event("granted", 0, CP, "g1"),
        event("withdrawn", 10, CP, "w1"),
        event("granted", 30, CP, "g2"),
    ]
    records = [
        decision(5, "gateway", "consent"),  # before the withdrawal: fine
        decision(15, "neutralise", "none"),
        decision(20, "minimise", "exempt", "deliverability"),  # another purpose
        decision(40, "gateway", "consent"),  # after the new grant: fine
    ]
    (effect,) = effects(events, records)
    assert effect.event["id"] == "w1" and effect.purpose == "campaign_performance"
    assert effect.end is not None and effect.end == T0 + timedelta(minutes=30)
    assert (effect.decisions, effect.trackers, effect.held) == (2, 1, True)


def test_tracking_after_a_withdrawal_is_shown_with_its_tracker() -> None:
    events = [event("granted", 0, CP, "g1"), event("withdrawn", 10, CP, "w1")]
    late = decision(12, "gateway", "consent")
    exempt = decision(13, "keep", "exempt")  # an exemption is not the withdrawn consent
    (effect,) = effects(events, [decision(9, "gateway", "consent"), late, exempt])
    assert effect.end is None and not effect.held
    assert [(r.record_id, t.basis) for r, t in effect.still_tracked] == [
        (late.record_id, "consent")
    ]


def test_an_objection_ends_the_legacy_regime_for_every_purpose() -> None:
    events = [event("informed", 0, CP, "i1"), event("objected", 10, [], "o1")]
    records = [
        decision(20, "gateway", "legacy", "fraud_detection"),
        decision(21, "gateway", "consent"),
    ]
    (effect,) = effects(events, records)
    assert effect.purpose == ANY_PURPOSE and effect.trackers == 1
    assert [t.purpose for _r, t in effect.still_tracked] == ["fraud_detection"]


def test_timeline_merges_events_and_decisions_in_time_order() -> None:
    events = [event("granted", 0, CP, "g1"), event("withdrawn", 10, CP, "w1")]
    rows = entries(events, [decision(12, "neutralise", "none"), decision(5, "gateway", "consent")])
    kinds = [
        ("event", e.event["id"]) if e.event else ("email", e.tracked or e.stopped) for e in rows
    ]
    assert kinds == [
        ("event", "g1"),
        ("email", ("campaign_performance",)),
        ("event", "w1"),
        ("email", ("campaign_performance",)),
    ]
    assert rows[1].tracked == ("campaign_performance",) and rows[3].stopped == (
        "campaign_performance",
    )


def test_each_chart_carries_the_numbers_of_its_table() -> None:
    first = 20_000
    by_day = {
        first: {"c:newsletter": 3, "c:marketing": 1, "a:gateway": 2, "a:neutralise": 5},
        first + 2: {"c:newsletter": 1, "a:neutralise": 1},
    }
    values = {"c": ("marketing", "newsletter"), "a": ("gateway", "neutralise")}
    counts = Counts(first, first + 2, by_day, ("",), values)
    category, _purpose, action, _basis = sections(counts)
    # The legend's order (newsletter before marketing), colours in that order.
    assert [c.code for c in category.columns] == ["newsletter", "marketing"]
    assert category.rows[0][0] == date(1970, 1, 1) + timedelta(days=first + 2)  # newest first
    assert [(cells, total) for _d, cells, total in category.rows] == [
        ([1, 0], 1),
        ([0, 0], 0),
        ([3, 1], 4),
    ]
    assert category.total == 5 and action.total == 8
    svg = str(category.chart)
    tooltips = re.findall(r"<title>(\d{4}-\d\d-\d\d) (\w+): (\d+)</title>", svg)
    assert sorted(tooltips) == sorted(
        [
            ("2024-10-04", "newsletter", "3"),
            ("2024-10-04", "marketing", "1"),
            ("2024-10-06", "newsletter", "1"),
        ]
    )
    # No script, no style attribute, nothing from elsewhere (charts Rule 1).
    assert "<script" not in svg and "style=" not in svg and "href" not in svg


def test_an_empty_chart_is_still_a_chart() -> None:
    svg = str(stacked_bars("x", "Nothing", [], {}, "trackers"))
    assert svg.startswith("<svg") and "0 trackers over 0 days" in svg


def test_parameters_are_checked_and_named() -> None:
    today = date(2026, 12, 1)
    span = params.day_range({}, today=today)
    assert (span.first, span.last, span.days) == (date(2026, 11, 2), today, 30)
    assert span.until - span.since == timedelta(days=30)
    with pytest.raises(ValueError, match=r"^from: not a date"):
        params.day_range({"from": "yesterday"}, today=today)
    with pytest.raises(ValueError, match=r"^to: the last day is before"):
        params.day_range({"from": "2026-12-01", "to": "2026-11-01"}, today=today)
    with pytest.raises(ValueError, match="at most 366 days"):
        params.day_range({"from": "2020-01-01", "to": "2026-01-01"}, today=today)
    with pytest.raises(ValueError, match=r"^basis: unknown code 'maybe'"):
        params.filters({"basis": "maybe"})
    with pytest.raises(ValueError, match=r"^domain:"):
        params.filters({"domain": "<script>"})
    f = params.filters({"controller": "-", "domain": "Shop.Example", "purpose": "fraud_detection"})
    assert (f.controller, f.sender_domain, f.purpose) == ("", "shop.example", "fraud_detection")
    assert params.filters({}).controller is None
    assert params.filter_query(f)["controller"] == params.IMPLICIT_CONTROLLER
